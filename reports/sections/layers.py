"""Finding 1: separability per layer, the a-priori skip candidates, layer skipping with compensation, and the
removals of FFNs, attention and heads (the separability and interventions analyses)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertology.analysis import published as P

from bertology.store.schema import is_regression

from .. import figures
from ..collect import ReportData
from ..render import ci, image_html, num, pct, table_html
from .common import Section, Tables, csv_link, layer_by_task, md_table, section


def _skip_rows(sk: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    header = ["task", "candidate layer(s)", "Δ of", "Δ at the candidate [95% CI]", "p (Holm)", "rule"]
    rows = []
    for t in tasks:
        s = sk[sk["task"] == t]
        c = s[s["candidate"].astype(bool)]
        if s.empty:
            continue
        rows.append([t.upper(), ", ".join(str(int(v)) for v in c["layer"]) or "none", s["delta_of"].iloc[0],
                     "; ".join(ci(r.delta, r.ci_low, r.ci_high) for r in c.itertuples()) or "–",
                     "; ".join(num(v) for v in c["p_adj"]) or "–", s["rule"].iloc[0]])
    return header, rows


def _regression_note(data: ReportData, sep: pd.DataFrame) -> str:
    """What separability means for the regression tasks: classes are score bins (or none), and the readout
    is a ridge probe whose cross-validated R² per layer is listed."""
    out = ""
    for run in data.runs:
        if not is_regression(run.meta):
            continue
        bins = (run.analysis.get("config") or {}).get("bins")
        r2 = sep[(sep["task"] == run.task)].sort_values("layer")
        layers = "; ".join(f"layer {int(r.layer)}: {ci(r.probe_r2, r.probe_r2_ci_low, r.probe_r2_ci_high)}"
                           for r in r2.itertuples() if not np.isnan(r.probe_r2))
        classes = (f"its classes are the score bins with edges {', '.join(f'{b:g}' for b in bins)}" if bins else
                   "it has no classes (no score bins were declared), so its Fisher trace is left out")
        out += (f"<p>{run.task.upper()} is a regression: {classes}; its probe is a ridge regression of the score, "
                f"cross-validated R² [95% CI] {layers or 'not measured'}.</p>")
    return out


@section("separability")
def section_separability(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 1's premise: how far each layer separates the classes in the [CLS] vector (Fisher trace
    against its chance level, linear-probe accuracy), and the layers that separability, before any ablation,
    names as a-priori skip candidates (those that add no separability)."""
    sep = tabs.get("separability")
    if sep is None:
        return None
    sk = tabs.get("skip_candidates", pd.DataFrame())
    png = figures.separability(sep, sk)
    h, rows = layer_by_task(sep, data.tasks, "fisher_trace")
    h2, rows2 = _skip_rows(sk, data.tasks) if len(sk) else ([], [])
    inner = ("<p>Class separability of the [CLS] vector after each layer (site <code>ln2</code>; layer 0 is "
             "the embedding output): tr(S<sub>B</sub>)/tr(S<sub>W</sub>), between-class over within-class "
             "scatter, debiased (the noise of the class means removed, so that no signal reads 0 whatever the "
             "dimension; the plug-in value, dashed, sits on a (k−1)/n floor), with its 95% interval as the band "
             "and its chance level under label permutations (dotted: 97.5% of permutations fall below); below, "
             "the accuracy of a linear probe per layer. Circled: the a-priori skip candidates, layers whose "
             "Δ from the layer below is ≤ 0 (or the lowest, when none is), chosen before any ablation.</p>"
             + _regression_note(data, sep)
             + image_html(png, "separability by layer") + "<h3>Fisher trace by layer [95% CI]</h3>"
             + table_html(h, rows) + csv_link("separability")
             + ("<h3>A-priori skip candidates</h3>" + table_html(h2, rows2) + csv_link("skip_candidates")
                if rows2 else ""))
    md = md_table("## Layer separability (Fisher trace of [CLS] at ln2) [95% CI]", h, rows)
    if rows2:
        md += md_table("### A-priori skip candidates", h2, rows2)
    return Section("separability", "Layer separability and skip candidates", inner, md)


def _skip_table(ls: pd.DataFrame, measured: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "skipped layer", "baseline", "original head", "compensated [95% CI]", "Δ [95% CI]",
              "p (Holm)", "hidden units", "FLOPs saved", "wall time saved"]
    wall = {(r.task, int(r.layer)): r.wall_saved for r in measured.itertuples() if pd.notna(r.layer)} \
        if len(measured) else {}
    rows = []
    for r in ls.itertuples():
        control = pd.isna(r.skipped_layer)
        layer = "none (control)" if control else f"{int(r.skipped_layer)}{' ★' if r.apriori_candidate else ''}"
        rows.append([r.task.upper() + (" (Pearson's r)" if r.score == "pearson" else ""), layer, num(r.baseline),
                     num(r.skipped), ci(r.compensated, r.compensated_ci_low, r.compensated_ci_high),
                     ci(r.delta, r.ci_low, r.ci_high), num(r.p_adj), int(r.hidden_units),
                     "–" if control else pct(r.flops_saved),
                     "–" if control else pct(wall.get((r.task, int(r.skipped_layer)), np.nan))])
    return header, rows


def _hit(value) -> str:
    """A top-1 hit: yes, no, or n/a where the sweep skipped only some layers (no best layer to compare)."""
    return "n/a (not every layer skipped)" if value is None or pd.isna(value) else ("yes" if value else "no")


def _apriori_rows(av: pd.DataFrame, ls: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    """Per task: the a-priori skip choice against the actual skips, with the published result as the last row."""
    header = ["task", "a-priori candidate", "best actual skip (original head / compensated)",
              "top-1 hit (original / compensated)", "lossless with compensation (Δ's 95% CI reaches 0)",
              "Spearman ρ, Δ separability vs Δ accuracy (original / compensated)"]
    rows = []
    for task in dict.fromkeys(ls["task"]):
        a = av[av["task"] == task].set_index("skip_accuracy_with") if len(av) else pd.DataFrame()
        t = ls[(ls["task"] == task) & ls["skipped_layer"].notna()]
        lossless = t[t["ci_high"] >= 0]["skipped_layer"].astype(int).tolist()   # no significant loss
        get = lambda k, c: a.at[k, c] if len(a) and k in a.index else np.nan  # noqa: E731
        rows.append([task.upper(), (get("original_head", "candidates") or "none") if len(a) else "–",
                     f"{get('original_head', 'best_skip')} / {get('compensated', 'best_skip')}",
                     f"{_hit(get('original_head', 'top1_hit'))} / {_hit(get('compensated', 'top1_hit'))}",
                     ("layers " + ", ".join(map(str, lossless))) if lossless else "no layer",
                     f"{num(get('original_head', 'spearman_rho'))} / {num(get('compensated', 'spearman_rho'))}"])
    rows.append([P.LABEL, "", "", P.SKIP_APRIORI_HITS.value, P.SKIP_LOSSLESS.value, ""])
    return header, rows, {len(rows) - 1}


@section("skip")
def section_skip(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 1: what skipping each layer costs, with the model's own head and with a small compensation
    classifier retrained on the skipped model's [CLS], what it saves in FLOPs and time, and per task whether
    the a-priori candidate was the best actual skip and which skips are lossless."""
    ls = tabs.get("layer_skip")
    if ls is None:
        return None
    h, rows = _skip_table(ls, data.table("layer_skip"))
    h2, rows2, pub = _apriori_rows(tabs.get("apriori_validation", pd.DataFrame()), ls)
    inner = ("<p>Each layer skipped in turn (its output := its input). <i>Original head</i>: the skipped model "
             "with its own classifier. <i>Compensated</i>: a one-hidden-layer MLP (4, 8 or 16 units, chosen on a "
             "validation part of train) trained on the skipped model's final [CLS] over train examples; Δ is "
             "its dev accuracy minus the unskipped model's, with a 95% CI and the exact McNemar test (Holm "
             "across layers). <i>None (control)</i>: the same MLP on the unskipped model. The a-priori "
             "candidate (★) was chosen from separability before any of these runs. FLOPs saved counts the "
             "encoder's multiply-adds on these samples; wall time saved is measured on this machine (shown "
             "here, not in the reproducible CSV).</p>"
             + "<h3>Per task: a-priori choice against the actual skips</h3>" + table_html(h2, rows2, pub_rows=pub)
             + csv_link("apriori_validation") + "<h3>Every skip</h3>" + table_html(h, rows) + csv_link("layer_skip"))
    md = (md_table("## Layer skipping: a-priori choice against the actual skips", h2, rows2)
          + md_table("## Layer skipping with a compensation classifier", h, rows))
    return Section("skip", "Layer skipping with a compensation classifier", inner, md)


def _removal_rows(rm: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    pearson = set(rm.loc[rm["score"] == "pearson", "task"]) if "score" in rm else set()
    header = ["kind", "layer"] + [t.upper() + (" (Δ Pearson's r)" if t in pearson else "") for t in tasks]
    rows = []
    for kind in ("skip", "ffn", "attn", "heads"):
        k = rm[rm["kind"] == kind]
        for layer in sorted(k["layer"].unique()):
            row = [kind, int(layer)]
            for t in tasks:
                r = k[(k["task"] == t) & (k["layer"] == layer)]
                row.append("–" if r.empty else ci(r["delta"].iloc[0], r["ci_low"].iloc[0], r["ci_high"].iloc[0])
                           + (" *" if r["p_adj"].iloc[0] < 0.05 else ""))
            rows.append(row)
    return header, rows


@section("removals")
def section_removals(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Which parts of each layer the fine-tuned model needs: the accuracy change when the whole layer is
    skipped, its FFN or its attention removed, or its heads made uniform, and when single heads are
    disabled (Kovaleva et al. 2019)."""
    rm = tabs.get("removals")
    if rm is None:
        return None
    h, rows = _removal_rows(rm, data.tasks)
    inner = ("<p>Δ accuracy from the plain model when a layer is skipped, its FFN removed (<code>ff</code> := 0; "
             "residual and LN2 kept), its attention removed (<code>attn</code> := 0), or every head made "
             "uniform over the real tokens (a = 1/n, as Kovaleva et al.; not zeroing). 95% CIs; * marks "
             "p &lt; 0.05 after Holm correction within each kind.</p>"
             + image_html(figures.removals(rm), "removals by layer") + table_html(h, rows) + csv_link("removals"))
    hd = tabs.get("heads")
    if hd is not None:
        n_sig = int((hd["p_adj"] < 0.05).sum())
        better = hd[(hd["delta"] > 0)]
        inner += ("<h3>Disabling single heads</h3><p>Δ accuracy (points) per head, layer × head, and all heads of "
                  f"the layer in the last column; a dot marks p &lt; 0.05 after correction ({n_sig} of {len(hd)} "
                  f"head × task cells). {len(better)} of {len(hd)} single-head removals raise accuracy "
                  "(Kovaleva et al. also find removals that help).</p>"
                  + image_html(figures.head_heatmaps(hd, rm), "head disabling heatmaps") + csv_link("heads"))
    return Section("removals", "Removing FFNs, attention and heads", inner,
                   md_table("## Removals: Δ accuracy by layer [95% CI]", h, rows))
