"""The notebook API (`bertology.analysis.stats`) against closed forms, and against `bertology analyze`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bertology.analysis import stats
from bertology.reports.render import ci as render_ci
from bertology.store import open_store


def two_classes(n, d, delta, rng, offset=0.0, pi1=0.5):
    y = (np.arange(n) < pi1 * n).astype(int)
    x = rng.normal(size=(n, d)) + offset
    x[:, 0] += delta * y
    return x, y


def test_separability_recovers_the_closed_form_and_states_its_columns():
    """Two isotropic classes δ apart on one axis, d dims, σ = 1: tr Σ_B / tr Σ_W = π₀π₁δ² / d,
    ||μ₁ − μ₀||² / (σ₀² + σ₁²) = δ² / 2d, classification energy π₀π₁δ²."""
    rng = np.random.default_rng(0)
    n, d, delta = 4000, 20, 1.0
    x, y = two_classes(n, d, delta, rng)
    df = stats.separability(x, y).set_index("statistic")
    assert list(df.reset_index().columns[:6]) == ["statistic", "estimate", "estimate_plugin", "ci_low", "ci_high",
                                                  "ci_method"]
    truth = {"fisher_trace": 0.25 * delta ** 2 / d, "centroid_ratio": delta ** 2 / (2 * d),
             "classification": 0.25 * delta ** 2}
    for name, value in truth.items():
        row = df.loc[name]
        assert row.ci_low <= value <= row.ci_high, (name, row.to_dict())
        assert row.ci_method == "jackknife" and row.n == n
    # plug-in minus debiased between-class energy is the noise of the class means, Σ_c (1 − π_c) s_c² / n
    s2 = [np.sum((x[y == c] - x[y == c].mean(0)) ** 2) / (np.sum(y == c) - 1) for c in (0, 1)]
    noise = sum(0.5 * v / n for v in s2)
    assert df.at["classification", "estimate_plugin"] - df.at["classification", "estimate"] == pytest.approx(noise)


def test_an_xarray_input_and_string_labels_give_the_same_rows():
    rng = np.random.default_rng(1)
    x, y = two_classes(300, 8, 1.5, rng)
    a = stats.separability(x, y)
    b = stats.separability(xr.DataArray(x, dims=("sample", "hidden")), np.where(y == 1, "pos", "neg"))
    pd.testing.assert_frame_equal(a, b)


def test_no_class_signal_reads_zero_not_the_noise_floor():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 400))
    y = np.arange(200) % 2
    df = stats.separability(x, y, resamples=200, seed=1).set_index("statistic")
    row = df.loc["fisher_trace"]
    assert row.estimate_plugin == pytest.approx(1 / 198, rel=0.1)                # the (k − 1)/(n − k) floor
    assert row.ci_low == 0 and row.estimate < row.ci_high < 1 / 198
    chance = df.loc["chance_fisher_trace"]                                       # 200 relabellings
    assert chance.ci_method == "permutation" and 0 <= chance.ci_low <= chance.estimate <= chance.ci_high < 1 / 198
    assert 0 < chance.p <= 1


def test_ffn_energy_adds_up_and_its_ratio_is_unbounded_where_the_classes_do_not_differ():
    rng = np.random.default_rng(3)
    x, y = two_classes(500, 10, 3.0, rng, offset=2.0)
    df = stats.ffn_energy(x, y).set_index("statistic")
    e = df["estimate"]
    assert e["structural"] + e["classification"] + e["within"] == pytest.approx(e["total"], rel=1e-9)
    assert e["total"] == pytest.approx(np.mean(np.sum(x ** 2, axis=1)))
    assert e["structural_share"] == pytest.approx(e["structural"] / e["total"])
    assert bool(df.at["structural_over_classification", "bounded"])
    r = df.loc["structural_over_classification"]
    assert r.ci_low <= e["structural"] / e["classification"] <= r.ci_high
    # no class signal: the classification energy cannot be told from 0, and the ratio has only a lower bound
    flat = rng.normal(size=(500, 10)) + 2.0
    r = stats.ffn_energy(flat, y).set_index("statistic").loc["structural_over_classification"]
    assert r.ci_high == np.inf and not r.bounded and r.ci_low > 0
    assert render_ci(r.estimate, r.ci_low, r.ci_high).startswith("≥ ")


def test_paired_difference_is_the_difference_of_accuracies_with_the_mcnemar_mid_p():
    from scipy import stats as sps

    rng = np.random.default_rng(4)
    a = (rng.random(300) < 0.8).astype(float)
    b = np.where(rng.random(300) < 0.1, 1 - a, a)
    row = stats.paired_difference(a, b, seed=0).iloc[0]
    assert row.estimate == pytest.approx(a.mean() - b.mean())
    assert row.ci_low <= row.estimate <= row.ci_high and row.ci_method == "percentile"
    n01, n10 = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    k, m = min(n01, n10), n01 + n10
    assert row.p == pytest.approx(min(1, 2 * sps.binom.cdf(k, m, 0.5) - sps.binom.pmf(k, m, 0.5)))
    assert row.discordant == m


def test_bad_inputs_say_what_is_wrong():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="single class"):
        stats.separability(x, np.zeros(5))
    with pytest.raises(ValueError, match="at least 3 samples"):
        stats.separability(np.random.default_rng(0).normal(size=(5, 3)), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="one per sample"):
        stats.separability(x, [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        stats.separability(np.full((6, 2), np.nan), [0, 1] * 3)
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_difference([1, 0], [1, 0, 1])


def test_the_api_and_bertology_analyze_agree(tiny_results):
    """The separability rows of an analysed store equal the API run on the store's own [CLS] vectors."""
    ds = open_store(tiny_results / "sst2" / "dev.zarr")
    sep = pd.read_parquet(tiny_results / "sst2" / "analysis" / "separability.parquet")
    y = ds["label"].values
    for layer in (1, 3):
        x = ds["cls"].sel(layer=layer, site="ln2").values.astype(np.float64)
        api = stats.separability(x, y).set_index("statistic")
        rows = sep[(sep.layer == layer) & (sep.site == "ln2") & (sep.pooling == "cls")].set_index("statistic")
        for name in ("fisher_trace", "centroid_ratio", "classification"):
            for col in ("estimate", "estimate_plugin", "ci_low", "ci_high"):
                assert api.at[name, col] == pytest.approx(rows.at[name, col], rel=1e-9, abs=1e-15), (layer, name, col)


def test_the_readme_example_runs(capsys):
    """The README's notebook example, as written."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:] if "from bertology.analysis import stats" in b]
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "fisher_trace" in out and "structural_over_classification" in out and "delta_accuracy" in out
