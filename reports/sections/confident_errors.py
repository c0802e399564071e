"""Finding 3: confident-wrong errors (the confident_errors analysis)."""

from __future__ import annotations

import pandas as pd

from bertology.analysis import published as P

from .. import figures
from ..collect import ReportData
from ..render import ci, image_html, pct_ci, table_html
from .common import Section, Tables, csv_link, md_table, section


def _confident_rows(cw: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    header = ["task", "n", "errors", "high-confidence share", "mean margin", "no layer right"]
    rows = []
    for r in cw.itertuples():
        if not pd.isna(getattr(r, "error_threshold", float("nan"))):   # a regression: no confidence to measure
            rows.append([f"{r.task.upper()} (|error| > {r.error_threshold:g})", r.n,
                         ci(r.errors, r.errors_ci_low, r.errors_ci_high), "does not apply (regression)",
                         "mean |error| " + ci(r.mean_abs_error, r.mean_abs_error_ci_low, r.mean_abs_error_ci_high),
                         pct_ci(r.no_layer_right_share, r.no_layer_right_share_ci_low, r.no_layer_right_share_ci_high)])
            continue
        rows.append([r.task.upper(), r.n, ci(r.errors, r.errors_ci_low, r.errors_ci_high),
                     pct_ci(r.confident_share, r.confident_share_ci_low, r.confident_share_ci_high),
                     ci(r.mean_margin, r.mean_margin_ci_low, r.mean_margin_ci_high),
                     pct_ci(r.no_layer_right_share, r.no_layer_right_share_ci_low, r.no_layer_right_share_ci_high)])
    rows.append([P.LABEL, "", "", P.CONFIDENT_SHARE.value, "", ""])
    return header, rows, {len(rows) - 1}


@section("errors")
def section_errors(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 3: how many of the classifier's errors are confident (large margin for the wrong class), and
    how many no layer's linear probe gets right, beside the published confident share."""
    cw = tabs.get("confident_wrong")
    if cw is None:
        return None
    h, rows, pub = _confident_rows(cw)
    thr = cw["margin_threshold"].dropna().iloc[0] if cw["margin_threshold"].notna().any() else 0.3
    regression = ("" if "error_threshold" not in cw or cw["error_threshold"].isna().all() else
                  " A regression task (STS-B) has no probability to be confident with: its errors are the samples "
                  "whose predicted score is further than the error threshold from the gold score, shown with their "
                  "mean absolute error, and \"confident-wrong\" does not apply to it; its layers' readouts are ridge "
                  "probes, right within the same threshold.")
    classified = cw[cw["confident_share"].notna()]
    inner = (f"<p>Misclassified dev samples; an error is high-confidence when its margin p(predicted) − "
             f"p(true) exceeds {thr:g}. \"No layer right\": the share of errors that no layer's linear probe "
             f"(layers 0…L) classifies correctly, where the representation, not the head, is the limit.{regression}</p>"
             + (image_html(figures.confident_wrong(classified), "confident-wrong share") if len(classified) else "")
             + table_html(h, rows, pub_rows=pub)
             + csv_link("confident_wrong"))
    return Section("errors", "Confident-wrong errors", inner,
                   md_table(f"## Confident-wrong errors (margin > {thr:g}) [95% CI]", h, rows))
