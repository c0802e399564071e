"""Rendering the report: one self-contained HTML page (CSS inline, figures as data: URIs, no script, no
network) and a Markdown summary of the same tables.

A table cell shows an estimate with its 95% bootstrap interval as ``0.617 [0.480, 0.765]``.
"""

from __future__ import annotations

import base64
import html
import json
import math

import pandas as pd

from bertology.analysis import published as P

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1b1f24;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px} p,li{line-height:1.45;font-size:14px} .sub{color:#57606a;font-size:14px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 14px} th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f6f8fa} td.l,th.l{text-align:left} tr.pub td{background:#fff8e5;font-style:italic}
img{max-width:100%;border:1px solid #eaeef2;margin:6px 0} nav a{margin-right:12px;font-size:13px}
.sent{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;line-height:1.9;margin:4px 0 12px}
.tok{padding:1px 2px;border-radius:3px} .HIGH{background:#ffb3b3;font-weight:600} .special{color:#8c959f}
.note{background:#f6f8fa;border-left:3px solid #8c959f;padding:6px 10px;font-size:13px}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow-x:auto}
"""


def num(x, digits: int = 3) -> str:
    """A number for people: 3 significant digits, thousands as integers, NaN as an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (bool,)):
        return "yes" if x else "no"
    x = float(x)
    if x != 0 and abs(x) >= 1000:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


def ci(est, lo, hi) -> str:
    """``est [lo, hi]``; a ratio whose interval has no upper end (its denominator cannot be told from 0) is
    written ``≥ lo``: the data bound it from below only."""
    if hi is not None and not (isinstance(hi, float) and math.isnan(hi)) and math.isinf(hi) and hi > 0:
        return f"≥ {num(lo)}"
    if est is None or (isinstance(est, float) and math.isnan(est)):
        return "–"
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return num(est)
    return f"{num(est)} [{num(lo)}, {num(hi)}]"


def pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}%"


def pct_ci(est, lo, hi) -> str:
    return "–" if isinstance(est, float) and math.isnan(est) else f"{pct(est)} [{pct(lo)}, {pct(hi)}]"


# ---- HTML -------------------------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x), quote=True)


def table_html(header: list[str], rows: list[list], left: int = 1, pub_rows: set[int] = frozenset()) -> str:
    """An HTML table; the first ``left`` columns are left-aligned; ``pub_rows`` are published values."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="{"l" if i < left else ""}">{esc(c)}</td>' for i, c in enumerate(row))
        body.append(f'<tr class="{"pub" if r in pub_rows else ""}">{cells}</tr>')
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image_html(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def sentence_html(tokens: pd.DataFrame) -> str:
    """A sentence with its HIGH tokens (corpus-wide upper quartile of ‖h‖) marked; ‖h‖ in each tooltip."""
    out = []
    for t in tokens.itertuples():
        bucket = t.bucket_corpus if isinstance(t.bucket_corpus, str) else ""
        cls = "tok " + ("special" if t.category == "special" else bucket)
        text = t.token[2:] if t.token.startswith("##") else t.token
        sep = "" if t.token.startswith("##") or not out else " "
        out.append(f'{sep}<span class="{cls}" title="‖h‖ = {t.strength:.2f} ({esc(bucket or t.category)})">'
                   f'{esc(text)}</span>')
    return f'<div class="sent">{"".join(out)}</div>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: ``sections`` are (anchor, heading, inner HTML)."""
    nav = "".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{esc(h)}</h2>{inner}</section>' for a, h, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav>{body}'
            f'</main></body></html>\n')


# ---- Markdown ---------------------------------------------------------------------------------------------

def table_md(header: list[str], rows: list[list]) -> str:
    def cell(c):
        return str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_block(config: dict | None) -> str:
    return json.dumps(config, indent=2, sort_keys=True) if config else ""


PUBLISHED_NOTE = (f"Rows in italics on a yellow ground are {P.LABEL} ({P.FINDINGS}), not measured here; a "
                  f"12-layer value is placed at the same relative depth.")
