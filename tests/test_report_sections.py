"""The report section by section, on small hand-made tables in the layout of ``reports/tables.py``: each
section's table rows (estimates with their CIs, significance marks, published rows, task order), its
Markdown, and its absence when the results hold nothing for it. No workflow run and no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertology.reports.sections import (SECTIONS, attention, attribution, common, confident_errors, ffn, layers,
                                        make_sections, metrics, provenance, tokens)
from bertology.analysis import published as P
from bertology.reports.collect import ReportData, Run
from bertology.reports.render import table_md

NAN = np.nan


def report_data(*tasks: str, tables: dict | None = None, benchmarks: pd.DataFrame | None = None) -> ReportData:
    """A results folder's data with one run per task (in the order given) and nothing measured."""
    runs = [Run(f"run-{t}", t, meta={}, analysis={}, finetune=None) for t in tasks]
    return ReportData(Path("."), runs, tables or {}, pd.DataFrame(), pd.DataFrame(),
                      pd.DataFrame(columns=["job", "seconds", "max_rss_mb"]) if benchmarks is None else benchmarks)


def est(prefix: str, value, low, high) -> dict:
    return {prefix: value, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


# ---- task metrics ---------------------------------------------------------------------------------------

METRICS = pd.DataFrame([
    {"task": "cola", "glue_metric": "mcc", "n_dev_analysed": 48, **est("accuracy", 0.75, 0.6, 0.875),
     **est("f1", 0.8, 0.7, 0.9), **est("mcc", 0.123456, -0.05, 0.3), "finetune_n_train": 96.0,
     "finetune_epochs": 1.0, "finetune_n_dev": 500.0, "finetune_dev_accuracy": 0.7, "finetune_dev_f1": 0.75,
     "finetune_dev_mcc": 0.2},
    {"task": "sst2", "glue_metric": "accuracy", "n_dev_analysed": 48, **est("accuracy", 0.5, 0.375, 0.625),
     **est("f1", NAN, NAN, NAN), **est("mcc", NAN, NAN, NAN), "finetune_n_train": NAN, "finetune_epochs": NAN,
     "finetune_n_dev": NAN, "finetune_dev_accuracy": NAN, "finetune_dev_f1": NAN, "finetune_dev_mcc": NAN},
    {"task": "stsb", "glue_metric": "pearson", "n_dev_analysed": 48, **est("accuracy", NAN, NAN, NAN),
     **est("pearson", 0.8, 0.7, 0.9), **est("spearman", 0.75, 0.6, 0.85), "finetune_n_train": 96.0,
     "finetune_epochs": 1.0, "finetune_n_dev": 1500.0, "finetune_dev_pearson": 0.81},
    {"task": "mnli", "glue_metric": "accuracy", "n_dev_analysed": 48, **est("accuracy", 0.5, 0.375, 0.625),
     **est("macro_f1", 0.45, 0.3, 0.6), **est("mcc", 0.25, 0.1, 0.4), "finetune_n_train": NAN,
     "finetune_epochs": NAN, "finetune_n_dev": NAN, "finetune_dev_accuracy": NAN},
])


def test_metric_rows_show_each_estimate_with_its_ci_and_the_fine_tuning_record():
    header, rows = metrics._metric_rows(METRICS)
    assert header == ["task", "GLUE metric", "n analysed", "accuracy", "F1 (macro-F1)", "MCC", "Pearson / Spearman",
                      "fine-tune: train × epochs", "fine-tune: GLUE metric on all dev"]
    assert rows == [["COLA", "mcc", 48, "0.75 [0.6, 0.875]", "0.8 [0.7, 0.9]", "0.123 [-0.05, 0.3]", "–", "96 × 1",
                     "0.2 (n = 500)"],
                    ["SST2", "accuracy", 48, "0.5 [0.375, 0.625]", "–", "–", "–", "–", "–"],
                    ["STSB", "pearson", 48, "–", "–", "–", "0.8 [0.7, 0.9] / 0.75 [0.6, 0.85]", "96 × 1",
                     "0.81 (n = 1500)"],
                    ["MNLI", "accuracy", 48, "0.5 [0.375, 0.625]", "(0.45 [0.3, 0.6])", "0.25 [0.1, 0.4]", "–", "–",
                     "–"]]


def test_metrics_section_holds_its_table_in_markdown_and_html():
    s = metrics.section_metrics(report_data("cola", "sst2"), {"metrics": METRICS.iloc[:2]})
    assert (s.key, s.title) == ("metrics", "Task metrics")
    assert s.md_lines[:2] == ["## Task metrics", ""] and s.md_lines[-1] == ""
    table = s.md_lines[2].splitlines()
    assert table[0] == ("| task | GLUE metric | n analysed | accuracy | F1 (macro-F1) | MCC | Pearson / Spearman | "
                        "fine-tune: train × epochs | fine-tune: GLUE metric on all dev |")
    assert table[2:] == ["| COLA | mcc | 48 | 0.75 [0.6, 0.875] | 0.8 [0.7, 0.9] | 0.123 [-0.05, 0.3] | – | 96 × 1 | "
                         "0.2 (n = 500) |",
                         "| SST2 | accuracy | 48 | 0.5 [0.375, 0.625] | – | – | – | – | – |"]
    assert '<td class="">0.123 [-0.05, 0.3]</td>' in s.html
    assert '<a href="tables/metrics.csv">tables/metrics.csv</a>' in s.html


# ---- separability and skip candidates -------------------------------------------------------------------

def test_layer_by_task_follows_the_task_order_and_marks_missing_cells():
    sep = pd.DataFrame([  # rows in no particular order; MRPC has no layer 0
        {"task": "mrpc", "layer": 1, **est("fisher_trace", 0.004, 0.001, 0.0095)},
        {"task": "cola", "layer": 1, **est("fisher_trace", 2.25, 2.0, 2.5)},
        {"task": "cola", "layer": 0, **est("fisher_trace", 1.5, 1.2, 1.8)},
    ])
    header, rows = common.layer_by_task(sep, ["cola", "mrpc"], "fisher_trace")
    assert header == ["layer", "COLA", "MRPC"]
    assert rows == [[0, "1.5 [1.2, 1.8]", "–"], [1, "2.25 [2, 2.5]", "0.004 [0.001, 0.0095]"]]


def test_layer_means_reads_the_bare_interval_columns():
    fc = pd.DataFrame([{"task": "sst2", "layer": 2, "head": 0, "cosine": 0.91, "ci_low": 0.88, "ci_high": 0.94}])
    assert common.layer_means(fc, ["sst2"], "cosine") == (["layer", "SST2"], [[2, "0.91 [0.88, 0.94]"]])


def skip_candidate(task, layer, delta, low, high, p_adj, candidate) -> dict:
    return {"task": task, "layer": layer, "site": "ln2", "delta_of": "fisher_trace", "delta": delta, "ci_low": low,
            "ci_high": high, "p": p_adj, "p_adj": p_adj, "rank": layer, "candidate": candidate,
            "rule": "delta <= 0, else lowest"}


def test_skip_rows_list_every_candidate_of_a_task_and_none_where_there_is_none():
    sk = pd.DataFrame([skip_candidate("rte", 1, -0.05, -0.1, 0.02, 0.5, True),
                       skip_candidate("rte", 2, -0.1, -0.2, 0.05, 0.4, True),
                       skip_candidate("cola", 1, 0.3, 0.2, 0.4, 0.01, False),
                       skip_candidate("cola", 2, 0.1, 0.05, 0.2, 0.03, False)])
    header, rows = layers._skip_rows(sk, ["cola", "sst2", "rte"])           # SST2 has no rows: left out
    assert header == ["task", "candidate layer(s)", "Δ of", "Δ at the candidate [95% CI]", "p (Holm)", "rule"]
    assert rows == [["COLA", "none", "fisher_trace", "–", "–", "delta <= 0, else lowest"],
                    ["RTE", "1, 2", "fisher_trace", "-0.05 [-0.1, 0.02]; -0.1 [-0.2, 0.05]", "0.5; 0.4",
                     "delta <= 0, else lowest"]]


# ---- layer skipping with a compensation classifier ------------------------------------------------------

def layer_skip(task, layer, skipped, comp, comp_low, comp_high, delta, low, high, p_adj, units, flops, apriori):
    return {"task": task, "score": "accuracy", "skipped_layer": layer, "baseline": 0.75, "skipped": skipped,
            "compensated": comp, "compensated_ci_low": comp_low, "compensated_ci_high": comp_high,
            "delta": delta, "ci_low": low, "ci_high": high, "p": p_adj, "p_adj": p_adj, "hidden_units": units,
            "flops_saved": flops, "apriori_candidate": apriori}


LAYER_SKIP = pd.DataFrame([
    layer_skip("cola", None, 0.75, 0.74, 0.6, 0.85, -0.01, -0.05, 0.03, 1.0, 8, 0.0, False),
    layer_skip("cola", 1, 0.5, 0.7, 0.55, 0.82, -0.05, -0.15, 0.02, 0.25, 16, 0.5, True),
    layer_skip("cola", 2, 0.25, 0.6, 0.5, 0.7, -0.15, -0.25, -0.01, 0.02, 4, 0.5, False),
    layer_skip("sst2", 1, 0.5, 0.6, 0.5, 0.7, -0.1, -0.2, -0.02, 0.01, 4, 0.5, True),
])
MEASURED = pd.DataFrame([{"task": "cola", "layer": 1, "wall_saved": 0.4}])   # index table: wall time measured
APRIORI = pd.DataFrame([
    {"task": "cola", "skip_accuracy_with": "original_head", "candidates": "1", "best_skip": 2, "top1_hit": False,
     "spearman_rho": -0.5, "p": 0.3, "n": 2},
    {"task": "cola", "skip_accuracy_with": "compensated", "candidates": "1", "best_skip": 1, "top1_hit": True,
     "spearman_rho": 0.5, "p": 0.3, "n": 2},
    {"task": "sst2", "skip_accuracy_with": "original_head", "candidates": "", "best_skip": 1, "top1_hit": None,
     "spearman_rho": NAN, "p": NAN, "n": 1},
    {"task": "sst2", "skip_accuracy_with": "compensated", "candidates": "", "best_skip": 1, "top1_hit": None,
     "spearman_rho": NAN, "p": NAN, "n": 1},
])


def test_skip_table_marks_the_control_and_the_apriori_candidate_and_the_measured_wall_time():
    header, rows = layers._skip_table(LAYER_SKIP, MEASURED)
    assert header == ["task", "skipped layer", "baseline", "original head", "compensated [95% CI]", "Δ [95% CI]",
                      "p (Holm)", "hidden units", "FLOPs saved", "wall time saved"]
    assert rows == [
        ["COLA", "none (control)", "0.75", "0.75", "0.74 [0.6, 0.85]", "-0.01 [-0.05, 0.03]", "1", 8, "–", "–"],
        ["COLA", "1 ★", "0.75", "0.5", "0.7 [0.55, 0.82]", "-0.05 [-0.15, 0.02]", "0.25", 16, "50.0%", "40.0%"],
        ["COLA", "2", "0.75", "0.25", "0.6 [0.5, 0.7]", "-0.15 [-0.25, -0.01]", "0.02", 4, "50.0%", "–"],
        ["SST2", "1 ★", "0.75", "0.5", "0.6 [0.5, 0.7]", "-0.1 [-0.2, -0.02]", "0.01", 4, "50.0%", "–"],
    ]


def test_apriori_rows_compare_the_choice_with_the_actual_skips_beside_the_published_result():
    header, rows, pub = layers._apriori_rows(APRIORI, LAYER_SKIP)
    assert header[:2] == ["task", "a-priori candidate"] and len(header) == 6
    assert rows == [
        ["COLA", "1", "2 / 1", "no / yes", "layers 1", "-0.5 / 0.5"],    # layer 2's CI stays below 0: a loss
        ["SST2", "none", "1 / 1", "n/a (not every layer skipped) / n/a (not every layer skipped)", "no layer",
         "– / –"],
        [P.LABEL, "", "", "a-priori choice matched the actual skip on 4 of 5 tasks", "lossless on 3 of 5 GLUE tasks",
         ""],
    ]
    assert pub == {2}


def test_skip_section_shows_both_tables_and_marks_the_published_row():
    s = layers.section_skip(report_data("cola", "sst2", tables={"layer_skip": MEASURED}),
                       {"layer_skip": LAYER_SKIP, "apriori_validation": APRIORI})
    h2, rows2, _ = layers._apriori_rows(APRIORI, LAYER_SKIP)
    h, rows = layers._skip_table(LAYER_SKIP, MEASURED)
    assert s.md_lines == ["## Layer skipping: a-priori choice against the actual skips", "", table_md(h2, rows2), "",
                          "## Layer skipping with a compensation classifier", "", table_md(h, rows), ""]
    assert '<tr class="pub"><td class="l">published, BERT-base</td>' in s.html
    assert s.html.index("tables/apriori_validation.csv") < s.html.index("tables/layer_skip.csv")


# ---- removals -------------------------------------------------------------------------------------------

def removal(task, kind, layer, delta, low, high, p_adj) -> dict:
    return {"task": task, "score": "accuracy", "kind": kind, "layer": layer, "baseline": 0.75, "value": 0.75 + delta,
            "delta": delta, "ci_low": low, "ci_high": high, "p": p_adj, "p_adj": p_adj, "flipped": 3}


def test_removal_rows_order_the_kinds_and_star_only_corrected_p_below_005():
    rm = pd.DataFrame([removal("cola", "ffn", 1, -0.25, -0.4, -0.1, 0.01),
                       removal("sst2", "ffn", 1, -0.1, -0.2, 0.0, 0.05),           # p = 0.05 exactly: no star
                       removal("cola", "skip", 2, -0.5, -0.6, -0.4, 0.001),
                       removal("sst2", "skip", 1, 0.02, -0.05, 0.1, 0.6),
                       removal("cola", "skip", 1, 0.0, -0.1, 0.1, 1.0)])
    header, rows = layers._removal_rows(rm, ["cola", "sst2"])
    assert header == ["kind", "layer", "COLA", "SST2"]
    assert rows == [["skip", 1, "0 [-0.1, 0.1]", "0.02 [-0.05, 0.1]"],
                    ["skip", 2, "-0.5 [-0.6, -0.4] *", "–"],
                    ["ffn", 1, "-0.25 [-0.4, -0.1] *", "-0.1 [-0.2, 0]"]]


# ---- attention ------------------------------------------------------------------------------------------

def test_pattern_rows_leave_block_undefined_for_single_sentences_and_end_with_the_published_range():
    shares = {"vertical": (0.4, 0.3, 0.5), "diagonal": (0.1, 0.05, 0.15), "vertical+diagonal": (0.05, 0.02, 0.08),
              "block": (0.2, 0.1, 0.3), "heterogeneous": (0.25, 0.2, 0.3)}
    ps = pd.DataFrame([{"task": t, "pattern": p, "share": v, "ci_low": lo, "ci_high": hi, "n": 96, "thresholds": "{}"}
                       for t in ("sst2", "mrpc") for p, (v, lo, hi) in shares.items()
                       if not (t == "sst2" and p == "block")])
    header, rows, pub = attention._pattern_rows(ps)
    assert header == ["task", "vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous"]
    assert rows == [["SST2", "0.4 [0.3, 0.5]", "0.1 [0.05, 0.15]", "0.05 [0.02, 0.08]", "n/a (single sentences)",
                     "0.25 [0.2, 0.3]"],
                    ["MRPC", "0.4 [0.3, 0.5]", "0.1 [0.05, 0.15]", "0.05 [0.02, 0.08]", "0.2 [0.1, 0.3]",
                     "0.25 [0.2, 0.3]"],
                    [P.LABEL, "", "", "", "", "32% (MRPC) – 61% (QQP)"]]
    assert pub == {2}


# ---- attribution ----------------------------------------------------------------------------------------

def test_similarity_rows_per_map_variant_with_the_published_bert_base_row():
    sim = pd.DataFrame([{"task": "cola", "maps": m, "previous": prev, "scope": s, "spearman": v, "ci_low": lo,
                         "ci_high": hi, "n": 16, "published": NAN}
                        for m, vals in (("norm", (0.5, 0.9)), ("row_normalised", (0.3, 0.2)))
                        for (prev, s), v in zip((("ATTN-W", "ATTN-N"), ("ATTN-N", "ATTNRES-N")), vals)
                        for lo, hi in [(v - 0.1, v + 0.05)]])
    header, rows, pub = attribution._similarity_rows(sim)
    assert header == ["task", "maps", "ATTN-N vs previous", "ATTNRES-N vs previous"]
    assert rows == [["COLA", "norm", "0.5 [0.4, 0.55]", "0.9 [0.8, 0.95]"],
                    ["COLA", "row-normalised", "0.3 [0.2, 0.35]", "0.2 [0.1, 0.25]"],
                    [P.LABEL + " (2023, Wikipedia)", "", "0.48", "0.41"]]
    assert pub == {2}


def test_amp_pair_rows_keep_the_top_three_pairs_of_each_layer():
    pairs = [("un", "##able", 0.1234, 5), ("the", "cat", 0.1, 3), ("a", "b", 0.05, 2), ("x", "y", 0.01, 1)]
    pr = pd.DataFrame([{"task": "cola", "layer": 1, "rank": i + 1, "input_token": a, "output_token": b, "ff_amp": v,
                        "n": n} for i, (a, b, v, n) in enumerate(pairs)])
    assert attribution._amp_pair_rows(pr) == (["task", "layer", "input → output (FF-amp, count)"],
                                    [["COLA", 1, "un → ##able (0.123, 5); the → cat (0.100, 3); a → b (0.050, 2)"]])


# ---- the FFN's dual role --------------------------------------------------------------------------------

FFN_RATIO = pd.DataFrame([
    {"layer": 1, "relative_depth": 0.5, **est("cola_ratio", 150.0, 100.0, 200.0),
     **est("cola_structural_share", 0.9, 0.85, 0.95), "published_bert_base_ratio": 150.0,
     "published_bert_base_layer": 1.0},
    {"layer": 2, "relative_depth": 1.0, **est("cola_ratio", 2.5, 1.5, 4.0),
     **est("cola_structural_share", 0.6, 0.5, 0.7), "published_bert_base_ratio": 2.0,
     "published_bert_base_layer": 12.0},
])


def test_ffn_rows_show_the_ratio_beside_the_published_value_at_the_same_depth():
    header, rows, _ = ffn._ffn_rows(FFN_RATIO, ["cola"])
    assert header == ["layer", "depth", "COLA", P.LABEL]
    assert rows == [[1, "0.50", "150 [100, 200]", "~150× (layer 1 of 12)"],
                    [2, "1.00", "2.5 [1.5, 4]", "~2× (layer 12 of 12)"]]
    header, rows, _ = ffn._ffn_rows(FFN_RATIO, ["cola"], "structural_share")
    assert header == ["layer", "depth", "COLA"]
    assert rows == [[1, "0.50", "90.0% [85.0%, 95.0%]"], [2, "1.00", "60.0% [50.0%, 70.0%]"]]


# ---- confident-wrong errors -----------------------------------------------------------------------------

CONFIDENT = pd.DataFrame([{"task": "cola", "n": 48, "margin_threshold": 0.3, **est("errors", 12.0, 8.0, 16.0),
                           **est("error_rate", 0.25, 0.17, 0.33), **est("confident_share", 0.75, 0.5, 0.9167),
                           **est("mean_margin", 0.4, 0.3, 0.5), **est("no_layer_right_share", 0.25, 0.1, 0.4),
                           "published_bert_base_confident_share_low": 0.6,
                           "published_bert_base_confident_share_high": 0.93}])


def test_confident_rows_give_shares_as_percentages_and_end_with_the_published_range():
    header, rows, pub = confident_errors._confident_rows(CONFIDENT)
    assert header == ["task", "n", "errors", "high-confidence share", "mean margin", "no layer right"]
    assert rows == [["COLA", 48, "12 [8, 16]", "75.0% [50.0%, 91.7%]", "0.4 [0.3, 0.5]", "25.0% [10.0%, 40.0%]"],
                    [P.LABEL, "", "", "60–93% (range over tasks)", "", ""]]
    assert pub == {1}


def test_errors_section_names_the_margin_threshold_and_embeds_its_figure():
    s = confident_errors.section_errors(report_data("cola"), {"confident_wrong": CONFIDENT})
    assert s.key == "errors"
    assert s.md_lines[0] == "## Confident-wrong errors (margin > 0.3) [95% CI]"
    assert "| COLA | 48 | 12 [8, 16] | 75.0% [50.0%, 91.7%] | 0.4 [0.3, 0.5] | 25.0% [10.0%, 40.0%] |" in s.md_lines[2]
    assert "exceeds 0.3." in s.html and s.html.count('src="data:image/png;base64,') == 1


# ---- token activation strength --------------------------------------------------------------------------

def test_token_rows_show_subword_shares_at_the_corpus_threshold_only():
    def share(level, threshold, bucket, category, v, n):
        return {"task": "cola", "layer": 2, "site": "ln2", "level": level, "threshold": threshold, "bucket": bucket,
                "category": category, "share": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": n}
    ts = pd.DataFrame([share("subword", "corpus", "HIGH", "content", 0.5, 40),
                       share("subword", "corpus", "HIGH", "function", 0.3, 40),     # no punctuation among HIGH
                       share("subword", "corpus", "LOW", "content", 0.2, 120),
                       share("subword", "corpus", "LOW", "function", 0.6, 120),
                       share("subword", "corpus", "LOW", "punctuation", 0.2, 120),
                       share("word", "corpus", "HIGH", "content", 0.99, 30),        # other levels and thresholds
                       share("subword", "sentence", "HIGH", "content", 0.98, 35)])  # are in the CSV only
    header, rows = tokens._token_rows(ts, ["cola", "rte"])
    assert header == ["task", "layer", "bucket", "content", "function", "punctuation", "n tokens"]
    assert rows == [["COLA", 2, "HIGH", "50.0% [40.0%, 60.0%]", "30.0% [20.0%, 40.0%]", "–", 40],
                    ["COLA", 2, "LOW", "20.0% [10.0%, 30.0%]", "60.0% [50.0%, 70.0%]", "20.0% [10.0%, 30.0%]", 120]]


# ---- provenance and run times ---------------------------------------------------------------------------

PROVENANCE = pd.DataFrame([{"task": "cola", "bertology_version": "0.1.0", "git_commit": "abc123", "finetune_seed": 0.0},
                           {"task": "sst2", "bertology_version": "0.1.0", "git_commit": "abc123", "finetune_seed": NAN}])
BENCHMARKS = pd.DataFrame([{"job": "finetune_cola", "seconds": 30.0, "max_rss_mb": 500.0},
                           {"job": "extract_dev_cola_x", "seconds": 100.0, "max_rss_mb": 700.0},
                           {"job": "finetune_sst2/seed-1", "seconds": 50.0, "max_rss_mb": 500.0},
                           {"job": "report", "seconds": 20.0, "max_rss_mb": 200.0}])


def test_provenance_rows_are_one_row_per_field_and_one_column_per_task():
    header, rows = provenance._provenance_rows(PROVENANCE)
    assert header == ["", "COLA", "SST2"]
    assert rows == [["bertology_version", "0.1.0", "0.1.0"], ["git_commit", "abc123", "abc123"],
                    ["finetune_seed", 0.0, "–"]]


def test_run_time_rows_sum_the_jobs_of_each_rule_longest_first():
    header, rows, top = provenance._run_time_rows(BENCHMARKS, ["cola", "sst2"])   # a seed's job counts too
    assert header == ["rule", "jobs", "seconds (sum)", "longest job (s)", "share"]
    assert rows == [["extract_dev", 1, "100", "100", "50.0%"], ["finetune", 2, "80", "50", "40.0%"],
                    ["report", 1, "20", "20", "10.0%"]]
    assert top == "extract_dev"


def test_sections_come_in_page_order_and_the_workflow_config_goes_under_provenance():
    data = report_data("cola", "sst2", benchmarks=BENCHMARKS)
    sections = make_sections(data, {"metrics": METRICS, "provenance": PROVENANCE}, {"seed": 7})
    assert [s.key for s in sections] == ["metrics", "provenance", "runtime"]
    shown, runtime = sections[1], sections[2]
    assert shown.md_lines == ["## Provenance", "", table_md(*provenance._provenance_rows(PROVENANCE)), ""]
    assert "commit <code>abc123</code>" in shown.html
    assert '<h3>Workflow configuration</h3><pre>{\n  &quot;seed&quot;: 7\n}</pre>' in shown.html
    assert "200 s summed over 4 jobs; <b>extract_dev</b> dominates" in runtime.html
    assert runtime.md_lines[0] == "## Run times (Snakemake benchmarks)"
    assert "<h3>Workflow configuration</h3>" not in provenance.section_provenance(data, {"provenance": PROVENANCE}).html


@pytest.mark.parametrize("section", list(SECTIONS.values()), ids=lambda f: f.__name__)
def test_a_section_is_left_out_when_the_results_hold_nothing_for_it(section):
    assert section(report_data("cola"), {}, {"seed": 7}) is None


def test_every_section_an_analysis_lists_is_registered_and_the_page_follows_the_registry():
    from bertology.analysis.registry import sections
    from bertology.reports.sections import REPORT_ONLY, order

    assert order() == [*sections(), *REPORT_ONLY]
    assert set(SECTIONS) == set(order())
    keys = order()
    assert keys[0] == "metrics" and keys.index("separability") < keys.index("skip") < keys.index("ffn")
