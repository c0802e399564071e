"""``bertology report RESULTS_DIR --out DIR``: the reproducible report of a results folder.

Writes ``DIR/index.html`` (one self-contained page: figures embedded, opens from disk with no server or
network), ``DIR/summary.md`` (the same tables in Markdown) and ``DIR/tables/*.csv`` (every table, in the
layout shown). The folder is assembled beside ``DIR`` and renamed into place only when complete, so a crash
never leaves a half-written report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import bertology
from bertology import BertologyError
from bertology.store.location import Location, locate

from . import figures
from bertology.analysis import published as P
from bertology.analysis.vocabulary import PATTERNS, SCOPES, WORD_CATEGORIES
from . import tables as T
from .collect import ReportData, collect
from .render import (PUBLISHED_NOTE, ci, config_block, esc, image_html, num, page, pct, pct_ci, sentence_html,
                     table_html, table_md)

TITLE = "bertology report"


def _metric_rows(m: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "GLUE metric", "n analysed", "accuracy", "F1", "MCC", "fine-tune: train × epochs",
              "fine-tune: GLUE metric on all dev"]
    rows = []
    for r in m.itertuples():
        g = r.glue_metric
        ft = "–" if np.isnan(r.finetune_n_train) else f"{int(r.finetune_n_train)} × {r.finetune_epochs:g}"
        full = getattr(r, f"finetune_dev_{g}")
        full = "–" if np.isnan(full) else f"{num(full)} (n = {int(r.finetune_n_dev)})"
        rows.append([r.task.upper(), g, r.n_dev_analysed, ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high),
                     ci(r.f1, r.f1_ci_low, r.f1_ci_high), ci(r.mcc, r.mcc_ci_low, r.mcc_ci_high), ft, full])
    return header, rows


def _layer_by_task(df: pd.DataFrame, tasks: list[str], value: str) -> tuple[list[str], list[list]]:
    header = ["layer"] + [t.upper() for t in tasks]
    rows = []
    for layer in sorted(df["layer"].unique()):
        row = [int(layer)]
        for t in tasks:
            r = df[(df["task"] == t) & (df["layer"] == layer)]
            row.append("–" if r.empty else ci(r[value].iloc[0], r[f"{value}_ci_low"].iloc[0],
                                              r[f"{value}_ci_high"].iloc[0]))
        rows.append(row)
    return header, rows


def _layer_means(df: pd.DataFrame, tasks: list[str], value: str) -> tuple[list[str], list[list]]:
    """:func:`_layer_by_task` of a table whose interval columns are the bare ``ci_low`` and ``ci_high``."""
    return _layer_by_task(df.rename(columns={"ci_low": f"{value}_ci_low", "ci_high": f"{value}_ci_high"}), tasks,
                          value)


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


def _confident_rows(cw: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    header = ["task", "n", "errors", "high-confidence share", "mean margin", "no layer right"]
    rows = [[r.task.upper(), r.n, ci(r.errors, r.errors_ci_low, r.errors_ci_high),
             pct_ci(r.confident_share, r.confident_share_ci_low, r.confident_share_ci_high),
             ci(r.mean_margin, r.mean_margin_ci_low, r.mean_margin_ci_high),
             pct_ci(r.no_layer_right_share, r.no_layer_right_share_ci_low, r.no_layer_right_share_ci_high)]
            for r in cw.itertuples()]
    rows.append([P.LABEL, "", "", P.CONFIDENT_SHARE.value, "", ""])
    return header, rows, {len(rows) - 1}


def _token_rows(ts: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    sub = ts[(ts["level"] == "subword") & (ts["threshold"] == "corpus")]
    shown = WORD_CATEGORIES[:3]   # special tokens are never bucketed
    header = ["task", "layer", "bucket", *shown, "n tokens"]
    rows = []
    for t in tasks:
        for bucket in ("HIGH", "LOW"):
            b = sub[(sub["task"] == t) & (sub["bucket"] == bucket)].set_index("category")
            if b.empty:
                continue
            cell = {c: pct_ci(b.at[c, "share"], b.at[c, "ci_low"], b.at[c, "ci_high"]) if c in b.index else "–"
                    for c in shown}
            rows.append([t.upper(), int(b["layer"].iloc[0]), bucket, *cell.values(), int(b["n"].iloc[0])])
    return header, rows


def _skip_table(ls: pd.DataFrame, measured: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "skipped layer", "baseline", "original head", "compensated [95% CI]", "Δ [95% CI]",
              "p (Holm)", "hidden units", "FLOPs saved", "wall time saved"]
    wall = {(r.task, int(r.layer)): r.wall_saved for r in measured.itertuples() if pd.notna(r.layer)} \
        if len(measured) else {}
    rows = []
    for r in ls.itertuples():
        control = pd.isna(r.skipped_layer)
        layer = "none (control)" if control else f"{int(r.skipped_layer)}{' ★' if r.apriori_candidate else ''}"
        rows.append([r.task.upper(), layer, num(r.baseline_accuracy), num(r.skipped_accuracy),
                     ci(r.compensated_accuracy, r.compensated_ci_low, r.compensated_ci_high),
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


def _removal_rows(rm: pd.DataFrame, tasks: list[str]) -> tuple[list[str], list[list]]:
    header = ["kind", "layer"] + [t.upper() for t in tasks]
    rows = []
    for kind in ("skip", "ffn", "attn", "heads"):
        k = rm[rm["kind"] == kind]
        for layer in sorted(k["layer"].unique()):
            row = [kind, int(layer)]
            for t in tasks:
                r = k[(k["task"] == t) & (k["layer"] == layer)]
                row.append("–" if r.empty else ci(r["delta_accuracy"].iloc[0], r["ci_low"].iloc[0], r["ci_high"].iloc[0])
                           + (" *" if r["p_adj"].iloc[0] < 0.05 else ""))
            rows.append(row)
    return header, rows


def _pattern_rows(ps: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    """Task × pattern type shares, with the published heterogeneous range as the last row."""
    names = list(PATTERNS)
    header = ["task", *names]
    rows = []
    for task in dict.fromkeys(ps["task"]):
        t = ps[ps["task"] == task].set_index("pattern")
        rows.append([task.upper(), *[ci(t.at[n, "share"], t.at[n, "ci_low"], t.at[n, "ci_high"]) if n in t.index
                                     else "n/a (single sentences)" for n in names]])
    pub = {len(rows)}
    rows.append([P.LABEL, "", "", "", "", P.HETEROGENEOUS_SHARE.value])
    return header, rows, pub


def _similarity_rows(sim: pd.DataFrame) -> tuple[list[str], list[list], set[int]]:
    """Task × consecutive-scope Spearman ρ (both map variants), with the published BERT-base row."""
    scopes = list(dict.fromkeys(sim["scope"]))
    header = ["task", "maps", *[f"{s} vs previous" for s in scopes]]
    rows = []
    for (task, maps), t in sim.groupby(["task", "maps"], sort=False):
        t = t.set_index("scope")
        rows.append([task.upper(), maps.replace("_", "-"),
                     *[ci(t.at[s, "spearman"], t.at[s, "ci_low"], t.at[s, "ci_high"]) for s in scopes]])
    pub = {len(rows)}
    rows.append([P.LABEL + " (2023, Wikipedia)", "", *[num(P.SCOPE_SIMILARITY.get(s, np.nan)) for s in scopes]])
    return header, rows, pub


def _amp_pair_rows(pr: pd.DataFrame, top: int = 3) -> tuple[list[str], list[list]]:
    header = ["task", "layer", "input → output (FF-amp, count)"]
    rows = []
    for (task, layer), t in pr.groupby(["task", "layer"], sort=False):
        t = t[t["rank"] <= top]
        rows.append([task.upper(), int(layer), "; ".join(f"{r.input_token} → {r.output_token} ({r.ff_amp:.3f}, {int(r.n)})"
                                                         for r in t.itertuples())])
    return header, rows


def _ordered_examples(ex: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """The example map of each pattern type from the first task (in run order) that has one."""
    runs = {r.run_id: i for i, r in enumerate(data.runs)}
    ex = ex.assign(_r=ex["run_id"].map(runs))
    first = ex.groupby("pattern")["_r"].transform("min")
    order = {n: i for i, n in enumerate(PATTERNS)}
    ex = ex[ex["_r"] == first].assign(_p=ex["pattern"].map(order))
    return ex.sort_values(["_p", "query", "key"]).drop(columns=["_p", "_r"])


def _provenance_rows(pv: pd.DataFrame) -> tuple[list[str], list[list]]:
    keys = [c for c in pv.columns if c != "task"]
    header = ["", *[t.upper() for t in pv["task"]]]
    rows = [[k, *[("–" if isinstance(v, float) and np.isnan(v) else v) for v in pv[k]]] for k in keys]
    return header, rows


def _run_time_rows(bench: pd.DataFrame) -> tuple[list[str], list[list], str]:
    rule = bench["job"].str.replace(r"_(cola|sst2|mrpc|rte|qnli)(_.*)?$", "", regex=True)
    per_rule = bench.assign(rule=rule).groupby("rule", sort=False)["seconds"].agg(["count", "sum", "max"])
    per_rule = per_rule.sort_values("sum", ascending=False)
    total = bench["seconds"].sum()
    rows = [[r, int(c), f"{s:.0f}", f"{m:.0f}", pct(s / total)] for r, (c, s, m) in per_rule.iterrows()]
    top = per_rule.index[0] if len(per_rule) else ""
    return ["rule", "jobs", "seconds (sum)", "longest job (s)", "share"], rows, top


Tables = dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Section:
    """One section of the report: its anchor and heading in the page, its HTML and its Markdown lines."""

    key: str
    title: str
    html: str
    md_lines: list[str]


def _csv_link(name: str) -> str:
    return f'<p class="sub">Table: <a href="tables/{name}.csv">tables/{name}.csv</a></p>'


def _md(heading: str, header: list[str], rows: list[list]) -> list[str]:
    """A Markdown heading (with its ``#``s) and the table under it."""
    return [heading, "", table_md(header, rows), ""]


def section_metrics(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """How good each fine-tuned classifier is: accuracy, F1 and MCC on the analysed dev samples with their
    95% CIs, beside the GLUE metric fine-tuning recorded on the whole dev split."""
    m = tabs.get("metrics")
    if m is None:
        return None
    h, rows = _metric_rows(m)
    inner = ("<p>The fine-tuned classifier on the dev samples that were analysed (95% CIs: Wilson for accuracy, "
             "the bootstrap for F1 and MCC), and "
             "on the whole dev split as recorded by fine-tuning. GLUE scores CoLA by MCC, MRPC by F1, the "
             "others by accuracy.</p>" + table_html(h, rows) + _csv_link("metrics"))
    return Section("metrics", "Task metrics", inner, _md("## Task metrics", h, rows))


def section_separability(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 1's premise: how far each layer separates the classes in the [CLS] vector (Fisher trace
    against its chance level, linear-probe accuracy), and the layers that separability, before any ablation,
    names as a-priori skip candidates (those that add no separability)."""
    sep = tabs.get("separability")
    if sep is None:
        return None
    sk = tabs.get("skip_candidates", pd.DataFrame())
    png = figures.separability(sep, sk)
    h, rows = _layer_by_task(sep, data.tasks, "fisher_trace")
    h2, rows2 = _skip_rows(sk, data.tasks) if len(sk) else ([], [])
    inner = ("<p>Class separability of the [CLS] vector after each layer (site <code>ln2</code>; layer 0 is "
             "the embedding output): tr(S<sub>B</sub>)/tr(S<sub>W</sub>), between-class over within-class "
             "scatter, debiased (the noise of the class means removed, so that no signal reads 0 whatever the "
             "dimension; the plug-in value, dashed, sits on a (k−1)/n floor), with its 95% interval as the band "
             "and its chance level under label permutations (dotted: 97.5% of permutations fall below); below, "
             "the accuracy of a linear probe per layer. Circled: the a-priori skip candidates, layers whose "
             "Δ from the layer below is ≤ 0 (or the lowest, when none is), chosen before any ablation.</p>"
             + image_html(png, "separability by layer") + "<h3>Fisher trace by layer [95% CI]</h3>"
             + table_html(h, rows) + _csv_link("separability")
             + ("<h3>A-priori skip candidates</h3>" + table_html(h2, rows2) + _csv_link("skip_candidates")
                if rows2 else ""))
    md = _md("## Layer separability (Fisher trace of [CLS] at ln2) [95% CI]", h, rows)
    if rows2:
        md += _md("### A-priori skip candidates", h2, rows2)
    return Section("separability", "Layer separability and skip candidates", inner, md)


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
             + _csv_link("apriori_validation") + "<h3>Every skip</h3>" + table_html(h, rows) + _csv_link("layer_skip"))
    md = (_md("## Layer skipping: a-priori choice against the actual skips", h2, rows2)
          + _md("## Layer skipping with a compensation classifier", h, rows))
    return Section("skip", "Layer skipping with a compensation classifier", inner, md)


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
             + image_html(figures.removals(rm), "removals by layer") + table_html(h, rows) + _csv_link("removals"))
    hd = tabs.get("heads")
    if hd is not None:
        n_sig = int((hd["p_adj"] < 0.05).sum())
        better = hd[(hd["delta_accuracy"] > 0)]
        inner += ("<h3>Disabling single heads</h3><p>Δ accuracy (points) per head, layer × head, and all heads of "
                  f"the layer in the last column; a dot marks p &lt; 0.05 after correction ({n_sig} of {len(hd)} "
                  f"head × task cells). {len(better)} of {len(hd)} single-head removals raise accuracy "
                  "(Kovaleva et al. also find removals that help).</p>"
                  + image_html(figures.head_heatmaps(hd, rm), "head disabling heatmaps") + _csv_link("heads"))
    return Section("removals", "Removing FFNs, attention and heads", inner,
                   _md("## Removals: Δ accuracy by layer [95% CI]", h, rows))


def section_attention(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Kovaleva et al. (2019) on this model: how often each head's attention map is of each pattern type
    (vertical, diagonal, block, heterogeneous), the dominant type per head, how much attention goes to [CLS],
    [SEP] and punctuation layer by layer, and how much fine-tuning changed the maps."""
    ps = tabs.get("attention_patterns")
    if ps is None:
        return None
    h, rows, pub = _pattern_rows(ps)
    inner = ("<p>Each head's attention map on each dev sample, typed as Kovaleva et al. (2019) type them, by "
             "explicit features (shares of attention mass, averaged over the queries): <i>vertical</i>, mass on "
             "the [CLS]/[SEP] columns; <i>diagonal</i>, mass on the neighbours i±1; <i>vertical+diagonal</i>, "
             "both; <i>block</i>, mass within the query's own sentence of a pair; <i>heterogeneous</i>, none of "
             f"these. Thresholds: <code>{esc(str(ps['thresholds'].iloc[0]))}</code> (documented in "
             "<code>analysis/attention_heads.py</code>; calibrate them on labelled maps with "
             "<code>PatternClassifier.fit</code>). Block is defined for sentence pairs only.</p>"
             + image_html(figures.pattern_shares(ps), "pattern type shares")
             + table_html(h, rows, pub_rows=pub) + _csv_link("attention_patterns"))
    hd = tabs.get("attention_heads")
    if hd is not None:
        inner += ("<h3>Dominant pattern per head</h3>" + image_html(figures.pattern_heatmaps(hd), "pattern per head")
                  + _csv_link("attention_heads"))
    ex = data.table("attention_examples")
    if len(ex):
        inner += ("<h3>One map of each type, from the data</h3><p class=\"sub\">The clearest map of each type "
                  "(largest margin over its threshold) among samples of at most 40 tokens.</p>"
                  + image_html(figures.example_maps(_ordered_examples(ex, data)), "example attention maps"))
    tc = tabs.get("attention_token_classes")
    if tc is not None:
        inner += ("<h3>Attention to [CLS], [SEP] and punctuation, by layer</h3><p>Attention mass each query "
                  "gives to the token class, averaged over queries (which normalises by sequence length, as "
                  "in the paper) and over samples; mean over the heads of the layer, 95% CI; dotted, the mass "
                  "uniform attention would give. Kovaleva et al. find [CLS] attention high in early layers and "
                  "[SEP] attention rising in the middle layers of BERT-base.</p>"
                  + image_html(figures.token_class_trend(tc), "attention to token classes")
                  + _csv_link("attention_token_classes"))
    md = []
    fc = tabs.get("attention_finetune")
    if fc is not None:
        h2, rows2 = _layer_means(fc[fc["head"].isna()], data.tasks, "cosine")
        inner += ("<h3>Change through fine-tuning</h3><p>Cosine similarity between the flattened attention "
                  "maps of the pre-trained model (the checkpoint fine-tuning started from) and the fine-tuned "
                  "model on the same dev samples, averaged over samples (1: unchanged). "
                  f"{esc(P.LABEL)}: {esc(P.FINETUNE_CHANGE.value)} change.</p>"
                  + image_html(figures.finetune_heatmaps(fc), "fine-tuning change per head")
                  + "<h3>Mean over the heads of each layer [95% CI]</h3>" + table_html(h2, rows2)
                  + _csv_link("attention_finetune"))
        md = _md("## Attention change through fine-tuning (cosine, pre-trained vs fine-tuned) [95% CI]", h2, rows2)
    md += _md("## Attention pattern types (share of head × sample maps) [95% CI]", h, rows)
    return Section("attention", "Attention heads: pattern types, special tokens, fine-tuning", inner, md)


def _attribution_example_html(data: ReportData) -> str:
    """The maps of one sentence at every scope: the first analysed sentence of the first task that has one,
    at the middle layer."""
    ex = data.table("attribution_example")
    if not len(ex):
        return ""
    first = ex[ex["run_id"] == next(r.run_id for r in data.runs if (ex["run_id"] == r.run_id).any())]
    layer = int(first["layer"].max() + 1) // 2
    one = first[first["layer"] == layer]
    task = next(r.task for r in data.runs if r.run_id == one["run_id"].iloc[0])
    return (f"<h3>One sentence at each scope ({esc(task.upper())} dev #{int(one['sample_id'].iloc[0])}, "
            f"layer {layer})</h3>" + image_html(figures.attribution_maps(
                one.assign(_s=one["scope"].map({s: i for i, s in enumerate(SCOPES)})).sort_values(
                    ["_s", "output", "input"])), "attribution maps by scope"))


def _ffn_attribution_html(data: ReportData, tabs: Tables) -> str:
    """What the FFN adds to the attribution maps: FF-amp of word-split pairs, the most amplified subword
    pairs, the FFN output's norm beside its bypass, and attention weights against norms by token class."""
    inner = ""
    ws = tabs.get("ff_amp_wordsplit")
    if ws is not None:
        inner += ("<h3>What the FFN amplifies</h3><p>FF-amp: the map after the FFN minus the map before it "
                  "(ATTNRESLN-N), both normalised per output token. Word-split pairs (two subwords of one word) "
                  "against other pairs at the same distances: the difference of mean FF-amp, with an unpaired "
                  "bootstrap CI and p (Holm across layers). After RES2 and LN2 the same difference shows how much "
                  "of the amplification survives (Kobayashi et al. 2023 find it partly cancelled).</p>"
                  + image_html(figures.ff_amp_wordsplit(ws), "FF-amp word-split pairs")
                  + _csv_link("ff_amp_wordsplit"))
    pr = tabs.get("ff_amp_pairs")
    if pr is not None:
        h, rows = _amp_pair_rows(pr)
        inner += ("<h3>Most amplified (input → output) subword pairs, top 3 per layer</h3>"
                  + table_html(h, rows, left=3) + _csv_link("ff_amp_pairs"))
    fn = tabs.get("ffn_norms")
    if fn is not None:
        h, rows = _layer_means(fn, data.tasks, "ff_over_bypass")
        inner += ("<h3>FFN output beside the vector it bypasses</h3><p>‖ff‖ / ‖ln1‖ per token, mean over "
                  "tokens (95% CI). The FFN output's outlier dimensions and LN2's γ at them are in the CSV.</p>"
                  + table_html(h, rows) + _csv_link("ffn_norms"))
    an = tabs.get("attention_norms")
    if an is not None:
        inner += ("<h3>Attention weights vs norms by token class (Kobayashi et al. 2020)</h3><p>Mean over "
                  "heads and tasks: the attention weight a token of the class receives, the norm of its "
                  "transformed vector ‖f(x)‖, and ‖α f(x)‖. The 2020 paper finds [SEP], [CLS] and punctuation "
                  "receive large weights but carry small ‖f(x)‖.</p>"
                  + image_html(figures.attention_norms(an), "attention weights and norms")
                  + _csv_link("attention_norms"))
    return inner


def section_attribution(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Kobayashi et al. (2020, 2021, 2023) on this model: norm-based attribution maps through each scope of a
    layer (attention, residuals, LayerNorms, FFN), how much each scope reorders the previous one's map, and
    what the FFN amplifies."""
    sim = tabs.get("attribution_similarity")
    if sim is None:
        return None
    h, rows, pub = _similarity_rows(sim)
    inner = ("<p>Norm-based attribution through the whole layer (Kobayashi et al. 2020, 2021, 2023): each site "
             "of a layer is a sum of one vector per input token plus a bias term, so output token i's "
             "attribution to input token j is the norm of j's vector, scope by scope: the attention weights "
             "(ATTN-W), the attention's transformed vectors (ATTN-N), + residual (RES), + LayerNorm 1 (LN, "
             "exact, with the actual standard deviation), + FFN (integrated gradients through the activation, "
             "zero baseline), + RES2, + LN2. Completeness is checked on every sentence and layer: the vectors "
             "plus the bias sum to the stored site (largest relative error below). The maps are computed on "
             "the first analysed dev sentences of each task.</p>" + _attribution_example_html(data))
    inner += ("<h3>Similarity of consecutive scopes</h3><p>Spearman ρ between the flattened map of each scope "
              "and the previous scope's, per sentence and layer, averaged (95% CI). <i>norm</i>: the raw norms; "
              "<i>row-normalised</i>: each output token's attributions scaled to sum 1 first. On raw norms a "
              "residual only raises the diagonal, leaving the ranks of the other n² − n pairs in place.</p>"
              + table_html(h, rows, pub_rows=pub) + _csv_link("attribution_similarity"))
    cp = tabs.get("attribution_completeness")
    if cp is not None:
        worst = cp.groupby("scope", sort=False)["max_relative_error"].max()
        inner += ("<p class=\"sub\">Completeness, largest relative error ‖Σ<sub>j</sub> v<sub>ij</sub> + b<sub>i</sub> − "
                  "site<sub>i</sub>‖ / ‖site<sub>i</sub>‖ over every task, sentence and layer: "
                  + "; ".join(f"{esc(k)} {v:.1e}" for k, v in worst.items())
                  + " (the stores hold float16 states).</p>" + _csv_link("attribution_completeness"))
    inner += _ffn_attribution_html(data, tabs)
    return Section("attribution", "Norm-based attribution through the layer", inner,
                   _md("## Attribution: Spearman ρ with the previous scope [95% CI]", h, rows))


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
                  + table_html(hs, rows_s) + _csv_link(f"ffn_ratio_{scope}"))
        md += _md(f"## FFN structural / classification ratio, {title} [95% CI]", h, rows)
    inner += (f"<p class=\"sub\">Published for BERT-base: structural share "
              f"{esc(P.FFN_STRUCTURAL_SHARE_FRONT.value)}.</p>")
    return Section("ffn", "The FFN's dual role", inner, md)


def section_errors(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Finding 3: how many of the classifier's errors are confident (large margin for the wrong class), and
    how many no layer's linear probe gets right, beside the published confident share."""
    cw = tabs.get("confident_wrong")
    if cw is None:
        return None
    h, rows, pub = _confident_rows(cw)
    thr = cw["margin_threshold"].iloc[0]
    inner = (f"<p>Misclassified dev samples; an error is high-confidence when its margin p(predicted) − "
             f"p(true) exceeds {thr:g}. \"No layer right\": the share of errors that no layer's linear probe "
             f"(layers 0…L) classifies correctly, where the representation, not the head, is the limit.</p>"
             + image_html(figures.confident_wrong(cw), "confident-wrong share") + table_html(h, rows, pub_rows=pub)
             + _csv_link("confident_wrong"))
    return Section("errors", "Confident-wrong errors", inner,
                   _md(f"## Confident-wrong errors (margin > {thr:g}) [95% CI]", h, rows))


def _example_sentences_html(data: ReportData) -> str:
    """The example sentences with their HIGH tokens marked, each under its gold and predicted label."""
    if not len(data.samples):
        return ""
    inner = "<h3>Example sentences (HIGH tokens marked; hover for ‖h‖)</h3>"
    for s in data.samples.itertuples():
        toks = data.examples[(data.examples["run_id"] == s.run_id) & (data.examples["sample"] == s.sample_index)]
        verdict = "correct" if s.correct else f"wrong, margin {s.margin:.2f}"
        inner += (f'<p class="sub">{esc(s.task.upper())} dev #{int(s.sample_id)}: gold '
                  f'{esc(s.label_name)}, predicted {esc(s.pred_name)} ({verdict})</p>' + sentence_html(toks))
    return inner


def section_tokens(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Which tokens the model activates strongly: the shares of content words, function words and
    punctuation among the HIGH (upper-quartile ‖h‖) and LOW tokens of the strength layer, with example
    sentences."""
    ts = tabs.get("token_strength_summary")
    if ts is None:
        return None
    h, rows = _token_rows(ts, data.tasks)
    layer_note = ", ".join(f"{t.upper()} layer {int(ts[ts['task'] == t]['layer'].iloc[0])}" for t in data.tasks
                           if (ts["task"] == t).any())
    inner = ("<p>Token activation strength ‖h‖ at <code>ln2</code> of the strength layer (" + esc(layer_note)
             + "); tokens above the corpus-wide upper quartile are HIGH. Shares of content words, function "
             "words and punctuation among HIGH and LOW subword tokens ([CLS]/[SEP] counted apart).</p>"
             + image_html(figures.token_strength(ts), "token strength") + table_html(h, rows)
             + _csv_link("token_strength_summary") + _example_sentences_html(data))
    return Section("tokens", "Token activation strength", inner,
                   _md("## Token activation strength (subwords, corpus-wide upper quartile) [95% CI]", h, rows))


def section_provenance(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """What produced the numbers: software versions and commit, checkpoints and data with their checksums,
    seeds and bootstrap settings per task, and the workflow configuration."""
    pv = tabs.get("provenance")
    if pv is None:
        return None
    h, rows = _provenance_rows(pv)
    versions = ", ".join(f"{k} {v}" for k, v in _software().items())
    inner = (f"<p>bertology {esc(bertology.__version__)}, commit <code>{esc(pv['git_commit'].iloc[0])}</code>; "
             f"{esc(versions)}.</p>" + table_html(h, rows) + _csv_link("provenance"))
    if config:
        inner += "<h3>Workflow configuration</h3><pre>" + esc(config_block(config)) + "</pre>"
    return Section("provenance", "Provenance", inner, _md("## Provenance", h, rows))


def section_run_times(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """What the run cost: the workflow's wall time per rule from the Snakemake benchmarks (not part of the
    reproducible tables)."""
    if not len(data.benchmarks):
        return None
    h, rows, top = _run_time_rows(data.benchmarks)
    total = data.benchmarks["seconds"].sum()
    inner = (f"<p>Wall time of the workflow's jobs (Snakemake benchmark files), {total:.0f} s summed over "
             f"{len(data.benchmarks)} jobs; <b>{esc(top)}</b> dominates. Times are not part of the "
             f"reproducible tables.</p>" + table_html(h, rows))
    return Section("runtime", "Run times", inner, _md("## Run times (Snakemake benchmarks)", h, rows))


#: The report's sections in page order; each takes (data, tables, workflow config) and returns None when
#: the results hold nothing for it.
SECTIONS = (section_metrics, section_separability, section_skip, section_removals, section_attention,
            section_attribution, section_ffn, section_errors, section_tokens, section_provenance,
            section_run_times)


def _sections(data: ReportData, tabs: Tables, config: dict | None) -> list[Section]:
    """The sections the results hold, in page order."""
    return [s for make in SECTIONS if (s := make(data, tabs, config)) is not None]

def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "zarr", "xarray", "dask", "duckdb", "scipy", "statsmodels", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


#: What a report folder holds; a folder holding nothing else is a (possibly partly removed) report.
REPORT_ENTRIES = {"index.html", "summary.md", "tables"}


def _check_out(out: Location) -> None:
    """A report replaces only a report (or an empty folder): never a folder that happens to be named.

    A report folder is one whose entries are all report entries: a workflow rerun has removed its
    declared files (index.html, summary.md) and left ``tables/``, and that is still a report.
    """
    if out.isfile():
        raise BertologyError(f"{out}: is a file; the report is written only over a report or an empty folder. "
                             f"Choose another --out")
    if set(out.listdir()) <= REPORT_ENTRIES:
        return
    raise BertologyError(f"{out}: is a folder that is not a bertology report; the report is written only over a "
                         f"report or an empty folder. Choose another --out")


def _write_report(folder: Location, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def build_report(results: str | Path, out: str | Path, db: str | Path | None = None,
                 tasks: list[str] | None = None, workflow_config: dict | None = None, reindex: bool = False):
    """Write the report of ``results`` to ``out`` (see the module docstring); return ``out/index.html``.

    ``results`` and ``out`` may be URLs. On disk the report is assembled beside ``out`` and renamed into
    place; on an object store its files are written one by one, ``index.html`` last.
    """
    out = locate(out)
    _check_out(out)
    data = collect(results, db, tasks, reindex=reindex)
    tabs = T.all_tables(data)
    sections = _sections(data, tabs, workflow_config)
    models = sorted({r.meta["model_type"] + f" ({r.n_layers} layers, hidden {r.meta['hidden']})" for r in data.runs})
    subtitle = (f"{', '.join(t.upper() for t in data.tasks)} · {'; '.join(models)} · every estimate with its 95% "
                f"bootstrap CI")
    md = [f"# {TITLE}", "", subtitle, "", "Figures and example sentences: index.html. Tables as CSV: tables/.", ""]
    md += [line for s in sections for line in s.md_lines]
    files = {f"tables/{name}.csv": T.to_csv_bytes(df) for name, df in tabs.items()}
    files["summary.md"] = "\n".join(md).encode("utf-8")
    files["index.html"] = page(TITLE, subtitle, [(s.key, s.title, s.html) for s in sections]).encode("utf-8")
    if not out.local:
        _write_report(out, files)
        return out / "index.html"
    out = out.local_path
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "tables").mkdir(parents=True)
    _write_report(Location(str(tmp)), files)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old)
    else:
        tmp.replace(out)
    return out / "index.html"
