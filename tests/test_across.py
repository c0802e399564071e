"""``bertology across``: statistics over fine-tuning seeds (their interval's coverage shown by simulation), the
share of seeds each finding holds in, Kovaleva's baselines, and their way into the index and the report."""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bertology import BertologyError
from bertology.analysis.across import across, crossed_interval, seed_stability, seed_variability
from bertology.analysis.index import build_index
from bertology.analysis.options import AnalyzeConfig
from bertology.analysis.published import KOVALEVA_BASELINES, KOVALEVA_FINETUNE_GAIN
from bertology.analysis.run import analyze
from bertology.cli import main

from .conftest import make_split

CFG = AnalyzeConfig(resamples=50, permutations=0, probe=False, attribution_samples=0, attention=False)


def _simulate(S: int, n: int, tau: float, shared: float, own: float, reps: int, seed: int):
    """``reps`` studies of S seeds on the same n sentences: sentence i of seed s scores θ_s + u_i + v_si
    (θ_s ~ N(0, τ²) the seed's effect, u_i ~ N(0, shared²) the sentence's, common to every seed, v_si ~ N(0,
    own²) the seed's own noise on it). The statistic is a seed's mean score; the target, its mean over
    seeds and sentences, is 0."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, tau, (reps, S, 1))
    u = rng.normal(0, shared, (reps, 1, n))
    v = rng.normal(0, own, (reps, S, n))
    x = theta + u + v
    return x.mean(axis=-1), x.std(axis=-1, ddof=1) / np.sqrt(n)


@pytest.mark.parametrize("S", [2, 3, 5])
@pytest.mark.parametrize("tau,shared,own", [(0.3, 1.0, 0.2),    # the seeds disagree more than sentences vary
                                            (0.02, 1.0, 0.2),   # sentences dominate, shared by every seed
                                            (0.1, 0.3, 1.0)])   # each seed's own noise on each sentence
def test_the_crossed_interval_covers_the_mean_over_seeds_and_sentences(S, tau, shared, own):
    est, se = _simulate(S, 200, tau, shared, own, reps=4000, seed=S)
    ci = crossed_interval(est, se, 200)
    cover = ((ci["ci_low"] <= 0) & (0 <= ci["ci_high"])).mean()
    assert 0.94 <= cover, f"coverage {cover:.3f} under 95%"
    # where the seeds dominate it is not trivially wide: the seed part is estimated, not bounded (where each
    # seed's own noise per sentence dominates it is wider than needed: the docstring says why)
    if tau >= 0.3:
        assert cover <= 0.975, f"coverage {cover:.3f}: needlessly wide"
    # an interval of the sentences alone (a single seed's) misses the seeds' spread
    alone = (np.abs(est[:, 0]) <= 1.96 * se[:, 0]).mean()
    if tau >= 0.3:
        assert alone < 0.6


def test_the_crossed_interval_is_a_plain_t_formula():
    est = np.array([0.60, 0.66, 0.57])
    se = np.array([0.03, 0.028, 0.031])
    got = crossed_interval(est, se, 100)
    a, b = est.var(ddof=1) / 3, np.mean(se ** 2)
    half = np.sqrt(stats.t.ppf(0.975, 2) ** 2 * a + stats.t.ppf(0.975, 99) ** 2 * b)
    assert got["mean"] == pytest.approx(est.mean())
    assert got["sd_between"] == pytest.approx(est.std(ddof=1))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((est.mean() - half, est.mean() + half))
    one = crossed_interval(est[:1], se[:1], 100)     # one seed: its own estimate, a sentence interval
    assert np.isnan(one["sd_between"]) and one["ci_high"] - one["ci_low"] == pytest.approx(
        2 * stats.t.ppf(0.975, 99) * 0.03)
    assert crossed_interval(est, se, 100)["ci_high"] - got["mean"] > half / 2     # the seeds widen it


def _tables(seed: int, acc: float, candidates: set[int], best: str, significant: set[str], changed: int):
    heads = [f"head:{layer}.{h}" for layer in (1, 2, 3) for h in (1, 2)]
    est = [0.05 if name == best else -0.01 for name in heads]
    return {
        "task_metrics": pd.DataFrame({"statistic": ["accuracy"], "estimate": [acc], "ci_low": [acc - 0.05],
                                      "ci_high": [acc + 0.05], "n": [100]}),
        "separability": pd.DataFrame({"statistic": "delta_fisher_trace", "layer": [1, 2, 3], "site": "ln2",
                                      "pooling": "cls", "estimate": [0.1 * seed, 0.2, 0.0], "ci_low": -1.0,
                                      "ci_high": 1.0, "se": [0.01, 0.02, np.nan], "n": 100}),
        "skip_candidates": pd.DataFrame({"layer": [1, 2, 3], "candidate": [k in candidates for k in (1, 2, 3)]}),
        "interventions": pd.DataFrame({"statistic": "delta_accuracy", "intervention": heads, "kind": "head",
                                       "layer": [int(h[5]) for h in heads], "head": [int(h[7]) for h in heads],
                                       "estimate": est, "ci_low": -0.1, "ci_high": 0.1, "n": 100,
                                       "p_adj": [0.01 if h in significant else 0.5 for h in heads]}),
        "attention_finetune_change": pd.DataFrame({"statistic": "cosine_pretrained_finetuned", "unit": "layer",
                                                   "layer": [1, 2, 3], "head": pd.NA,
                                                   "estimate": [0.5 if k == changed else 0.9 for k in (1, 2, 3)],
                                                   "ci_low": 0.0, "ci_high": 1.0, "n": 100}),
    }


def test_seed_variability_gives_each_statistics_mean_sd_and_crossed_interval():
    seeds = [0, 1, 2]
    tables = [_tables(s, acc, {3}, "head:1.1", set(), 3) for s, acc in zip(seeds, (0.6, 0.66, 0.57))]
    var = seed_variability(seeds, tables)
    acc = var[(var["source"] == "task_metrics") & (var["statistic"] == "accuracy")].iloc[0]
    expect = crossed_interval(np.array([0.6, 0.66, 0.57]), np.full(3, 0.1 / (2 * 1.959964)), 100)
    assert acc["mean"] == pytest.approx(0.61) and acc["sd_between"] == pytest.approx(np.std([0.6, 0.66, 0.57], ddof=1))
    assert (acc["ci_low"], acc["ci_high"]) == pytest.approx((expect["ci_low"], expect["ci_high"]), rel=1e-4)
    assert json.loads(acc["estimates"]) == pytest.approx([0.6, 0.66, 0.57]) and acc["n_seeds"] == 3
    sep = var[var["source"] == "separability"].set_index("layer")
    assert sep.at[1, "mean"] == pytest.approx(0.1) and sep.at[1, "se_within"] == pytest.approx(0.01)
    # a row without its own se: its interval's half-width over z
    assert sep.at[3, "se_within"] == pytest.approx(1.0 / 1.959964, rel=1e-5)
    assert sep.at[1, "detail"] == "pooling=cls" and sep.at[1, "site"] == "ln2"
    heads = var[var["source"] == "interventions"]
    assert len(heads) == 6 and (heads["ci_method"] == "random_effects_crossed").all()


def test_seed_stability_shares_jaccard_and_the_last_two_layers():
    seeds = [0, 1, 2]
    tables = [_tables(0, 0.6, {3}, "head:2.1", {"head:1.1", "head:2.1"}, 3),
              _tables(1, 0.6, {2, 3}, "head:2.1", {"head:2.1"}, 2),
              _tables(2, 0.6, {3}, "head:3.2", set(), 1)]
    st = seed_stability(seeds, tables)
    skip = st[st["finding"] == "skip_candidate"].set_index("layer")["value"]
    assert skip.to_dict() == pytest.approx({1: 0.0, 2: 1 / 3, 3: 1.0})
    best = st[st["finding"] == "best_head_removal"].set_index("intervention")
    assert best.at["head:2.1", "value"] == pytest.approx(2 / 3) and json.loads(best.at["head:2.1", "seeds_holding"]) == [0, 1]
    assert best.at["head:3.2", "value"] == pytest.approx(1 / 3)
    jac = st[st["finding"] == "significant_heads"]["value"].iloc[0]
    assert jac == pytest.approx(np.mean([1 / 2, 0.0, 0.0]))     # {1.1, 2.1} vs {2.1}; each vs the empty set
    last = st[st["finding"] == "finetune_change_last_two_layers"]["value"].iloc[0]
    assert last == pytest.approx(2 / 3)                          # layers 3 and 2 of 3, then layer 1


def test_the_published_baselines_make_kovalevas_average_gain():
    metric = lambda v: v.get("accuracy", v.get("pearson"))   # noqa: E731  (STS-B's metric is Pearson's r)
    gain = np.mean([metric(v["finetuned"]) - metric(v["pretrained"]) for v in KOVALEVA_BASELINES.values()])
    assert gain == pytest.approx(KOVALEVA_FINETUNE_GAIN, abs=0.05)


@pytest.fixture(scope="module")
def seeds(tiny_models, tmp_path_factory):
    """Two "seeds" of one split (two tiny models, each with a fine-tuning record of its seed) and a
    "pre-trained" run, each extracted and analysed; and a run of other samples."""
    import shutil

    from bertology.extract.extraction import ExtractConfig, extract

    root = tmp_path_factory.mktemp("across")
    split = make_split(60, seed=31)
    cfg = ExtractConfig(window=64, token_sites=(), attention=False)
    out = {}
    for name, model, seed, data in (("s0", "bert", 0, split), ("s1", "electra", 1, split), ("pre", "bert", None, split),
                                    ("other", "bert", 2, replace(split, examples=split.examples[5:]))):
        ckpt = root / name / "model"
        shutil.copytree(tiny_models[model], ckpt)
        if seed is not None:
            (ckpt / "metrics.json").write_text(json.dumps({"seed": seed}))
        store = extract(str(ckpt), data, root / name / "dev.zarr", cfg, progress=False)
        analyze(store, root / name / "analysis", CFG)
        out[name] = root / name / "analysis"
    return out


def test_across_runs_reach_the_index_with_each_runs_seed(seeds, tmp_path):
    rc = main(["across", str(seeds["s1"]), str(seeds["s0"]), "--out", str(tmp_path / "across"),
               "--pretrained", str(seeds["pre"])])
    assert rc == 0
    info = json.loads((tmp_path / "across" / "across.json").read_text())
    assert info["seeds"] == [0, 1] and info["n_samples"] == 60        # ordered by the recorded seeds
    base = pd.read_parquet(tmp_path / "across" / "baselines.parquet").set_index("baseline")
    lp = pd.read_parquet(seeds["pre"] / "layer_predictions.parquet")
    last = lp[lp["layer"] == lp["layer"].max()]
    assert base.at["pretrained", "estimate"] == pytest.approx(last["probe_correct"].mean())
    acc = [pd.read_parquet(seeds[s] / "task_metrics.parquet").set_index("statistic").at["accuracy", "estimate"]
           for s in ("s0", "s1")]
    assert base.at["finetuned", "estimate"] == pytest.approx(np.mean(acc))
    db = tmp_path / "index.duckdb"
    build_index([seeds["s0"].parent / "dev.zarr", seeds["s1"].parent / "dev.zarr", seeds["s0"], seeds["s1"],
                 tmp_path / "across"], db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert sorted(con.sql("SELECT seed FROM runs").fetchall()) == [(0,), (1,)]
        sets = con.sql("SELECT set_id, seeds, n_runs FROM run_sets").fetchall()
        assert len(sets) == 1 and json.loads(sets[0][1]) == [0, 1] and sets[0][2] == 2
        n = con.execute("SELECT count(*) FROM seed_variability WHERE set_id = ? AND source = 'task_metrics'",
                        [sets[0][0]]).fetchall()[0][0]
        assert n == 3
        ids = json.loads(con.sql("SELECT run_ids FROM run_sets").fetchall()[0][0])
        assert sorted(ids) == sorted(r[0] for r in con.sql("SELECT run_id FROM runs").fetchall())


def test_runs_of_other_samples_are_refused(seeds, tmp_path):
    with pytest.raises(BertologyError, match="different samples"):
        across([seeds["s0"], seeds["other"]], tmp_path / "x")


def test_the_report_shows_one_run_per_task_and_the_across_section(seeds, tmp_path, capsys):
    from bertology.reports.build import build_report

    across([seeds["s0"], seeds["s1"]], tmp_path / "across", pretrained=seeds["pre"])
    db = tmp_path / "index.duckdb"
    build_index([seeds["s0"].parent / "dev.zarr", seeds["s1"].parent / "dev.zarr", seeds["s0"], seeds["s1"],
                 tmp_path / "across"], db)
    out = build_report(tmp_path, tmp_path / "report", db=db)
    err = capsys.readouterr().err
    assert "has runs of seeds 0, 1: the per-run sections show seed 0" in err
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Across seeds and runs" in html and "Baselines (Kovaleva et al. 2019, Table 1)" in html
    var = pd.read_csv(tmp_path / "report" / "tables" / "seed_variability.csv")
    assert set(var["n_seeds"]) == {2}
    assert out is not None
