"""Kovaleva et al.'s cross-sentence word matching (the word_matching analysis)."""

from __future__ import annotations

import pandas as pd

from ..collect import ReportData
from ..render import ci, esc, num, table_html
from .common import Section, Tables, csv_link, md_table, section

#: Heads listed per task.
TOP = 5


def top_heads(wm: pd.DataFrame, tasks: list[str], top: int = TOP) -> pd.DataFrame:
    """Each task's ``top`` heads by match − control attention, with the interval and corrected p-value."""
    rows = [wm[wm["task"] == t].sort_values("rank").head(top) for t in tasks]
    cols = ["task", "rank", "layer", "head", "estimate", "ci_low", "ci_high", "p_adj", "match", "control", "n"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def _rows(top: pd.DataFrame) -> tuple[list[str], list[list]]:
    header = ["task", "rank", "head", "match − control [95% CI]", "p (corrected)", "match", "control", "pairs"]
    rows = [[r.task.upper(), int(r.rank), f"{int(r.layer)}.{int(r.head)}", ci(r.estimate, r.ci_low, r.ci_high),
             num(r.p_adj), num(r.match), num(r.control), int(r.n)] for r in top.itertuples()]
    return header, rows


def _shared(top: pd.DataFrame) -> str:
    """Which top heads more than one task shares (Kovaleva: STS-B and RTE share 4.1 and 2.12)."""
    heads = top.assign(name=[f"{int(l)}.{int(h)}" for l, h in zip(top["layer"], top["head"])])
    by_head = heads.groupby("name")["task"].apply(lambda t: sorted(set(t)))
    shared = {h: t for h, t in by_head.items() if len(t) > 1}
    if not shared:
        return "No head is among the top heads of more than one task."
    return "Top heads shared across tasks: " + "; ".join(
        f"{h} ({', '.join(t.upper() for t in ts)})" for h, ts in sorted(shared.items())) + "."


@section("word_matching")
def section_word_matching(data: ReportData, tabs: Tables, config: dict | None = None) -> Section | None:
    """Which heads attend from a word in one sentence of a pair to the same word in the other, beyond what
    a word at the same distance gets, per pair task."""
    wm = data.table("word_matching")
    if not len(wm):
        return None
    tasks = [t for t in data.tasks if t in set(wm["task"])]
    top = top_heads(wm, tasks)
    h, rows = _rows(top)
    inner = ("<p>Per head, the word-level attention from a word of one sentence to the same word (lowercased "
             "form) in the other, minus its attention to another word of the other sentence at the nearest "
             "distance; the mean over the pairs that repeat a word, with its 95% bootstrap interval and the "
             "t-test's p-value corrected across heads. The top heads of each pair task:</p>"
             + table_html(h, rows) + f"<p>{esc(_shared(top))}</p>" + csv_link("word_matching_top"))
    return Section("word_matching", "Cross-sentence word matching", inner,
                   md_table("## Cross-sentence word matching: top heads [95% CI]", h, rows) + [_shared(top), ""],
                   csv={"word_matching_top": top})
