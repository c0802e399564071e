"""The whole workflow, end to end, on the tiny profile (config/tiny.yaml): Snakemake from the GLUE files to
the report; reruns; reproducibility; and the report itself (HTML, images, headless Chromium)."""

from __future__ import annotations

import base64
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertology import BertologyError
from bertology.store import open_store

from .browser import chromium as _chromium
from .browser import non_blank as _non_blank
from .conftest import REPO, snakemake

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "qnli")
CLASSIFICATION = tuple(t for t in TASKS if t != "stsb")   # STS-B: a regression (test_stsb_...)
RULES = ("init_model", "finetune", "extract_dev", "extract_pretrained", "extract_train", "store_info", "intervene",
         "analyze", "analyze_pretrained", "compare_pretrained", "index", "report")


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table of a (dry) run: rule -> number of jobs."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", output, re.S)
    if not m:
        return {}
    return {rule: int(n) for rule, n in (line.split() for line in m.group(1).strip().splitlines())}


@pytest.fixture(scope="module")
def tiny(tiny_workflow) -> Path:
    return tiny_workflow


def test_tiny_profile_runs_every_rule_with_log_and_benchmark(tiny):
    report = tiny / "report"
    assert (report / "index.html").is_file() and (report / "summary.md").is_file()
    for rule in RULES:
        assert list((tiny / "logs").glob(f"{rule}*.log")), f"no log file for rule {rule}"
        assert list((tiny / "benchmarks").glob(f"{rule}*.tsv")), f"no benchmark file for rule {rule}"
    for task in TASKS:
        assert (tiny / task / "analysis" / "separability.parquet").is_file()
        assert open_store(tiny / task / "dev.zarr").attrs["n_layers"] == 2  # the tiny random BERT


def test_rerun_runs_nothing_and_a_config_change_reruns_exactly_what_it_affects(tiny, glue_dir, tmp_path):
    dry = snakemake(tiny, glue_dir, "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    changed = tmp_path / "tiny_more_resamples.yaml"
    changed.write_text((REPO / "config" / "tiny.yaml").read_text().replace("resamples: 200", "resamples: 300"))
    dry = snakemake(tiny, glue_dir, "--dry-run", configfile=changed)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout + dry.stderr) == {"analyze": 6, "analyze_pretrained": 6, "compare_pretrained": 6,
                                                   "index": 1, "report": 1, "all": 1}
    changed.write_text((REPO / "config" / "tiny.yaml").read_text().replace("dev_limit: 48", "dev_limit: 40"))
    dry = snakemake(tiny, glue_dir, "--dry-run", configfile=changed)
    assert job_counts(dry.stdout + dry.stderr) == {"extract_dev": 6, "extract_pretrained": 6, "store_info": 6,
                                                   "intervene": 6, "analyze": 6, "analyze_pretrained": 6,
                                                   "compare_pretrained": 6, "index": 1, "report": 1, "all": 1}


def test_user_checkpoints_skip_finetune(tiny, glue_dir, tmp_path):
    cfg = tmp_path / "own_checkpoint.yaml"
    cfg.write_text((REPO / "config" / "tiny.yaml").read_text()
                   + f"checkpoints:\n  sst2: {tiny / 'sst2' / 'model'}\n")
    dry = snakemake(tmp_path / "fresh", glue_dir, "--dry-run", configfile=cfg)
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["finetune"] == 5 and counts["extract_dev"] == 6


def test_two_runs_of_one_config_give_byte_identical_tables(tiny, glue_dir, tmp_path):
    second = tmp_path / "results"
    proc = snakemake(second, glue_dir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    a, b = tiny / "report" / "tables", second / "report" / "tables"
    names = sorted(p.name for p in a.glob("*.csv"))
    assert names == sorted(p.name for p in b.glob("*.csv"))
    assert {"metrics.csv", "separability.csv", "skip_candidates.csv", "ffn_ratio_cls.csv", "ffn_ratio_tokens.csv",
            "confident_wrong.csv", "token_strength_summary.csv", "provenance.csv", "layer_skip.csv", "apriori_validation.csv",
            "removals.csv", "heads.csv", "attention_patterns.csv", "attention_heads.csv",
            "attention_token_classes.csv", "attention_finetune.csv", "attribution_similarity.csv",
            "attribution_completeness.csv", "ff_amp_wordsplit.csv", "ff_amp_pairs.csv", "attention_norms.csv",
            "ffn_norms.csv"} <= set(names)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), f"{n} differs between two runs of one config"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links, self.ids, self.text = [], [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])
        if "id" in a:
            self.ids.add(a["id"])

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_is_self_contained_and_every_image_decodes(tiny):
    report = tiny / "report"
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    assert {"script", "link", "iframe"}.isdisjoint(page.tags)
    assert {"metrics", "separability", "skip", "removals", "attention", "attribution", "ffn", "errors", "tokens",
            "provenance", "runtime"} <= page.ids
    assert len(page.images) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        size, ink = _non_blank(base64.b64decode(src.split(",", 1)[1]))
        assert size[0] > 200 and size[1] > 150 and ink > 0.01, (size, ink)
    for href in page.links:
        assert not re.match(r"^(https?:)?//", href), f"external reference {href}"
        if not href.startswith("#"):
            assert (report / href).is_file(), f"broken link {href}"
    text = " ".join(page.text)
    for task in TASKS:
        assert task.upper() in text
    assert "published, BERT-base" in text and "60–93%" in text and "~150×" in text
    summary = (report / "summary.md").read_text()
    assert all(task.upper() in summary for task in TASKS)


def test_report_numbers_match_the_stores(tiny):
    """The report's tables against plain numpy over the stores (not through the analysis code)."""
    tables = tiny / "report" / "tables"
    metrics = pd.read_csv(tables / "metrics.csv").set_index("task")
    cw = pd.read_csv(tables / "confident_wrong.csv").set_index("task")
    sep = pd.read_csv(tables / "separability.csv")
    for task in CLASSIFICATION:
        ds = open_store(tiny / task / "dev.zarr")
        y, probs = ds["label"].values, ds["probs"].values.astype(np.float64)
        pred = probs.argmax(1)
        assert metrics.at[task, "accuracy"] == pytest.approx(np.mean(pred == y), rel=1e-5)
        wrong = pred != y
        margin = probs[np.arange(len(y)), pred] - probs[np.arange(len(y)), y]
        assert cw.at[task, "errors"] == wrong.sum()
        if wrong.any():
            assert cw.at[task, "confident_share"] == pytest.approx(np.mean(margin[wrong] > 0.3), abs=1e-6)
        x = ds["cls"].sel(site="ln2", layer=ds.sizes["layer"]).values.astype(np.float64)
        mu = x.mean(0)
        sb = sum((y == c).sum() * np.sum((x[y == c].mean(0) - mu) ** 2) for c in np.unique(y))
        sw = sum(np.sum((x[y == c] - x[y == c].mean(0)) ** 2) for c in np.unique(y))
        top = sep[(sep["task"] == task) & (sep["layer"] == ds.sizes["layer"])]
        assert top["fisher_trace_plugin"].iloc[0] == pytest.approx(sb / sw, rel=1e-4)
        # debiased (README: "How bertology's intervals are made and checked"): less the class means' noise
        n = len(y)
        s2 = {c: np.sum((x[y == c] - x[y == c].mean(0)) ** 2) / ((y == c).sum() - 1) for c in np.unique(y)}
        b = sb / n - sum((1 - (y == c).mean()) * s2[c] / n for c in s2)
        w = sum((y == c).mean() * s2[c] for c in s2)
        assert top["fisher_trace"].iloc[0] == pytest.approx(max(b / w, 0), rel=1e-4, abs=1e-7)


def test_stsb_runs_end_to_end_as_a_regression(tiny):
    """STS-B in the tiny profile: a one-output regression head, its Pearson and Spearman in task_metrics
    against scipy on the stored predictions, its errors (|error| > 1) in the index's views, the score bins
    and the ridge readouts in the analysis, Δ Pearson per intervention, and the report saying so."""
    import json

    from scipy import stats as sps

    from bertology.analysis.sql import query
    from bertology.store.sweep import open_sweep

    config = json.loads((tiny / "stsb" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "score"} and config["problem_type"] == "regression"   # one output
    ds = open_store(tiny / "stsb" / "dev.zarr")
    y, pred = ds["label"].values, ds["pred"].values
    assert y.dtype == np.float64 and pred.dtype == np.float64 and ds.attrs["task_type"] == "regression"
    np.testing.assert_allclose(pred, ds["logits"].values[:, 0], rtol=1e-6)
    an = tiny / "stsb" / "analysis"
    tm = pd.read_parquet(an / "task_metrics.parquet").set_index("statistic")
    assert tm.at["pearson", "estimate"] == pytest.approx(sps.pearsonr(pred, y)[0], abs=1e-9)
    assert tm.at["spearman", "estimate"] == pytest.approx(sps.spearmanr(pred, y)[0], abs=1e-9)
    assert tm.at["pearson", "ci_low"] < tm.at["pearson", "estimate"] < tm.at["pearson", "ci_high"]
    assert json.loads((an / "analysis.json").read_text())["config"]["bins"] == [0, 1, 2, 3, 4, 5]
    sep = pd.read_parquet(an / "separability.parquet")
    assert {"fisher_trace", "probe_r2", "probe_spearman", "delta_probe_r2"} <= set(sep["statistic"])
    errors = pd.read_parquet(an / "error_summary.parquet").set_index("statistic")
    assert errors.at["n_errors", "estimate"] == np.sum(np.abs(pred - y) > 1.0)
    assert "confident_share" not in errors.index
    iv = pd.read_parquet(an / "interventions.parquet")
    assert (iv["statistic"] == "delta_pearson").all() and iv["p"].between(0, 1).all()
    skip1 = iv[iv["intervention"] == "skip:1"].iloc[0]
    sw = open_sweep(tiny / "stsb" / "dev.sweep")["pred"]       # Δr against the sweep's own unmodified forward
    r = [sps.pearsonr(sw.sel(intervention=k).values, y)[0] for k in ("skip:1", "none")]
    assert skip1["estimate"] == pytest.approx(r[0] - r[1], abs=1e-9)
    db = tiny / "bertology.duckdb"
    samples = query(db, "SELECT label, pred, abs_error, correct, margin FROM samples s JOIN runs r USING (run_id) "
                        "WHERE r.task = 'stsb' AND r.split = 'dev' ORDER BY sample_index")
    np.testing.assert_allclose(samples["label"], y)
    np.testing.assert_allclose(samples["pred"], pred)
    assert samples["margin"].isna().all()
    n_err = query(db, "SELECT count(*) AS n FROM errors WHERE task = 'stsb' AND split = 'dev'")["n"].iloc[0]
    assert n_err == np.sum(np.abs(pred - y) > 1.0)
    assert query(db, "SELECT count(*) AS n FROM confident_errors WHERE task = 'stsb'")["n"].iloc[0] == 0
    cola = query(db, "SELECT label FROM samples WHERE task = 'cola' AND split = 'dev'")["label"]
    assert set(cola) <= {0.0, 1.0}                                # class indices kept beside the scores
    summary = (tiny / "report" / "summary.md").read_text()
    assert "does not apply (regression)" in summary and "STSB (Pearson's r)" in summary


def test_intervention_sweeps_reach_the_index(tiny):
    """Per-sample predictions under every intervention are in the index; the sweep's unmodified partial
    forward reproduces the store's logits."""
    from bertology.analysis.sql import query
    from bertology.store.sweep import open_sweep

    for task in CLASSIFICATION:
        sw = open_sweep(tiny / task / "dev.sweep")
        ds = open_store(tiny / task / "dev.zarr")
        none = sw["logits"].sel(intervention="none").values
        np.testing.assert_allclose(none, ds["logits"].values, atol=2e-2)
        n_iv = 1 + 4 * 2 + 2 * 4                                    # none; skip/ffn/attn/heads × 2; 2 × 4 heads
        assert sw.sizes["intervention"] == n_iv
        got = query(tiny / "bertology.duckdb", f"SELECT count(*) AS n, sum(CAST(flipped AS INT)) AS flips "
                                              f"FROM intervention_predictions WHERE task = '{task}'")
        assert int(got["n"].iloc[0]) == n_iv * ds.sizes["sample"]
        flips = int((sw["pred"].values != sw["pred"].sel(intervention="none").values[None]).sum())
        assert int(got["flips"].iloc[0]) == flips


def test_intervene_can_skip_only_the_apriori_candidates(tiny, glue_dir, tmp_path):
    """``--skip-layers candidates`` skips exactly the layers `analyze` lists as a-priori candidates."""
    from bertology.cli import main
    from bertology.store.sweep import open_sweep

    for task in ("sst2", "mrpc"):
        cand = pd.read_parquet(tiny / task / "analysis" / "skip_candidates.parquet")
        want = sorted(cand.loc[cand["candidate"], "layer"].astype(int))
        out = tmp_path / f"{task}.sweep"
        rc = main(["intervene", "--model", str(tiny / task / "model"), "--store", str(tiny / task / "dev.zarr"),
                   "--out", str(out), "--families", "skip", "--skip-layers", "candidates", "--train-limit", "40",
                   "--glue-dir", str(glue_dir), "--quiet"])
        assert rc == 0
        sw = open_sweep(out)
        assert want and sw["skip"].values.tolist() == [0, *want]
        assert list(sw["intervention"].values) == ["none", *(f"skip:{layer}" for layer in want)]
        assert sw.attrs["skip_layers"] == want


def test_attention_tables_reach_the_report_and_the_reference_stores_stay_out_of_the_index(tiny):
    """Every task has pattern shares (summing to 1), token-class attention and the fine-tuning change in the
    report, equal to the analysis tables; the pre-trained attention-only stores are not runs in the index."""
    from bertology.analysis.sql import query

    shares = pd.read_csv(tiny / "report" / "tables" / "attention_patterns.csv")
    change = pd.read_csv(tiny / "report" / "tables" / "attention_finetune.csv")
    tokens = pd.read_csv(tiny / "report" / "tables" / "attention_token_classes.csv")
    for task in TASKS:
        s = shares[shares["task"] == task]
        assert s["share"].sum() == pytest.approx(1.0, abs=1e-6)
        assert ("block" in set(s["pattern"])) == (task in ("mrpc", "stsb", "rte", "qnli"))     # pairs only
        a = pd.read_parquet(tiny / task / "analysis" / "attention_finetune_change.parquet")
        a = a[a["unit"] == "layer"].sort_values("layer")["estimate"].to_numpy()
        c = change[(change["task"] == task) & change["head"].isna()].sort_values("layer")["cosine"].to_numpy()
        np.testing.assert_allclose(c, a, rtol=1e-5)
        assert set(tokens[tokens["task"] == task]["token_class"]) == {"cls", "sep", "punct", "other"}
        assert (tiny / task / "pretrained_dev.zarr").is_dir()
    runs = query(tiny / "bertology.duckdb", "SELECT store_path FROM runs")
    assert not runs["store_path"].str.contains("pretrained_dev").any()
    assert len(runs) == 2 * len(TASKS)                                   # dev and train stores


def test_attribution_reaches_the_report_complete_for_every_task(tiny):
    """The workflow's attribution: every task, every scope, completeness within float16 storage error."""
    comp = pd.read_csv(tiny / "report" / "tables" / "attribution_completeness.csv")
    assert set(comp["task"]) == set(TASKS) and comp["scope"].nunique() == 6
    assert comp["max_relative_error"].max() < 1e-2
    sim = pd.read_csv(tiny / "report" / "tables" / "attribution_similarity.csv")
    assert set(sim["task"]) == set(TASKS) and sim["spearman"].between(-1, 1).all()
    for task in TASKS:
        timings = (tiny / task / "analysis" / "timings.json").read_text()
        assert '"ig_seconds_per_sentence_layer"' in timings
        assert "seconds" not in (tiny / task / "analysis" / "analysis.json").read_text()  # reruns: identical


def test_readme_flip_query_runs_on_the_index(tiny):
    from bertology.analysis.sql import query

    readme = (REPO / "README.md").read_text()
    q = re.search(r"Which samples flip when layer 4 is skipped.*?```sql\n(.*?)```", readme, re.S).group(1)
    got = query(tiny / "bertology.duckdb", q.replace("skip:4", "skip:2"))   # the tiny model has 2 layers
    expect = query(tiny / "bertology.duckdb", "SELECT count(*) AS n FROM intervention_predictions "
                                              "WHERE intervention = 'skip:2' AND flipped")
    assert len(got) == int(expect["n"].iloc[0])


def test_report_errors_name_the_problem(tiny, tmp_path):
    from bertology.reports import build_report

    with pytest.raises(BertologyError, match="no such results folder"):
        build_report(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(BertologyError, match="task"):
        build_report(tiny, tmp_path / "out", tasks=["sst2", "wnli"])


def test_report_renders_in_headless_chromium(tiny, tmp_path):
    chromium, why = _chromium()
    if chromium is None:
        pytest.skip(why)
    shot = tmp_path / "report.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                           f"--screenshot={shot}", (tiny / "report" / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    size, ink = _non_blank(shot.read_bytes())
    assert size == (1280, 2400)
    assert ink > 0.05, f"the screenshot is (nearly) blank: {ink:.1%} of pixels not white"


def test_the_tiny_profile_with_two_seeds_and_the_baselines_runs_end_to_end(glue_dir, tmp_path):
    """config/tiny-seeds.yaml (two seeds) on two tasks, with Kovaleva's baselines: each seed its own run with
    its seed, on the same dev samples, compared with the other seed and the pre-trained model; the across-seeds
    tables and the comparisons in the index; the report's across section."""
    from bertology.analysis.sql import query
    from bertology.store.sweep import open_sweep

    overlay = tmp_path / "two_tasks.yaml"
    overlay.write_text("tasks: [sst2, rte]\nbaselines: [pretrained, random_init]\n")
    results = tmp_path / "results"
    proc = snakemake(results, glue_dir, configfile=[REPO / "config" / "tiny.yaml", REPO / "config" / "tiny-seeds.yaml",
                                                   overlay])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    db = results / "bertology.duckdb"
    runs = query(db, "SELECT task, seed, run_id FROM runs WHERE split = 'dev' ORDER BY task, seed")
    assert list(zip(runs["task"], runs["seed"])) == [("rte", 0), ("rte", 1), ("sst2", 0), ("sst2", 1)]
    for task in ("sst2", "rte"):
        stores = [open_store(results / task / f"seed-{s}" / "dev.zarr") for s in (0, 1)]
        assert (stores[0]["sample"].values == stores[1]["sample"].values).all()      # the same dev samples
        assert stores[0].attrs["model_sha256"] != stores[1].attrs["model_sha256"]   # two fine-tunings
        assert [open_sweep(results / task / f"seed-{s}" / "dev.sweep").attrs["seed"] for s in (0, 1)] == [0, 1]
        acc = [pd.read_parquet(results / task / f"seed-{s}" / "analysis" / "task_metrics.parquet")
               .set_index("statistic").at["accuracy", "estimate"] for s in (0, 1)]
        var = query(db, f"SELECT v.* FROM seed_variability v JOIN run_sets USING (set_id) WHERE run_sets.task = "
                        f"'{task}' AND v.source = 'task_metrics' AND v.statistic = 'accuracy'")
        assert len(var) == 1 and var["mean"].iloc[0] == pytest.approx(np.mean(acc))
        d = query(db, f"SELECT s.estimate FROM compare_summary s JOIN compares c USING (compare_id) WHERE c.task = "
                      f"'{task}' AND s.statistic = 'delta_accuracy' AND c.a_path LIKE '%seed-1%' AND "
                      f"c.b_path LIKE '%seed-0%'")
        assert len(d) == 1 and d["estimate"].iloc[0] == pytest.approx(acc[1] - acc[0], abs=1e-12)
        base = query(db, f"SELECT baseline FROM baselines b JOIN run_sets USING (set_id) WHERE run_sets.task = '{task}'")
        assert set(base["baseline"]) == {"pretrained", "random_init", "finetuned"}
    pre = query(db, "SELECT count(*) AS n FROM compares WHERE b_path LIKE '%pretrained_analysis%'")
    assert pre["n"].iloc[0] == 2
    stab = query(db, "SELECT DISTINCT finding FROM seed_stability")
    assert {"skip_candidate", "best_head_removal", "significant_heads"} <= set(stab["finding"])
    html = (results / "report" / "index.html").read_text()
    assert "Across seeds and runs" in html and "Baselines (Kovaleva et al. 2019, Table 1)" in html
    assert (results / "report" / "tables" / "seed_variability.csv").is_file()
    dry = snakemake(results, glue_dir, "--dry-run", configfile=[REPO / "config" / "tiny.yaml",
                                                                REPO / "config" / "tiny-seeds.yaml", overlay])
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
