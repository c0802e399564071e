"""The classifiers' own scores (the task_metrics analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..collect import ReportData
from ..render import ci, num, table_html
from .common import Section, Tables, csv_link, md_table, section


def _metric_rows(m: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "GLUE metric", "n analysed", "accuracy", "F1 (macro-F1)", "MCC", "Pearson / Spearman",
              "fine-tune: train × epochs", "fine-tune: GLUE metric on all dev"]
    rows = []
    for r in m.itertuples():
        g = r.glue_metric
        ft = "–" if np.isnan(r.finetune_n_train) else f"{int(r.finetune_n_train)} × {r.finetune_epochs:g}"
        full = getattr(r, f"finetune_dev_{g}")
        full = "–" if np.isnan(full) else f"{num(full)} (n = {int(r.finetune_n_dev)})"
        f1 = ci(r.f1, r.f1_ci_low, r.f1_ci_high) if not np.isnan(r.f1) else \
            ("–" if np.isnan(r.macro_f1) else f"({ci(r.macro_f1, r.macro_f1_ci_low, r.macro_f1_ci_high)})")
        corr = "–" if np.isnan(r.pearson) else (f"{ci(r.pearson, r.pearson_ci_low, r.pearson_ci_high)} / "
                                               f"{ci(r.spearman, r.spearman_ci_low, r.spearman_ci_high)}")
        rows.append([r.task.upper(), g, r.n_dev_analysed, ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high),
                     f1, ci(r.mcc, r.mcc_ci_low, r.mcc_ci_high), corr, ft, full])
    return header, rows


@section("metrics")
def section_metrics(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """How good each fine-tuned classifier is: accuracy, F1 and MCC on the analysed dev samples with their
    95% CIs, beside the GLUE metric fine-tuning recorded on the whole dev split."""
    m = tabs.get("metrics")
    if m is None:
        return None
    h, rows = _metric_rows(m)
    inner = ("<p>The fine-tuned classifier on the dev samples that were analysed (95% CIs: Wilson for accuracy, "
             "the bootstrap for F1 and MCC), and "
             "on the whole dev split as recorded by fine-tuning. GLUE scores CoLA by MCC, MRPC and QQP by F1, "
             "STS-B (a regression of a 0-5 similarity score) by Pearson's r (bootstrap interval; Spearman's ρ "
             "by Fisher's z), the others by accuracy; with more than two classes F1 is the macro-F1.</p>" + table_html(h, rows) + csv_link("metrics"))
    return Section("metrics", "Task metrics", inner, md_table("## Task metrics", h, rows))
