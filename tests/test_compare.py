"""``bertology compare``: A − B on the same samples equals A's estimate minus B's, the paired interval is
narrower than an unpaired one on correlated runs, and runs of other samples, tasks or depths are refused or
compared only where they can be."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bertology import BertologyError
from bertology.analysis.bootstrap import Bootstrap, percentile_ci
from bertology.analysis.compare import compare
from bertology.analysis.options import AnalyzeConfig
from bertology.analysis.run import analyze
from bertology.analysis.stats import paired_difference
from bertology.cli import main

from .conftest import make_split

CFG = AnalyzeConfig(resamples=50, permutations=0, probe=False, attribution_samples=0, attention=False)


@pytest.fixture(scope="module")
def runs(tiny_models, minilm_tokenizer, tmp_path_factory):
    """Analysed cls-only runs of one split: two 3-layer models (A, B), B on a subset of the samples (C),
    and a 2-layer model (D)."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    from bertology.extract.extraction import ExtractConfig, extract

    root = tmp_path_factory.mktemp("compare")
    shallow = root / "shallow"
    AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=160, num_labels=2)).save_pretrained(shallow)
    minilm_tokenizer.save_pretrained(shallow)
    split = make_split(60, seed=21)
    subset = replace(split, examples=split.examples[10:])
    cfg = ExtractConfig(window=64, token_sites=(), attention=False)
    out = {}
    for name, model, data in (("a", tiny_models["bert"], split), ("b", tiny_models["electra"], split),
                              ("c", tiny_models["electra"], subset), ("d", shallow, split)):
        store = extract(str(model), data, root / name / "dev.zarr", cfg, progress=False)
        analyze(store, root / name / "analysis", CFG)
        out[name] = root / name / "analysis"
    return out


def test_a_minus_b_equals_as_estimate_minus_bs(runs, tmp_path):
    compare(runs["a"], runs["b"], tmp_path, resamples=200)
    summary = pd.read_parquet(tmp_path / "compare_summary.parquet").set_index("statistic")
    acc = {k: pd.read_parquet(runs[k] / "task_metrics.parquet").set_index("statistic").at["accuracy", "estimate"]
           for k in "ab"}
    assert summary.at["delta_accuracy", "estimate"] == pytest.approx(acc["a"] - acc["b"], abs=1e-12)
    assert summary.at["accuracy_a", "estimate"] == pytest.approx(acc["a"])
    layers = pd.read_parquet(tmp_path / "compare_layers.parquet")
    lp = {k: pd.read_parquet(runs[k] / "layer_predictions.parquet") for k in "ab"}
    assert sorted(layers["layer"].unique()) == [0, 1, 2, 3]
    for r in layers.itertuples():
        mean = {k: lp[k].loc[lp[k]["layer"] == r.layer, f"{r.readout}_correct"].mean() for k in "ab"}
        assert r.estimate == pytest.approx(mean["a"] - mean["b"], abs=1e-12)
        assert r.ci_low <= r.estimate <= r.ci_high and r.p_adj >= r.p
    samples = pd.read_parquet(tmp_path / "compare_samples.parquet")
    assert len(samples) == 60 and samples["flipped"].sum() == summary.at["delta_accuracy", "flipped"]
    assert (samples["margin_delta"] == samples["margin_a"] - samples["margin_b"]).all()
    info = json.loads((tmp_path / "compare.json").read_text())
    assert info["n_samples"] == 60 and info["only_a"] == info["only_b"] == 0


def test_the_paired_interval_is_narrower_than_an_unpaired_one_on_correlated_runs():
    """One weight per sample for both runs: what they share cancels. B is A with 5% of the answers flipped."""
    rng = np.random.default_rng(0)
    n = 400
    a = (rng.random(n) < 0.7).astype(float)
    b = np.where(rng.random(n) < 0.05, 1 - a, a)
    ids = np.arange(n)
    paired = paired_difference(a, b, boot=Bootstrap.draw(n, 2000, 0, keys=ids))
    (_, ma), (_, mb) = Bootstrap.draw(n, 2000, 0, ids).mean(a), Bootstrap.draw(n, 2000, 1, ids).mean(b)
    lo, hi = percentile_ci(ma - mb)
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (hi - lo)
    assert paired["ci_low"] <= a.mean() - b.mean() <= paired["ci_high"]


def test_runs_of_other_samples_are_refused_unless_intersected(runs, tmp_path, capsys):
    with pytest.raises(BertologyError, match="10 only in A, 0 only in B, 50 in both.*--intersect"):
        compare(runs["a"], runs["c"], tmp_path / "x")
    assert main(["compare", str(runs["a"]), str(runs["c"]), "--out", str(tmp_path / "y"), "--intersect",
                 "--resamples", "50"]) == 0
    assert "50 samples in both runs (10 only in A, 0 only in B left out)" in capsys.readouterr().err
    assert len(pd.read_parquet(tmp_path / "y" / "compare_samples.parquet")) == 50
    assert main(["compare", str(runs["a"]), str(tmp_path), "--out", str(tmp_path / "z")]) == 2
    assert "not an analysis folder" in capsys.readouterr().err


def test_runs_of_different_depth_compare_per_sample_only(runs, tmp_path, capsys):
    compare(runs["a"], runs["d"], tmp_path, resamples=50)
    assert "the models have 3 and 2 layers" in capsys.readouterr().err
    assert not (tmp_path / "compare_layers.parquet").exists()
    assert (tmp_path / "compare_summary.parquet").exists() and (tmp_path / "compare_samples.parquet").exists()


def test_a_comparison_is_indexed_so_sql_finds_the_samples_one_run_gets_right_and_the_other_wrong(runs, tmp_path):
    from bertology.analysis.index import build_index, check_index
    from bertology.analysis.sql import query

    root = runs["a"].parent.parent
    out = root / "compare_ab"
    compare(runs["a"], runs["b"], out, resamples=50)
    db = tmp_path / "index.duckdb"
    rep = build_index(root, db)
    assert str(out) in rep.added
    flips = query(db, """
        SELECT s.sample_id, s.text_a, c.correct_a, c.correct_b
        FROM compare_samples c JOIN compares k USING (compare_id)
        JOIN samples s ON s.run_id = k.a_run_id AND s.sample_id = c.sample_id
        WHERE c.correct_a AND NOT c.correct_b ORDER BY s.sample_id""")
    want = pd.read_parquet(out / "compare_samples.parquet")
    assert flips["sample_id"].tolist() == want.loc[want["correct_a"] & ~want["correct_b"], "sample_id"].tolist()
    runs_of = query(db, "SELECT k.a_run_id IN (SELECT run_id FROM runs) AS a, "
                        "k.b_run_id IN (SELECT run_id FROM runs) AS b FROM compares k")
    assert runs_of.to_dict("records") == [{"a": True, "b": True}]
    assert not check_index(root, db).changed
    compare(runs["a"], runs["d"], out, resamples=50)          # the folder now compares other runs
    assert check_index(root, db).updated == [str(out)]
    build_index(root, db)
    assert not (out / "compare_layers.parquet").exists()                    # the earlier one's is removed
    assert query(db, "SELECT count(*) AS n FROM compare_layers")["n"][0] == 0
    assert int(query(db, "SELECT count(*) AS n FROM compares")["n"][0]) == 1
