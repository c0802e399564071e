"""`bertology analyze` on a real store: every statistic equals an independent plain-numpy computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bertology.analysis.run import FRONT, AnalyzeConfig, analyze
from bertology.cli import main
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.tasks import load_split
from bertology.store import open_store
from bertology.store.schema import SITES


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, glue_dir):
    """MiniLM (real weights, seeded head) on the first 160 SST-2 dev sentences, full capture."""
    root = tmp_path_factory.mktemp("analyze")
    split = load_split("sst2", "dev", glue_dir, limit=160)
    return extract("minilm-l6", split, root / "sst2.zarr", ExtractConfig(window=64, allow_untrained_head=True),
                   progress=False)


@pytest.fixture(scope="module")
def tables(real_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    analyze(real_store, out, AnalyzeConfig(resamples=200, seed=1, pooling=("cls", "mean")))
    return {p.stem: pd.read_parquet(p) for p in out.glob("*.parquet")}, out


def plain_fisher(x, y):
    """tr(S_B)/tr(S_W) by the definition; 0 where all samples coincide (no spread at all)."""
    if np.allclose(x, x[0]):
        return 0.0
    mu = x.mean(0)
    sb = sum(np.sum(y == c) * np.sum((x[y == c].mean(0) - mu) ** 2) for c in np.unique(y))
    sw = sum(np.sum((x[y == c] - x[y == c].mean(0)) ** 2) for c in np.unique(y))
    return sb / sw


def plain_debiased_fisher(x, y):
    """The debiased Fisher trace by its definition (analysis/moments.py): the between-class energy less the
    noise of the class means, Σ_c (1 − π_c) s_c² / n, over the unbiased within-class variance Σ_c π_c s_c²."""
    if np.allclose(x, x[0]):
        return 0.0
    n, mu = len(y), x.mean(0)
    b = w = 0.0
    for c in np.unique(y):
        xc = x[y == c]
        pi, s2 = len(xc) / n, np.sum((xc - xc.mean(0)) ** 2) / (len(xc) - 1)
        b += pi * np.sum((xc.mean(0) - mu) ** 2) - (1 - pi) * s2 / n
        w += pi * s2
    return b / w


def test_tables_have_the_tidy_columns(tables):
    t, _ = tables
    assert {"separability", "skip_candidates", "ffn_roles", "token_strength_summary", "token_strength"} <= set(t)
    for name in ("separability", "skip_candidates", "ffn_roles", "token_strength_summary"):
        assert list(t[name].columns[: len(FRONT)]) == FRONT, name
        assert (t[name]["task"] == "sst2").all() and (t[name]["model"] == "minilm-l6").all()
        est = t[name].dropna(subset=["ci_low", "ci_high"])
        assert (est["ci_low"] <= est["ci_high"]).all(), name


def test_separability_equals_plain_numpy(tables, real_store):
    t, _ = tables
    ds = open_store(real_store)
    y = ds["label"].values
    sep = t["separability"]
    assert set(sep["pooling"]) == {"cls", "mean"}
    mean_rows = sep[sep.pooling == "mean"]
    sep = sep[sep.pooling == "cls"]
    # mean-pooled tokens: each sample's token vectors averaged (no padding exists to leak in)
    tok = ds["token_ln2"].sel(token_layer=3).values.astype(np.float64)
    pooled = np.add.reduceat(tok, ds["token_start"].values, axis=0) / ds["length"].values[:, None]
    row = mean_rows[(mean_rows.layer == 3) & (mean_rows.site == "ln2") & (mean_rows.statistic == "fisher_trace")]
    assert row.estimate_plugin.iloc[0] == pytest.approx(plain_fisher(pooled, y), rel=1e-9)
    assert row.estimate.iloc[0] == pytest.approx(max(plain_debiased_fisher(pooled, y), 0), rel=1e-9)
    assert len(mean_rows[mean_rows.statistic == "delta_fisher_trace"]) == 6
    for layer, site in ((1, "attn"), (3, "ln1"), (6, "ln2")):
        x = ds["cls"].sel(layer=layer, site=site).values.astype(np.float64)
        row = sep[(sep.layer == layer) & (sep.site == site) & (sep.statistic == "fisher_trace")].iloc[0]
        assert row.estimate_plugin == pytest.approx(plain_fisher(x, y), rel=1e-9)
        assert row.estimate == pytest.approx(max(plain_debiased_fisher(x, y), 0), rel=1e-9, abs=1e-12)
        assert 0 <= row.ci_low <= row.estimate <= row.ci_high and row.ci_low < row.ci_high and row.n == 160
    x0 = ds["cls_embed"].values.astype(np.float64)
    assert np.allclose(x0, x0[0]), "the [CLS] input of layer 1 is the same vector for every sample"
    x1 = ds["cls"].sel(layer=1, site="ln2").values.astype(np.float64)
    d = sep[(sep.statistic == "delta_fisher_trace") & (sep.layer == 1)].iloc[0]
    assert d.estimate == pytest.approx(plain_debiased_fisher(x1, y) - plain_debiased_fisher(x0, y), rel=1e-7)
    assert d.estimate_plugin == pytest.approx(plain_fisher(x1, y) - plain_fisher(x0, y), rel=1e-9)
    deltas = sep[sep.statistic == "delta_fisher_trace"]
    assert len(deltas) == 6 and deltas["p"].between(0, 1).all() and (deltas["p_adj"] >= deltas["p"]).all()
    chance = sep[sep.statistic == "chance_fisher_trace"].set_index(["layer", "site"])
    assert len(chance) == 37 and chance["p"].between(0, 1).all()
    assert chance.loc[(0, "embed"), "estimate"] == 0  # coinciding vectors: no separability, even by chance
    # the chance level is what shuffled labels give: about 0 for the debiased ratio, within the spread of
    # 40 shuffles recomputed by hand (the plug-in ratio's would sit at the 1/(n−2) floor)
    x6 = ds["cls"].sel(layer=6, site="ln2").values.astype(np.float64)
    shuffled = np.array([plain_debiased_fisher(x6, np.random.default_rng(k).permutation(y)) for k in range(40)])
    clipped = np.maximum(shuffled, 0)   # the reported statistic is moved into its range, its chance level too
    assert abs(chance.loc[(6, "ln2"), "estimate"] - clipped.mean()) < 3 * clipped.std() / np.sqrt(40) + 1e-4
    assert abs(shuffled.mean()) < 0.2 / (len(y) - 2) and (chance["ci_low"] >= 0).all()
    probe = sep[sep.statistic == "probe_accuracy"]
    assert probe["estimate"].between(0, 1).all()


def test_skip_candidates_follow_the_rule(tables):
    t, _ = tables
    sk, sep = t["skip_candidates"], t["separability"]
    sep = sep[sep.pooling == "cls"]  # skip candidates are chosen on the [CLS] curve
    d = sep[sep.statistic == "delta_fisher_trace"].set_index("layer")["estimate"]
    expected = set(d[d <= 0].index) or {int(d.idxmin())}
    assert set(sk.loc[sk.candidate, "layer"]) == expected
    assert sorted(sk["rank"]) == list(range(1, 7))


def test_ffn_energies_sum_to_total_and_match_numpy(tables, real_store):
    t, _ = tables
    f = t["ffn_roles"]
    assert set(f["vector"]) == {"update", "ff", "ln1", "ln2"}
    assert f["site"].dropna().isin(SITES).all() and f.loc[f["vector"] == "update", "site"].isna().all()
    for scope in ("cls", "tokens"):
        for (layer, site), g in f[f.positions == scope].groupby(["layer", "vector"]):
            if "total" not in set(g["statistic"]):
                continue
            p = g.set_index("statistic")["estimate_plugin"]
            assert p["structural"] + p["classification"] + p["within"] == pytest.approx(p["total"], rel=1e-9)
            e = g.set_index("statistic")["estimate"]   # debiased: the same sum, unless a part was moved to 0
            if e["classification"] > 0:
                assert e["structural"] + e["classification"] + e["within"] == pytest.approx(e["total"], rel=1e-6)
    ds = open_store(real_store)
    y = ds["label"].values
    upd = (ds["cls"].sel(layer=2, site="ln2").values.astype(np.float64)
           - ds["cls"].sel(layer=2, site="ln1").values.astype(np.float64))
    row = f[(f.positions == "cls") & (f.layer == 2) & (f.vector == "update")].set_index("statistic")
    assert row.at["structural", "estimate_plugin"] == pytest.approx(np.sum(upd.mean(0) ** 2), rel=1e-9)
    assert row.at["structural_share", "estimate_plugin"] == pytest.approx(
        np.sum(upd.mean(0) ** 2) / np.mean(np.sum(upd ** 2, 1)), rel=1e-9)
    # debiased: less the variance of the overall mean, Σ_c π_c² s_c² / n_c
    noise = sum(np.mean(y == c) ** 2 * np.sum((upd[y == c] - upd[y == c].mean(0)) ** 2) / (np.sum(y == c) - 1)
                / np.sum(y == c) for c in (0, 1))
    assert row.at["structural", "estimate"] == pytest.approx(np.sum(upd.mean(0) ** 2) - noise, rel=1e-9)
    row = row["estimate"]
    # over every token, pooled in plain numpy
    tok_upd = (ds["token_ln2"].sel(token_layer=4).values.astype(np.float64)
               - ds["token_ln1"].sel(token_layer=4).values.astype(np.float64))
    tok_y = y[ds["token_sample"].values]
    mu = tok_upd.mean(0)
    cls_part = sum(np.mean(tok_y == c) * np.sum((tok_upd[tok_y == c].mean(0) - mu) ** 2) for c in (0, 1))
    row = f[(f.positions == "tokens") & (f.layer == 4) & (f.vector == "update")].set_index("statistic")
    assert row.at["classification", "estimate_plugin"] == pytest.approx(cls_part, rel=1e-9)
    norm = f[(f.positions == "cls") & (f.layer == 3) & (f.vector == "ln1") & (f.statistic == "norm_mean")]
    ln1 = ds["cls"].sel(layer=3, site="ln1").values.astype(np.float64)
    assert norm.estimate.iloc[0] == pytest.approx(np.mean(np.linalg.norm(ln1, axis=1)))


def test_token_strength_buckets_follow_the_quartile_rule_exactly(tables, real_store):
    t, _ = tables
    b = t["token_strength"]
    ds = open_store(real_store)
    h = ds["token_ln2"].sel(token_layer=4).values.astype(np.float64)  # default layer: 2/3 of 6
    np.testing.assert_allclose(b["strength"], np.linalg.norm(h, axis=1), rtol=1e-6)
    ranked = b[b.category != "special"]
    q3 = np.quantile(ranked["strength"], 0.75)
    assert ((ranked["strength"] >= q3) == (ranked["bucket_corpus"] == "HIGH")).all()
    assert b.loc[b.category == "special", "bucket_corpus"].isna().all()
    assert set(b.loc[b.category == "special", "token"]) == {"[CLS]", "[SEP]"}
    for sample, g in ranked.groupby("sample"):
        q = np.quantile(g["strength"], 0.75)
        assert ((g["strength"] >= q) == (g["bucket_sentence"] == "HIGH")).all()
    # shares in the summary equal counts in the per-token table
    s = t["token_strength_summary"]
    row = s[(s.level == "subword") & (s.threshold == "corpus") & (s.bucket == "HIGH") & (s.category == "function")]
    high = ranked[ranked.bucket_corpus == "HIGH"]
    assert row.estimate.iloc[0] == pytest.approx(np.mean(high.category == "function"))
    assert {"the", "a", "of"} & set(ranked.loc[ranked.category == "function", "token"])
    assert (ranked.loc[ranked.token.isin([".", ","]), "category"] == "punctuation").all()


def test_word_level_merges_subwords(tables):
    t, _ = tables
    b = t["token_strength"]
    pieces = b[b.token.str.startswith("##")]
    assert len(pieces), "SST-2 has words split into subwords"
    r = pieces.iloc[0]
    word = b[(b["sample"] == r["sample"]) & (b.word_id == r.word_id)]
    assert len(word) >= 2 and word["word"].nunique() == 1
    assert word["word"].iloc[0] == "".join(p.removeprefix("##") for p in word["token"])


def test_analyze_is_deterministic_for_a_seed(real_store, tables, tmp_path):
    t, _ = tables
    assert main(["analyze", str(real_store), "--out", str(tmp_path), "--resamples", "200", "--seed", "1",
                 "--no-probe"]) == 0
    again = pd.read_parquet(tmp_path / "ffn_roles.parquet")
    pd.testing.assert_frame_equal(again, t["ffn_roles"])


@pytest.mark.parametrize("attribution", [0, 3])
def test_the_tables_written_are_the_registrys_and_ff_norm_ratio_needs_no_attribution(tiny_results, tmp_path,
                                                                                   attribution):
    """analyze writes exactly the tables the registry's plan names for the store's contents (what the workflow
    declares), and ‖ff‖/‖ln1‖ (mean over tokens, per layer) comes from the store alone."""
    from bertology.analysis.registry import workflow_tables

    store = tiny_results / "sst2" / "dev.zarr"
    (tmp_path / "errors.parquet").write_bytes(b"left by an older analysis")       # a retired table file
    analyze(store, tmp_path, AnalyzeConfig(resamples=50, probe=False, permutations=0,
                                           attribution_samples=attribution))
    written = sorted(p.stem for p in tmp_path.glob("*.parquet"))
    assert written == sorted(workflow_tables(attention_change=False, attribution=attribution > 0, sweep=False))
    assert "ff_norm_ratio" in written and "errors" not in written
    ratio = pd.read_parquet(tmp_path / "ff_norm_ratio.parquet").set_index("layer")["estimate"]
    ds = open_store(store)
    for layer in ds["token_layer"].values:
        ff = ds["token_ff"].sel(token_layer=layer).values.astype(np.float64)
        ln1 = ds["token_ln1"].sel(token_layer=layer).values.astype(np.float64)
        assert ratio[int(layer)] == pytest.approx(np.mean(np.linalg.norm(ff, axis=1) / np.linalg.norm(ln1, axis=1)),
                                                  rel=1e-4)
    assert (tmp_path / "ffn_outlier_dims.parquet").exists() == (attribution > 0)


def test_every_interval_holds_its_estimate_and_stays_in_its_range(tables):
    """On real MiniLM states (160 SST-2 sentences, where the plug-in ratios sat on their noise floor and a
    sixth of their BCa intervals excluded the estimate): no summary row's estimate lies outside its
    interval, and no interval leaves its statistic's range."""
    t, _ = tables
    nonnegative = {"fisher_trace", "centroid_ratio", "classification", "structural", "within", "total",
                   "structural_over_classification", "norm_mean", "norm_cv"}
    shares = {"structural_share", "accuracy", "error_rate", "confident_share", "no_layer_right_share",
              "probe_accuracy", "share"}
    checked = 0
    for name, df in t.items():
        if not {"estimate", "ci_low", "ci_high", "statistic"} <= set(df.columns):
            continue
        rows = df.dropna(subset=["estimate", "ci_low", "ci_high"])
        rows = rows[rows["ci_method"] != "permutation"] if "ci_method" in rows else rows
        inside = (rows["ci_low"] <= rows["estimate"] + 1e-12) & (rows["estimate"] <= rows["ci_high"] + 1e-12)
        assert inside.all(), (name, rows.loc[~inside, ["statistic", "estimate", "ci_low", "ci_high"]].head())
        stat = rows["statistic"].astype(str).str.replace("chance_", "", regex=False)
        assert (rows.loc[stat.isin(nonnegative | shares), "ci_low"] >= 0).all(), name
        assert (rows.loc[stat.isin(shares), "ci_high"] <= 1).all(), name
        checked += len(rows)
    assert checked > 1000
