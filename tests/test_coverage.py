"""Intervals are tested by coverage, never by construction: a fast version of bench/coverage.py.

Each regime draws 200 data sets from a population with known values and runs the same code
``bertology analyze`` runs. With 200 data sets a 95% interval's empirical coverage has a standard error of
1.5 points, so the test accepts 90–99% (beyond 3 standard errors is a real miss); the bench runs 500 per
regime over the whole grid against the 93–97% target. Every interval must also stay inside its statistic's
range and contain its own estimate, and null p-values must be uniform (Kolmogorov–Smirnov).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from bertology.analysis.intervals import bounded_interval, growing_variance_interval, unified_interval, wilson_interval

REPO = Path(__file__).resolve().parents[1]
DATASETS = 200
LOW, HIGH = 0.90, 0.99


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("coverage_bench", REPO / "bench" / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module              # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _check(summary: dict, names=None):
    for name, s in summary.items():
        if names is not None and name not in names:
            continue
        if "coverage" in s:
            assert LOW <= s["coverage"] <= HIGH, (name, s)
            assert s["out_of_range"] == 0, (name, s)
            assert s["estimate_outside"] == 0, (name, s)
        if "null_p_ks" in s:
            assert s["null_p_ks"] > 0.001, (name, s)


@pytest.mark.parametrize("regime", [
    dict(k=2, balance="balanced", ratio=1.0, signal="none", spectrum="isotropic"),
    dict(k=2, balance="unbalanced", ratio=4.0, signal="weak", spectrum="isotropic", n=100),
    dict(k=3, balance="unbalanced", ratio=0.2, signal="strong", spectrum="decaying"),
    dict(k=2, balance="balanced", ratio=1.0, signal="weak", spectrum="decaying"),
], ids=lambda r: f"k={r['k']} {r['balance']} d/n={r['ratio']} {r['signal']} {r['spectrum']}")
def test_energy_intervals_cover(bench, regime):
    """Separability and FFN energies, their ratios and their layer differences, debiased, with intervals."""
    _check(bench.run_energy(bench.EnergyRegime(**regime), DATASETS, seed=11))


def test_token_energy_intervals_cover(bench):
    """The same over sentences of correlated tokens (sums per sentence, cluster-robust noise)."""
    regime = bench.EnergyRegime(2, "balanced", 1.0, "weak", "isotropic", n=100, tokens=True)
    _check(bench.run_energy(regime, 120, seed=12))


@pytest.mark.parametrize("kind,n,p", [("share, one 0/1 per sample", 100, 0.02), ("share of tokens over sentences", 100, 0.3),
                                      ("mean of lognormal values", 100, None), ("token mean over sentences", 30, None)])
def test_means_and_shares_cover(bench, kind, n, p):
    summary = bench.run_mean(kind, n, p, DATASETS, resamples=400, seed=13)
    _check(summary, {"wilson"} if kind.startswith("share") else {"percentile"})


def test_paired_differences_cover_and_mid_p_is_uniform_under_the_null(bench):
    _check(bench.run_paired(300, 0.15, 0.0, DATASETS, seed=14))
    _check(bench.run_paired(100, 0.15, 0.5, DATASETS, seed=15))


def test_unified_interval_is_exact_at_and_near_the_edge():
    rng = np.random.default_rng(0)
    for mu in (0.0, 0.3, 1.0, 2.5, 8.0):
        x = mu + rng.standard_normal(40_000)
        lo, hi = unified_interval(x)
        assert np.mean((lo <= mu) & (mu <= hi)) == pytest.approx(0.95, abs=0.005)
        assert np.all(lo >= 0) and np.all((lo <= np.maximum(x, 0)) & (np.maximum(x, 0) <= hi))
    # Feldman & Cousins (1998), Table X (95%): x = 0 → [0, 1.96]; x = 2 → [0.35, 3.96]; x = −1 → [0, 1.10]
    lo, hi = unified_interval(np.array([0.0, 2.0, -1.0]))
    np.testing.assert_allclose(lo, [0, 0.35, 0], atol=0.01)
    np.testing.assert_allclose(hi, [1.96, 3.96, 1.10], atol=0.01)


def test_growing_variance_interval_is_exact_for_its_model():
    """θ̂ ~ N(θ, a² + κθ): the Neyman construction covers 95% at every θ ≥ 0, at the edge too."""
    rng = np.random.default_rng(1)
    for kappa in (0.0, 2.0):
        for theta in (0.0, 1.0, 10.0):
            x = theta + np.sqrt(1 + kappa * theta) * rng.standard_normal(20_000)
            se = np.sqrt(1 + kappa * np.maximum(x, 0))
            est, lo, hi = growing_variance_interval(x, se, np.ones_like(x), slope_floor=kappa)
            assert np.mean((lo <= theta) & (theta <= hi)) == pytest.approx(0.95, abs=0.007)
            assert np.all((lo <= est) & (est <= hi)) and np.all(lo >= 0)


def test_bounded_interval_stays_in_the_range_and_wilson_covers_rare_shares():
    est, lo, hi = bounded_interval(np.array([-0.2, 0.5, 0.99, 1.1]), np.full(4, 0.1), 0.0, 1.0)
    assert np.all((0 <= lo) & (lo <= est) & (est <= hi) & (hi <= 1))
    # a share of 0.02 on 50 samples (one event expected): a bootstrap percentile interval is [0, 0] whenever
    # none occurred (36% of samples), Wilson's interval is not
    rng = np.random.default_rng(2)
    k = rng.binomial(50, 0.02, size=20_000)
    lo, hi = wilson_interval(k / 50, np.full(k.shape, 50.0))
    assert np.mean((lo <= 0.02) & (0.02 <= hi)) > 0.90 > 1 - np.mean(k == 0)
