"""What every report section is built of: the :class:`Section` it returns, the registration of its
function under the key the analysis registry names (:func:`section`), and the layouts several sections
share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ..render import ci, table_md

#: The report's tables, by name, in the layouts shown (:func:`bertology.reports.tables.all_tables`).
Tables = dict[str, pd.DataFrame]
#: Every section function, by key (filled by :func:`section` as the section modules are imported).
SECTIONS: dict[str, Callable] = {}


def section(key: str):
    """Register a section function under ``key``: the key an analysis of
    :mod:`bertology.analysis.registry` lists in its ``sections`` (or a report-only section's). The function
    takes (data, tables, workflow config) and returns a :class:`Section`, or None where the results hold
    nothing for it."""
    def register(make: Callable) -> Callable:
        if key in SECTIONS:
            raise ValueError(f"report section {key!r} registered twice ({SECTIONS[key].__module__}, {make.__module__})")
        SECTIONS[key] = make
        return make
    return register


@dataclass(frozen=True)
class Section:
    """One section of the report: its anchor and heading in the page, its HTML and its Markdown lines; and the
    tables it shows that :func:`bertology.reports.tables.all_tables` does not make (written as
    ``tables/NAME.csv`` beside the others)."""

    key: str
    title: str
    html: str
    md_lines: list[str]
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)


def csv_link(name: str) -> str:
    return f'<p class="sub">Table: <a href="tables/{name}.csv">tables/{name}.csv</a></p>'


def md_table(heading: str, header: list[str], rows: list[list]) -> list[str]:
    """A Markdown heading (with its ``#``s) and the table under it."""
    return [heading, "", table_md(header, rows), ""]


def layer_by_task(df: pd.DataFrame, tasks: list[str], value: str) -> tuple[list[str], list[list]]:
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


def layer_means(df: pd.DataFrame, tasks: list[str], value: str) -> tuple[list[str], list[list]]:
    """:func:`layer_by_task` of a table whose interval columns are the bare ``ci_low`` and ``ci_high``."""
    return layer_by_task(df.rename(columns={"ci_low": f"{value}_ci_low", "ci_high": f"{value}_ci_high"}), tasks,
                          value)
