"""Kovaleva et al.'s attention heads (the attention_heads and attention_change analyses)."""

from __future__ import annotations

import pandas as pd

from bertology.analysis import published as P
from bertology.analysis.vocabulary import PATTERNS

from .. import figures
from ..collect import ReportData
from ..render import ci, esc, image_html, table_html
from .common import Section, Tables, csv_link, layer_means, md_table, section


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


def _ordered_examples(ex: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """The example map of each pattern type from the first task (in run order) that has one."""
    runs = {r.run_id: i for i, r in enumerate(data.runs)}
    ex = ex.assign(_r=ex["run_id"].map(runs))
    first = ex.groupby("pattern")["_r"].transform("min")
    order = {n: i for i, n in enumerate(PATTERNS)}
    ex = ex[ex["_r"] == first].assign(_p=ex["pattern"].map(order))
    return ex.sort_values(["_p", "query", "key"]).drop(columns=["_p", "_r"])


@section("attention")
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
             + table_html(h, rows, pub_rows=pub) + csv_link("attention_patterns"))
    hd = tabs.get("attention_heads")
    if hd is not None:
        inner += ("<h3>Dominant pattern per head</h3>" + image_html(figures.pattern_heatmaps(hd), "pattern per head")
                  + csv_link("attention_heads"))
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
                  + csv_link("attention_token_classes"))
    md = []
    fc = tabs.get("attention_finetune")
    if fc is not None:
        h2, rows2 = layer_means(fc[fc["head"].isna()], data.tasks, "cosine")
        inner += ("<h3>Change through fine-tuning</h3><p>Cosine similarity between the flattened attention "
                  "maps of the pre-trained model (the checkpoint fine-tuning started from) and the fine-tuned "
                  "model on the same dev samples, averaged over samples (1: unchanged). "
                  f"{esc(P.LABEL)}: {esc(P.FINETUNE_CHANGE.value)} change.</p>"
                  + image_html(figures.finetune_heatmaps(fc), "fine-tuning change per head")
                  + "<h3>Mean over the heads of each layer [95% CI]</h3>" + table_html(h2, rows2)
                  + csv_link("attention_finetune"))
        md = md_table("## Attention change through fine-tuning (cosine, pre-trained vs fine-tuned) [95% CI]", h2, rows2)
    md += md_table("## Attention pattern types (share of head × sample maps) [95% CI]", h, rows)
    return Section("attention", "Attention heads: pattern types, special tokens, fine-tuning", inner, md)
