"""Finding 2: the FFN's dual role (the ffn_roles analysis)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertology.analysis import published as P

from .. import figures
from ..collect import ReportData
from ..render import PUBLISHED_NOTE, ci, esc, image_html, pct_ci, table_html
from .common import Section, Tables, csv_link, md_table, section


def _ffn_rows(df: pd.DataFrame, tasks: list[str], stat: str = "ratio") -> tuple[list[str], list[list], set[int]]:
    header = ["layer", "depth"] + [t.upper() for t in tasks]
    if stat == "ratio":
        header.append(P.LABEL)
    rows = []
    for r in df.itertuples():
        row = [r.layer, f"{r.relative_depth:.2f}"]
        for t in tasks:
            e, lo, hi = (getattr(r, f"{t}_{stat}"), getattr(r, f"{t}_{stat}_ci_low"),
                         getattr(r, f"{t}_{stat}_ci_high"))
            row.append(ci(e, lo, hi) if stat == "ratio" else pct_ci(e, lo, hi))
        if stat == "ratio":
            pub = [p for p in P.FFN_RATIO if not np.isnan(r.published_bert_base_layer)
                   and p.layer == int(r.published_bert_base_layer)]
            row.append(f"{pub[0].value} (layer {pub[0].layer} of 12)" if pub else "")
        rows.append(row)
    return header, rows, set()


@section("ffn")
def section_ffn(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 2: the FFN's dual role. Per layer, the structural (class-common) energy of the FFN block's
    update over its classification (class-specific) energy, over [CLS] and over all tokens, beside the
    published BERT-base ratios."""
    scopes = {k.split("_")[-1]: v for k, v in tabs.items() if k.startswith("ffn_ratio_")}
    if "cls" not in scopes and "tokens" not in scopes:
        return None
    inner = ("<p>Each FFN block's update Δ = <code>ln2</code> − <code>ln1</code> split into a class-common "
             "mean (structural), class-specific mean shifts (classification) and a within-class residual; "
             "the ratio is the structural over the classification energy, ‖μ‖² / Σ<sub>c</sub> "
             "π<sub>c</sub>‖μ<sub>c</sub> − μ‖². A ratio far above 1 means the FFN mostly writes the same "
             "vector for every input of the task: structure the later layers rely on, so removing the FFN "
             "breaks the model even where its class-specific part looks unhelpful.</p>"
             + image_html(figures.ffn_ratio(scopes, data.tasks), "FFN structural/classification ratio")
             + f"<p class=\"note\">{esc(PUBLISHED_NOTE)} "
             "Both energies are debiased (the noise of the class means removed); the dashed lines are the plug-in "
             "ratios, whose classification energy carries a noise term of about (k−1)/n · tr Σ<sub>W</sub>, so "
             "that where the class-specific signal is weak they measure mostly noise. Where the classification "
             "energy cannot be told from 0 the ratio has no upper bound: the table writes ≥ its lower bound and "
             "the figure marks that bound with an open triangle.</p>")
    md = []
    for scope, title in (("cls", "over the [CLS] vector"), ("tokens", "over all tokens")):
        if scope not in scopes:
            continue
        h, rows, _ = _ffn_rows(scopes[scope], data.tasks)
        hs, rows_s, _ = _ffn_rows(scopes[scope], data.tasks, "structural_share")
        inner += (f"<h3>Structural / classification ratio, {title} [95% CI]</h3>" + table_html(h, rows)
                  + f"<h3>Structural share of the update's energy, {title}</h3>"
                  + table_html(hs, rows_s) + csv_link(f"ffn_ratio_{scope}"))
        md += md_table(f"## FFN structural / classification ratio, {title} [95% CI]", h, rows)
    inner += (f"<p class=\"sub\">Published for BERT-base: structural share "
              f"{esc(P.FFN_STRUCTURAL_SHARE_FRONT.value)}.</p>")
    return Section("ffn", "The FFN's dual role", inner, md)
