"""Across seeds and runs: what holds over fine-tuning seeds, Kovaleva et al.'s baselines, and the paired
comparisons the workflow made (the across-runs analyses of :mod:`bertology.analysis.across` and
``bertology compare``)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from bertology.analysis.published import KOVALEVA

from ..collect import ReportData
from ..render import ci, esc, num, pct, table_html
from .common import Section, Tables, md_table, section

BASELINE_COLUMNS = (("pretrained", "pre-trained (probe on final [CLS])"),
                    ("random_init", "random init + fine-tuning"), ("finetuned", "fine-tuned"))


def _baselines(b: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    header = ["task", "metric"] + [f"{label}" for _, label in BASELINE_COLUMNS] + ["published (BERT-base)"]
    rows = []
    for task in tasks:
        t = b[b["task"] == task]
        for stat in [s for s in ("accuracy", "f1", "pearson") if (t["statistic"] == s).any()]:
            r = t[t["statistic"] == stat].set_index("baseline")
            cells = [ci(r.at[k, "estimate"], r.at[k, "ci_low"], r.at[k, "ci_high"]) if k in r.index else "–"
                     for k, _ in BASELINE_COLUMNS]
            pub = " / ".join(num(r.at[k, "published"]) if k in r.index else "–" for k, _ in BASELINE_COLUMNS)
            rows.append([task.upper(), stat, *cells, pub if np.isfinite(r["published"]).any() else "not studied"])
    return header, rows


def _stability(st: pd.DataFrame, var: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    header = ["task", "seeds", "GLUE accuracy (STS-B: Pearson's r) over seeds: mean [interval]", "between-seed sd",
              "skip candidates (share of seeds)", "best single-head removal (share)",
              "significant heads: mean Jaccard", "largest attention change in the last two layers"]
    rows = []
    for task in tasks:
        s, v = st[st["task"] == task], var[var["task"] == task]
        acc = v[(v["source"] == "task_metrics") & (v["statistic"] == "accuracy")]
        if acc.empty:   # a regression: its Pearson's r
            acc = v[(v["source"] == "task_metrics") & (v["statistic"] == "pearson")]
        if acc.empty:
            continue
        a = acc.iloc[0]
        skip = s[s["finding"] == "skip_candidate"]
        skip_txt = ", ".join(f"{int(r.layer)}: {pct(r.value)}" for r in skip.itertuples() if r.value > 0) or "none"
        best = s[s["finding"] == "best_head_removal"].sort_values("value", ascending=False)
        best_txt = (f"{best.iloc[0]['intervention'].split(':', 1)[-1]}: {pct(best.iloc[0]['value'])}"
                    + (f" ({len(best)} heads best in some seed)" if len(best) > 1 else "")) if len(best) else "–"
        jac = s[s["finding"] == "significant_heads"]
        last = s[s["finding"] == "finetune_change_last_two_layers"]
        rows.append([task.upper(), ", ".join(map(str, json.loads(a["seeds"]))),
                     ci(a["mean"], a["ci_low"], a["ci_high"]), num(a["sd_between"]), skip_txt, best_txt,
                     num(jac["value"].iloc[0]) if len(jac) else "–", pct(last["value"].iloc[0]) if len(last) else "–"])
    return header, rows


def _separability(var: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    d = var[(var["source"] == "separability") & (var["statistic"] == "delta_fisher_trace")]
    header = ["layer"] + [f"{t.upper()} mean [interval] (sd)" for t in tasks]
    rows = []
    for layer in sorted(d["layer"].dropna().unique()):
        row = [int(layer)]
        for t in tasks:
            r = d[(d["task"] == t) & (d["layer"] == layer)]
            row.append("–" if r.empty else f"{ci(r['mean'].iloc[0], r['ci_low'].iloc[0], r['ci_high'].iloc[0])} "
                                           f"({num(r['sd_between'].iloc[0])})")
        rows.append(row)
    return header, rows


def _name(path: str) -> str:
    """A run's short name in a comparison: seed-S, pre-trained, or its folder."""
    p = PurePosixPath(path)
    if p.name == "pretrained_analysis":
        return "pre-trained"
    return p.parent.name if p.name == "analysis" else p.name


def _comparisons(data: ReportData) -> tuple[list[str], list[list], pd.DataFrame]:
    compares, summary = data.across.get("compares"), data.across.get("compare_summary")
    header = ["task", "A − B", "Δ accuracy [CI]", "McNemar p", "samples that flip", "n"]
    if compares is None or summary is None or compares.empty:
        return header, [], pd.DataFrame()
    rows, out = [], []
    for c in compares.sort_values(["task", "compare_path"]).itertuples():
        d = summary[(summary["compare_id"] == c.compare_id) & (summary["statistic"] == "delta_accuracy")]
        if d.empty:
            continue
        r = d.iloc[0]
        a, b = _name(c.a_path), _name(c.b_path)
        label = f"{a} − {b}" + (" (its classifier head untrained: the per-layer probes and the heads are what "
                                "compare)" if b == "pre-trained" else "")
        rows.append([c.task.upper(), label, ci(r["estimate"], r["ci_low"], r["ci_high"]), num(r["p"]),
                     int(r["flipped"]), int(r["n"])])
        out.append(dict(task=c.task, a=a, b=b, delta_accuracy=r["estimate"], ci_low=r["ci_low"],
                        ci_high=r["ci_high"], p=r["p"], flipped=int(r["flipped"]), n=int(r["n"])))
    return header, rows, pd.DataFrame(out)


@section("across")
def section_across(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """A finding or seed noise: every headline statistic over the fine-tuning seeds (mean, between-seed sd, an
    interval for seeds and sentences), the share of seeds each yes/no finding holds in, Kovaleva's baselines,
    and the paired comparisons of runs (seeds against each other, fine-tuned against pre-trained)."""
    var, st, base = (data.across.get(k, pd.DataFrame()) for k in ("seed_variability", "seed_stability", "baselines"))
    ch, crows, cdf = _comparisons(data)
    if var.empty and base.empty and not crows:
        return None
    tasks = [t for t in data.tasks]
    html, md, csv = [], [], {}
    if not var.empty:
        h, rows = _stability(st, var, tasks)
        html += ["<h3>Over fine-tuning seeds</h3>",
                 "<p>Each task fine-tuned once per seed on the same data and analysed on the same dev samples. The "
                 "interval of a mean over seeds covers both the seeds and the sentences (a random-effects "
                 "interval for seeds crossed with shared sentences: the between-seed half-width, t with S − 1 "
                 "degrees of freedom, and the sentence half-width added in quadrature; with few seeds it is "
                 "wide, as it must be). A yes/no finding is given as the share of seeds in "
                 "which it holds; the significant heads (single-head removals, corrected p &lt; 0.05) as the mean "
                 "Jaccard similarity of the seeds' sets.</p>", table_html(h, rows)]
        md += md_table("### Over fine-tuning seeds", h, rows)
        h, rows = _separability(var, tasks)
        if rows:
            html += ["<p>Δ separability (Fisher trace ratio, layer output) over seeds: a layer whose interval "
                     "holds 0 adds no separability in any seed's sense; the sd says how much the seeds disagree."
                     "</p>", table_html(h, rows)]
            md += md_table("### Δ separability over seeds", h, rows)
        csv["seed_variability"], csv["seed_stability"] = var, st
    if not base.empty:
        h, rows = _baselines(base, tasks)
        html += ["<h3>Baselines (Kovaleva et al. 2019, Table 1)</h3>",
                 "<p>The task metric of the pre-trained model without fine-tuning (a linear probe on its final "
                 "[CLS], fitted on the train split, since its classifier head is untrained), of a randomly "
                 "initialised model of the same shape fine-tuned with the same budget, and of the fine-tuned "
                 f"model (mean over seeds). The published values are BERT-base's ({esc(KOVALEVA)}; pre-trained / "
                 "random init / fine-tuned, as shares): a qualitative reference for a smaller model.</p>",
                 table_html(h, rows)]
        md += md_table("### Baselines (Kovaleva et al. 2019)", h, rows)
        csv["baselines"] = base
    if crows:
        html += ["<h3>Paired comparisons</h3>",
                 "<p><code>bertology compare</code> of two runs on the same samples: the difference A − B with a "
                 "paired bootstrap interval (one weight per sentence for both runs) and McNemar's mid-p; the "
                 "per-layer, per-head and per-sample differences are in the index (<code>compare_*</code>) and "
                 "on the explorer's compare page.</p>", table_html(ch, crows)]
        md += md_table("### Paired comparisons", ch, crows)
        csv["comparisons"] = cdf
    return Section("across", "Across seeds and runs", "\n".join(html), ["## Across seeds and runs", "", *md], csv)
