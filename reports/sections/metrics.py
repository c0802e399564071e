"""The classifiers' own scores (the task_metrics analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..collect import ReportData
from ..render import ci, num, table_html
from .common import Section, Tables, csv_link, md_table, section


def _get(r, name: str) -> float:
    """A metric of a row, NaN where the table has no such column (a task scored otherwise)."""
    return getattr(r, name, np.nan)


def _ci(r, name: str) -> str:
    return ci(_get(r, name), _get(r, f"{name}_ci_low"), _get(r, f"{name}_ci_high"))


def _metric_rows(m: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "GLUE metric", "n analysed", "accuracy", "F1 (macro-F1)", "MCC", "Pearson / Spearman",
              "fine-tune: train × epochs", "fine-tune: GLUE metric on all dev"]
    rows = []
    for r in m.itertuples():
        g = r.glue_metric
        ft = "–" if np.isnan(r.finetune_n_train) else f"{int(r.finetune_n_train)} × {r.finetune_epochs:g}"
        full = getattr(r, f"finetune_dev_{g}")
        full = "–" if np.isnan(full) else f"{num(full)} (n = {int(r.finetune_n_dev)})"
        f1 = _ci(r, "f1") if not np.isnan(_get(r, "f1")) else \
            ("–" if np.isnan(_get(r, "macro_f1")) else f"({_ci(r, 'macro_f1')})")
        corr = "–" if np.isnan(_get(r, "pearson")) else f"{_ci(r, 'pearson')} / {_ci(r, 'spearman')}"
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
