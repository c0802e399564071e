"""The intervention tables against independent computations and synthetic sweeps whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats as sps

from bertology.analysis.bootstrap import Bootstrap
from bertology.analysis.interventions import (apriori_validation, intervention_effects, layer_skip, paired_change,
                                              prediction_rows)
from bertology.analysis.stats import mcnemar_midp
from bertology import BertologyError
from bertology.extract.interventions import Intervention
from bertology.extract.sweep import layer_flops, plan
from bertology.store.sweep import open_sweep, write_sweep


def test_mcnemar_mid_p_is_the_exact_p_less_the_observed_point_probability():
    """Mid-p (Fagerland et al. 2013) = exact McNemar p (statsmodels) − P(observed count), two-sided."""
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random(80) < 0.7, rng.random(80) < 0.6
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        n01, n10 = table[0][1], table[1][0]
        point = sps.binom.pmf(min(n01, n10), n01 + n10, 0.5)
        exact = mcnemar(table, exact=True).pvalue
        expected = exact - point if n01 != n10 else 1.0
        assert mcnemar_midp(a, b) == pytest.approx(min(1.0, expected))
    assert mcnemar_midp(a, a) == 1.0


def test_paired_change_is_the_difference_of_accuracies_with_a_covering_interval():
    rng = np.random.default_rng(1)
    base, new = rng.random(400) < 0.8, rng.random(400) < 0.7
    r = paired_change(base, new, Bootstrap.draw(400, 1000, seed=0))
    assert r["estimate"] == pytest.approx(new.mean() - base.mean())
    assert r["accuracy"] == pytest.approx(new.mean())
    assert r["ci_low"] < r["estimate"] < r["ci_high"] and r["flipped"] == int(np.sum(base != new))


def test_sweep_plan_and_layer_flops():
    specs = plan(3, 4)
    assert len(specs) == 1 + 4 * 3 + 3 * 4 and specs[0] == ()
    assert len(plan(3, 4, ("skip",))) == 4
    assert plan(3, 4, ("skip", "ffn"), skip_layers=[2]) == [(), (Intervention(2, "skip"),)] + [
        (Intervention(layer, "ffn"),) for layer in (1, 2, 3)]                # only the chosen layer is skipped
    with pytest.raises(BertologyError, match="outside"):
        plan(3, 4, ("skip",), skip_layers=[4])
    # one token, H = 2, F = 4: 2·(4·1·4 + 2·1·2 + 2·1·2·4) = 72
    assert layer_flops(np.array([1]), 2, 4)[0] == 72.0


def synthetic_sweep(n=240, n_train=300, hidden=6, layers=3, seed=0) -> xr.Dataset:
    """A sweep with a known answer: skipping layer 2 costs nothing, layer 1 costs 20 points, layer 3 all of
    its accuracy; every skipped model's [CLS] stays linearly separable, so compensation recovers it."""
    rng = np.random.default_rng(seed)
    y, yt = rng.integers(0, 2, n), rng.integers(0, 2, n_train)

    def feats(labels):
        x = rng.normal(size=(len(labels), hidden))
        x[:, 0] += 4.0 * (2 * labels - 1)
        return x

    names = ["none", "skip:1", "skip:2", "skip:3", "ffn:1", "ffn:2", "ffn:3"]
    pred = np.tile(y, (len(names), 1))
    pred[1, : n // 5] = 1 - y[: n // 5]                    # skip:1 wrong on the first 20%
    pred[3] = 1 - y                                      # skip:3 always wrong
    logits = np.stack([np.eye(2)[p] for p in pred]).astype(np.float32)
    return xr.Dataset(
        {"logits": (("intervention", "sample", "class"), logits), "pred": (("intervention", "sample"), pred),
         "label": (("sample",), y),
         "cls_final": (("skip", "sample", "hidden"), np.stack([feats(y) for _ in range(layers + 1)])),
         "train_cls_final": (("skip", "train_sample", "hidden"), np.stack([feats(yt) for _ in range(layers + 1)])),
         "train_label": (("train_sample",), yt),
         "wall_seconds": (("skip",), np.array([4.0, 3.0, 3.0, 3.0])),
         "flops": (("skip",), np.array([30.0, 20.0, 20.0, 20.0]))},
        coords={"intervention": np.array(names, dtype=object),
                "kind": ("intervention", np.array([n.split(":")[0] for n in names], dtype=object)),
                "layer": ("intervention", np.array([0, 1, 2, 3, 1, 2, 3])),
                "head": ("intervention", np.zeros(7, dtype=int)),
                "sample": np.arange(n) + 1000, "skip": np.arange(layers + 1)},
        attrs={"task": "sst2", "model_sha256": "x", "n_layers": layers, "n_heads": 1})


def test_effects_layer_skip_and_apriori_on_a_synthetic_sweep(tmp_path):
    sw = open_sweep(write_sweep(synthetic_sweep(), tmp_path / "s.sweep"))   # through the store round trip
    boot = Bootstrap.draw(sw.sizes["sample"], 500, seed=0)
    eff = intervention_effects(sw, boot).set_index("intervention")
    assert eff.at["skip:1", "estimate"] == pytest.approx(-0.2)
    assert eff.at["skip:2", "estimate"] == 0 and eff.at["skip:2", "p"] == 1.0
    assert eff.at["skip:3", "estimate"] == -1.0 and eff.at["skip:3", "p_adj"] < 1e-10
    assert set(eff["kind"]) == {"skip", "ffn"}
    cand = pd.DataFrame({"layer": [1, 2, 3], "candidate": [False, True, False]})
    ls = layer_skip(sw, boot, cand, seed=0)
    assert ls["intervention"].tolist() == ["none", "skip:1", "skip:2", "skip:3"]
    assert ls["layer"].isna().tolist() == [True, False, False, False]   # the control is about no layer
    ls = ls.set_index("layer")
    assert ls.loc[[1, 2, 3], "skipped_accuracy"].tolist() == pytest.approx([0.8, 1.0, 0.0])
    assert (ls["compensated_accuracy"] > 0.97).all()           # separable features: compensation recovers
    assert ls.loc[1, "flops_saved"] == pytest.approx(1 / 3) and ls.loc[1, "wall_saved"] == pytest.approx(0.25)
    assert ls.loc[2, "apriori_candidate"] and not ls.loc[1, "apriori_candidate"]
    assert set(ls["hidden_units"]) <= {4, 8, 16}
    sep = pd.DataFrame({"layer": [1, 2, 3], "statistic": "delta_fisher_trace", "pooling": "cls",
                        "estimate": [0.3, 0.0, 0.9]})
    av = apriori_validation(ls.reset_index(), sep).set_index("accuracy")
    assert av.at["original_head", "best_skip"] == 2 and av.at["original_head", "top1_hit"]
    rho = sps.spearmanr([0.3, 0.0, 0.9], [-0.2, 0.0, -1.0])[0]
    assert av.at["original_head", "estimate"] == pytest.approx(rho)
    rows = prediction_rows(sw)
    assert len(rows) == 7 * sw.sizes["sample"]
    assert rows[rows["intervention"] == "skip:3"]["flipped"].all()
    assert not rows[rows["intervention"] == "skip:2"]["flipped"].any()


def test_a_sweep_of_only_the_candidates_reports_them_and_leaves_the_top1_hit_undefined(tmp_path):
    """Skipping only layer 2 (the candidate): the skip axis is (0, 2), the table has those rows, and with no
    other layer skipped there is no best layer to compare the candidate with."""
    full = synthetic_sweep()
    keep = [0, 2]
    sw = full.sel(skip=keep).sel(intervention=["none", "skip:2", "ffn:1", "ffn:2", "ffn:3"])
    sw = open_sweep(write_sweep(sw, tmp_path / "c.sweep"))
    boot = Bootstrap.draw(sw.sizes["sample"], 200, seed=0)
    cand = pd.DataFrame({"layer": [1, 2, 3], "candidate": [False, True, False]})
    ls = layer_skip(sw, boot, cand, seed=0).set_index("intervention")
    assert list(ls.index) == ["none", "skip:2"]
    # the same rows as in the full sweep, which used each skip's own features and timings
    ref = layer_skip(full, boot, cand, seed=0).set_index("intervention").loc[["none", "skip:2"]]
    pd.testing.assert_frame_equal(ls, ref)
    sep = pd.DataFrame({"layer": [1, 2, 3], "statistic": "delta_fisher_trace", "pooling": "cls",
                        "estimate": [0.3, 0.0, 0.9]})
    av = apriori_validation(ls.reset_index(), sep, n_layers=3).set_index("accuracy")
    assert av.at["original_head", "best_skip"] == 2 and av.at["original_head", "layers_swept"] == "2"
    assert pd.isna(av.at["original_head", "top1_hit"]) and np.isnan(av.at["original_head", "estimate"])


def test_without_skip_candidates_the_sweep_is_analysed_and_the_apriori_check_is_skipped_with_a_line(tmp_path):
    """When separability could not pick candidates (too few samples of a class), the interventions are still
    reported, and no a-priori verdict is made up from an empty candidate set."""
    from types import SimpleNamespace

    from bertology.analysis import interventions
    from bertology.analysis.options import AnalyzeConfig
    from bertology.analysis.requirements import collect_skipped

    path = write_sweep(synthetic_sweep(n=60, n_train=100), tmp_path / "s.sweep")
    sw = open_sweep(path)
    ds = xr.Dataset(coords={"sample": sw["sample"].values}, attrs={"model_sha256": sw.attrs["model_sha256"]})
    ctx = SimpleNamespace(ds=ds, cfg=AnalyzeConfig(resamples=50), boot=Bootstrap.draw(60, 50, seed=0), sweep=path,
                          store="dev.zarr", tables={})
    with collect_skipped() as lines:
        tables = interventions.analyze(ctx)
    assert set(tables) == {"interventions", "layer_skip", "intervention_predictions"}
    assert not tables["layer_skip"]["apriori_candidate"].any()
    assert any("apriori_validation" in l and "skip candidates" in l for l in lines)
