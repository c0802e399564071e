"""Finding 4: token activation strength (the token_strength analysis)."""

from __future__ import annotations

import pandas as pd

from bertology.analysis.vocabulary import WORD_CATEGORIES

from .. import figures
from ..collect import ReportData
from ..render import esc, image_html, pct_ci, sentence_html, table_html
from .common import Section, Tables, csv_link, md_table, section


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


@section("tokens")
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
             + csv_link("token_strength_summary") + _example_sentences_html(data))
    return Section("tokens", "Token activation strength", inner,
                   md_table("## Token activation strength (subwords, corpus-wide upper quartile) [95% CI]", h, rows))
