"""A regression task's statistics (analysis/regression.py) against independent computations, and their
intervals and tests by simulation: the paired Δr interval covers, Williams' test holds its level, Spearman's
Fisher-z interval covers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bertology.analysis.bootstrap import Bootstrap
from bertology.analysis.regression import (bin_codes, bin_names, paired_pearson_change, pearson, r2, score_rows,
                                           spearman_interval, weighted_pearson, williams_p)


def test_weighted_pearson_and_r2_equal_the_repeated_samples():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    w = rng.poisson(1.0, size=(5, 40)).astype(float)
    for b in range(5):
        idx = np.repeat(np.arange(40), w[b].astype(int))
        assert weighted_pearson(w, x, y)[b] == pytest.approx(sps.pearsonr(x[idx], y[idx])[0], abs=1e-10)
        assert r2(x, y, w)[b] == pytest.approx(1 - np.sum((y[idx] - x[idx]) ** 2) / np.sum((y[idx] - y[idx].mean()) ** 2),
                                               abs=1e-10)


def test_score_rows_equal_scipy():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 5, 80)
    pred = y + rng.normal(0, 1, 80)
    rows = {r["statistic"]: r for r in score_rows(y, pred, Bootstrap.draw(80, 300, seed=0))}
    assert rows["pearson"]["estimate"] == pytest.approx(sps.pearsonr(pred, y)[0])
    assert rows["spearman"]["estimate"] == pytest.approx(sps.spearmanr(pred, y)[0])
    assert rows["mse"]["estimate"] == pytest.approx(np.mean((pred - y) ** 2))
    for r in rows.values():
        assert r["ci_low"] < r["estimate"] < r["ci_high"]


def _pair_study(rng, n, s1, s2):
    """Gold scores and two predictions of them with noise s1, s2 (population r_i = 1/√(1 + s_i²))."""
    y = rng.normal(size=n)
    return y, y + rng.normal(0, s1, n), y + rng.normal(0, s2, n)


def test_paired_delta_r_interval_covers_the_population_difference():
    """300 studies of n = 150: the paired bootstrap's 95% interval for Δr covers the population Δρ."""
    rng = np.random.default_rng(2)
    s1, s2 = 0.8, 1.2
    truth = 1 / np.sqrt(1 + s1 ** 2) - 1 / np.sqrt(1 + s2 ** 2)
    hits = 0
    for k in range(300):
        y, a, b = _pair_study(rng, 150, s1, s2)
        d = paired_pearson_change(b, a, y, Bootstrap.draw(150, 300, seed=k))
        hits += d["ci_low"] <= truth <= d["ci_high"]
    assert 0.91 <= hits / 300 <= 0.99


def test_williams_test_holds_its_level_under_the_null_and_detects_a_difference():
    rng = np.random.default_rng(3)
    null = []
    for _ in range(2000):
        y, a, b = _pair_study(rng, 80, 1.0, 1.0)
        null.append(williams_p(pearson(a, y), pearson(b, y), pearson(a, b), 80))
    assert 0.035 <= np.mean(np.array(null) < 0.05) <= 0.065
    y, a, b = _pair_study(rng, 300, 0.5, 1.5)
    assert williams_p(pearson(a, y), pearson(b, y), pearson(a, b), 300) < 1e-6
    assert williams_p(0.5, 0.5, 0.3, 50) == 1.0


def test_spearman_interval_covers_the_population_rank_correlation():
    rng = np.random.default_rng(4)
    rho = 0.6
    truth = 6 / np.pi * np.arcsin(rho / 2)                  # Spearman's ρ of a bivariate normal
    cov = [[1, rho], [rho, 1]]
    hits = 0
    for _ in range(1000):
        x, y = rng.multivariate_normal([0, 0], cov, size=60).T
        lo, hi = spearman_interval(sps.spearmanr(x, y)[0], 60)
        hits += lo <= truth <= hi
    assert 0.92 <= hits / 1000 <= 0.98


def test_score_bins():
    edges = (0, 1, 2, 3, 4, 5)
    assert bin_codes([0, 0.99, 1, 4.2, 5, 5.5, -1], edges).tolist() == [0, 0, 1, 4, 4, 4, 0]
    assert bin_names(edges) == ["[0,1)", "[1,2)", "[2,3)", "[3,4)", "[4,5]"]
