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
from bertology.store import open_store

from .conftest import make_split

CFG = AnalyzeConfig(resamples=50, permutations=0, probe=False, attribution_samples=0, attention=False)


@pytest.fixture(scope="module")
def runs(tiny_models, minilm_tokenizer, tmp_path_factory):
    """Analysed cls-only runs of one split: two 3-layer models (A, B), B on a subset of the samples (C),
    and a 2-layer model (D); and the two 3-layer models with attention maps (E, F)."""
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
    cls_only = ExtractConfig(window=64, token_sites=(), attention=False)
    maps = ExtractConfig(window=64, token_sites=(), attention=True)
    out = {}
    for name, model, data, cfg in (("a", tiny_models["bert"], split, cls_only),
                                   ("b", tiny_models["electra"], split, cls_only),
                                   ("c", tiny_models["electra"], subset, cls_only), ("d", shallow, split, cls_only),
                                   ("e", tiny_models["bert"], split, maps), ("f", tiny_models["electra"], split, maps)):
        store = extract(str(model), data, root / name / "dev.zarr", cfg, progress=False)
        analyze(store, root / name / "analysis", replace(CFG, attention=cfg.attention))
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
    import re

    from .conftest import REPO

    readme = [q for q in re.findall(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
              if "compare_samples" in q]
    assert readme and all(len(query(db, q)) == len(flips) for q in readme)     # the README's query runs
    runs_of = query(db, "SELECT k.a_run_id IN (SELECT run_id FROM runs) AS a, "
                        "k.b_run_id IN (SELECT run_id FROM runs) AS b FROM compares k")
    assert runs_of.to_dict("records") == [{"a": True, "b": True}]
    assert not check_index(root, db).changed
    compare(runs["a"], runs["d"], out, resamples=50)          # the folder now compares other runs
    assert check_index(root, db).updated == [str(out)]
    build_index(root, db)
    assert not (out / "compare_layers.parquet").exists()                    # the earlier one's is removed
    assert query(db, "SELECT count(*) AS n FROM compare_layers")["n"][0] == 0
    assert int(query(db, f"SELECT count(*) AS n FROM compares WHERE compare_path = '{out}'")["n"][0]) == 1


def test_per_head_differences_are_each_runs_feature_mean_minus_the_others(runs, tmp_path):
    compare(runs["e"], runs["f"], tmp_path, resamples=200)
    heads = pd.read_parquet(tmp_path / "compare_heads.parquet")
    heads = heads[~heads["feature"].str.startswith("type_")]          # the pattern types: their own test
    pat = {k: pd.read_parquet(runs[k] / "attention_patterns.parquet") for k in "ef"}
    assert set(heads["feature"]) == {"vertical", "diagonal", "self", "attention_to_cls", "attention_to_sep",
                                     "attention_to_punct", "attention_to_other"}    # no block: one text each
    assert len(heads) == 3 * 4 * 7
    for r in heads.sample(20, random_state=0).itertuples():
        mean = {k: pat[k].loc[(pat[k]["statistic"] == f"feature_{r.feature}") & (pat[k]["layer"] == r.layer)
                              & (pat[k]["head"] == r.head), "estimate"].iloc[0] for k in "ef"}
        assert r.mean_a == pytest.approx(mean["e"], rel=1e-9) and r.mean_b == pytest.approx(mean["f"], rel=1e-9)
        assert r.estimate == pytest.approx(mean["e"] - mean["f"], rel=1e-9, abs=1e-12)
        assert r.ci_low <= r.estimate <= r.ci_high and r.p_adj >= r.p
    same = tmp_path / "same"
    compare(runs["e"], runs["e"], same, resamples=50)
    assert (pd.read_parquet(same / "compare_heads.parquet")["estimate"] == 0).all()


def test_per_intervention_differences_are_each_runs_accuracy_under_it_minus_the_others():
    from types import SimpleNamespace

    from bertology.analysis.compare import intervention_table

    rng = np.random.default_rng(3)
    ids = np.arange(100, 160)

    def run(p_right):
        rows = [dict(intervention=name, kind=name.split(":")[0], layer=None if name == "none" else 2,
                     head=5 if name.startswith("head:") else None, sample_id=i, correct=bool(rng.random() < p),
                     sample_index=k) for name, p in p_right.items() for k, i in enumerate(ids)]
        frame = pd.DataFrame(rows).sample(frac=1, random_state=1)          # any row order
        return SimpleNamespace(table=lambda name: frame if name == "intervention_predictions" else None,
                               frame=frame)

    a = run({"none": 0.8, "skip:2": 0.6, "head:2.5": 0.7})
    b = run({"none": 0.7, "skip:2": 0.7, "ffn:2": 0.5})                  # ffn:2 only in B, head:2.5 only in A
    df = intervention_table(a, b, ids[::-1], Bootstrap.draw(60, 200, 0, ids[::-1]), "holm").set_index("intervention")
    assert set(df.index) == {"none", "skip:2"}                           # in the order of A's sweep
    for name in df.index:
        acc = {k: r.frame.loc[r.frame["intervention"] == name, "correct"].mean() for k, r in (("a", a), ("b", b))}
        assert df.at[name, "estimate"] == pytest.approx(acc["a"] - acc["b"], abs=1e-12)
    assert df.at["skip:2", "layer"] == 2 and pd.isna(df.at["none", "layer"])


def test_the_explorer_compares_two_indexed_runs_as_bertology_compare_does(runs, tmp_path):
    from bertology.analysis.index import build_index, run_id
    from bertology.analysis.index.build import analysed_store
    from bertology.reports.serve.common import NotFound
    from bertology.reports.serve.explorer import Explorer
    from bertology.store.location import locate as locate_

    root = runs["e"].parent.parent
    db = tmp_path / "index.duckdb"
    build_index(root, db)
    ex = Explorer(root, db)
    rid = {k: run_id(analysed_store(locate_(runs[k]), json.loads((runs[k] / "analysis.json").read_text())))
           for k in "aef"}
    got = ex.comparison(rid["e"], rid["f"])
    compare(runs["e"], runs["f"], tmp_path / "cmp", resamples=500)
    summary = pd.read_parquet(tmp_path / "cmp" / "compare_summary.parquet").set_index("statistic")
    assert got["n_samples"] == 60 and got["accuracy"]["delta"]["estimate"] == pytest.approx(
        summary.at["delta_accuracy", "estimate"], abs=1e-12)
    assert got["accuracy"]["delta"]["p"] == pytest.approx(summary.at["delta_accuracy", "p"])
    assert got["flips"]["total"] == summary.at["delta_accuracy", "flipped"] == len(got["flips"]["samples"])
    layers = pd.read_parquet(tmp_path / "cmp" / "compare_layers.parquet")
    for row in got["layers"]:
        want = layers[(layers["layer"] == row["layer"]) & (layers["readout"] == "probe")].iloc[0]
        assert row["probe"]["delta"]["estimate"] == pytest.approx(want["estimate"], abs=1e-12)
    heads = got["heads"]
    assert 0 < len(heads) <= 10 and all(h["delta"] == pytest.approx(h["estimate_a"] - h["estimate_b"]) for h in heads)
    assert abs(heads[0]["delta"]) >= abs(heads[-1]["delta"])
    with pytest.raises(NotFound, match="no run '0000000000000000'"):
        ex.comparison(rid["e"], "0" * 16)
    cls_only = ex.comparison(rid["a"], rid["e"])        # the same model, with and without attention maps
    assert cls_only["accuracy"]["delta"]["estimate"] == 0 and isinstance(cls_only["heads"], str)


def test_a_head_feature_missing_for_some_samples_leaves_them_out_and_never_gives_p_0(monkeypatch):
    from types import SimpleNamespace

    import xarray as xr

    from bertology.analysis import attention_heads
    from bertology.analysis.compare import head_table

    rng = np.random.default_rng(5)
    n = 40
    base = rng.random((n, 1, 1, len(attention_heads.FEATURES)))
    other = base + rng.normal(0, 0.01, base.shape)
    block = attention_heads.FEATURES.index("block")
    base[:3, ..., block] = np.nan                          # three samples of one text: no block feature
    values = {"a": base, "b": other}
    monkeypatch.setattr(attention_heads, "head_features", lambda ds: SimpleNamespace(values=values[ds.attrs["k"]]))
    run = lambda k: SimpleNamespace(ds=xr.Dataset({"attention": (("layer", "head"), [[0.0]])},  # noqa: E731
                                                   coords={"layer": [1], "head": [1]}, attrs={"k": k}))
    a, b = run("a"), run("b")
    pos = np.arange(n)
    df = head_table(a, b, pos, pos, Bootstrap.draw(n, 200, 0), "holm").set_index("feature")
    assert df.at["block", "n"] == n - 3 and np.isfinite(df.at["block", "estimate"])
    assert df.at["block", "estimate"] == pytest.approx(np.nanmean(base[..., block] - other[..., block]))
    assert (df["p"] >= 2 / 201).all() and df["ci_low"].notna().all()


def test_a_moved_results_folder_keeps_its_comparisons_linked_and_a_bad_compare_json_is_skipped(runs, tmp_path):
    import shutil

    from bertology.analysis.index import build_index
    from bertology.analysis.sql import query

    root = runs["a"].parent.parent
    compare(runs["a"], runs["b"], root / "compare_moved", resamples=50)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, ignore=shutil.ignore_patterns("*.duckdb*"))
    (moved / "broken").mkdir()
    (moved / "broken" / "compare.json").write_text('{"format": 99}')
    rep = build_index(moved, tmp_path / "i.duckdb")
    assert any("broken" in s and "unreadable compare.json" in s for s in rep.skipped)
    linked = query(tmp_path / "i.duckdb", "SELECT count(*) AS n FROM compares k JOIN runs a ON a.run_id = k.a_run_id "
                                          "JOIN runs b ON b.run_id = k.b_run_id WHERE a.store_path LIKE ?".replace(
                                              "?", f"'{moved}%'"))
    assert int(linked["n"][0]) >= 1


def test_the_explorer_shows_a_comparison_page_linked_to_both_runs_samples(runs, tmp_path):
    import urllib.request

    from bertology.analysis.index import build_index, run_id
    from bertology.analysis.index.build import analysed_store
    from bertology.store.location import locate

    from .test_serve import running_server

    root = runs["e"].parent.parent
    build_index(root, root / "bertology.duckdb")
    rid = {k: run_id(analysed_store(locate(runs[k]), json.loads((runs[k] / "analysis.json").read_text())))
           for k in "ef"}
    with running_server(root) as base:
        picker = urllib.request.urlopen(base + "/compare", timeout=30).read().decode()
        assert '<select name="a">' in picker and rid["e"] in picker
        page = urllib.request.urlopen(f"{base}/compare?a={rid['e']}&b={rid['f']}", timeout=60).read().decode()
        api = json.loads(urllib.request.urlopen(f"{base}/api/compare?a={rid['e']}&b={rid['f']}", timeout=60).read())
    assert "Layer readouts" in page and "Heads whose attention features differ most" in page
    for s in api["flips"]["samples"][:3]:
        assert f"/runs/{rid['e']}/samples/{s['index_a']}" in page and f"/runs/{rid['f']}/samples/{s['index_b']}" in page
    assert f"{api['flips']['total']}</td>" in page


def test_separability_and_ffn_differences_are_paired_and_equal_each_runs_estimate_minus_the_others(runs, tmp_path):
    """Both runs' [CLS] states as one source over the matched samples: the plug-in Δ is exactly A's plug-in minus
    B's (as each run's own analysis has it), the debiased Δ A's debiased value minus B's wherever neither was
    moved to its range's edge."""
    compare(runs["a"], runs["b"], tmp_path, resamples=50)
    sep = pd.read_parquet(tmp_path / "compare_separability.parquet")
    own = {k: pd.read_parquet(runs[k] / "separability.parquet").set_index(["layer", "site", "statistic"]) for k in "ab"}
    assert set(sep["statistic"]) == {"fisher_trace", "centroid_ratio", "classification"}
    assert len(sep) == len(own["a"].loc[own["a"].index.get_level_values(2) == "fisher_trace"]) * 3
    for r in sep.itertuples():
        a, b = (own[k].loc[(r.layer, r.site, r.statistic)] for k in "ab")
        assert r.estimate_plugin == pytest.approx(a["estimate_plugin"] - b["estimate_plugin"], rel=1e-6, abs=1e-9)
        assert (r.estimate_a, r.estimate_b) == pytest.approx((a["estimate"], b["estimate"]), rel=1e-6, abs=1e-9)
        if a["estimate"] > 0 and b["estimate"] > 0:
            assert r.estimate == pytest.approx(a["estimate"] - b["estimate"], rel=1e-6, abs=1e-9)
        assert r.ci_low <= r.estimate <= r.ci_high and r.p_adj >= r.p
    ffn = pd.read_parquet(tmp_path / "compare_ffn.parquet")
    mine = {k: pd.read_parquet(runs[k] / "ffn_roles.parquet") for k in "ab"}
    mine = {k: d[d["positions"] == "cls"].set_index(["layer", "vector", "statistic"]) for k, d in mine.items()}
    assert {"structural", "classification", "structural_share"} <= set(ffn["statistic"])
    for r in ffn.itertuples():
        a, b = (mine[k].loc[(r.layer, r.vector, r.statistic)] for k in "ab")
        assert r.estimate_plugin == pytest.approx(a["estimate_plugin"] - b["estimate_plugin"], rel=1e-6, abs=1e-12)


def test_a_run_against_itself_differs_by_nothing_with_a_zero_width_interval(runs, tmp_path):
    """The pairing: leaving a sample out of both runs at once, a run's Δ with itself has no variance at all,
    where two unpaired runs of the same width would give √2 × its own se."""
    compare(runs["a"], runs["a"], tmp_path, resamples=50)
    sep = pd.read_parquet(tmp_path / "compare_separability.parquet")
    assert np.allclose(sep["estimate"], 0) and np.allclose(sep["ci_high"] - sep["ci_low"], 0, atol=1e-9)
    own = pd.read_parquet(runs["a"] / "separability.parquet")
    assert (own.loc[own["statistic"] == "fisher_trace", "se"] > 0).any()


def test_pattern_types_per_head_compare_as_shares_of_samples(runs, tmp_path):
    from bertology.analysis.attention_heads import PATTERNS, PatternClassifier, head_features

    compare(runs["e"], runs["f"], tmp_path, resamples=50)
    heads = pd.read_parquet(tmp_path / "compare_heads.parquet")
    types = heads[heads["feature"].str.startswith("type_")]
    assert set(types["feature"]) == {f"type_{p}" for p in PATTERNS}
    e = open_store(runs["e"].parent / "dev.zarr")
    f = head_features(e)
    names = [str(x) for x in f["feature"].values]
    t = PatternClassifier().predict(*(f.values[..., names.index(k)] for k in ("vertical", "diagonal", "block")))
    r = types[(types["layer"] == 2) & (types["head"] == 1)].set_index("feature")
    for p in PATTERNS:
        assert r.at[f"type_{p}", "mean_a"] == pytest.approx((t[:, 1, 0] == PATTERNS.index(p)).mean())
    share_sums = types.groupby(["layer", "head"])["mean_a"].sum()
    assert np.allclose(share_sums, 1.0)
