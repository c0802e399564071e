"""Small inline SVG charts for the explorer's pages: drawn on the server, no script or font from anywhere.

Every mark carries a ``<title>`` (the browser shows it on hover and reads it to screen readers), and every
text is escaped: labels may come from data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


@dataclass
class Series:
    """One line: ``y`` at ``x``, optionally with a confidence band ``low``–``high``; ``marks`` (one per point:
    True filled, False hollow) show e.g. which points are significant or right."""

    name: str
    x: list[float]
    y: list[float]
    low: list[float] | None = None
    high: list[float] | None = None
    marks: list[bool] | None = None
    notes: list[str] = field(default_factory=list)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_chart(series: list[Series], *, title: str, x_label: str = "layer", y_label: str = "",
               width: int = 560, height: int = 260, zero_line: bool = False) -> str:
    """Lines over integer x (layers), bands for CIs, a legend; ``title`` is the chart's accessible name."""
    values = [v for s in series for v in (s.y + (s.low or []) + (s.high or [])) if _finite(v)]
    xs = sorted({x for s in series for x in s.x})
    if not values or not xs:
        return f'<p class="empty">{escape(title)}: no data</p>'
    y0, y1 = min(values), max(values)
    if zero_line:
        y0, y1 = min(y0, 0.0), max(y1, 0.0)
    pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 56, 130, 24, 36
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = xs[0], xs[-1] if xs[-1] != xs[0] else xs[0] + 1

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
           f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{x:g}</text>')
    if zero_line and y0 < 0 < y1:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(0):.1f}" y2="{py(0):.1f}" class="zero"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle" class="axis">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" text-anchor="middle" '
                   f'class="axis">{escape(y_label)}</text>')
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        pts = [(x, y) for x, y in zip(s.x, s.y) if _finite(y)]
        if s.low and s.high:
            band = [(x, lo, hi) for x, lo, hi in zip(s.x, s.low, s.high) if _finite(lo) and _finite(hi)]
            if len(band) > 1:
                poly = [f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in band] + \
                       [f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(band)]
                out.append(f'<polygon points="{" ".join(poly)}" fill="{colour}" opacity="0.15"/>')
        if len(pts) > 1:
            out.append(f'<polyline points="{" ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)}" fill="none" '
                       f'stroke="{colour}" stroke-width="2"/>')
        for j, (x, y) in enumerate(zip(s.x, s.y)):
            if not _finite(y):
                continue
            filled = s.marks[j] if s.marks else True
            ci = ""
            if s.low and s.high and _finite(s.low[j]) and _finite(s.high[j]):
                ci = f" [{_fmt(s.low[j])}, {_fmt(s.high[j])}]"
            note = f"; {s.notes[j]}" if j < len(s.notes) and s.notes[j] else ""
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" stroke="{colour}" stroke-width="2" '
                       f'fill="{colour if filled else "white"}"><title>{escape(s.name)}, layer {x:g}: '
                       f'{_fmt(y)}{escape(ci)}{escape(note)}</title></circle>')
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 30}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="2"/><text x="{left + pw + 34}" y="{ly}" class="legend">{escape(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def readout_strip(layers: list[int], rows: dict[str, list[tuple[bool, str]]], *, title: str) -> str:
    """A grid of layers × readouts: a filled green cell where the readout is right, red where wrong; the
    cell's title names the predicted class."""
    if not layers:
        return f'<p class="empty">{escape(title)}: no data</p>'
    cell, left, top = 34, 80, 22
    width, height = max(left + cell * len(layers) + 8, 160), top + cell * len(rows) + 22
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for j, layer in enumerate(layers):
        out.append(f'<text x="{left + cell * j + cell / 2}" y="{top - 6}" text-anchor="middle" class="tick">{layer}</text>')
    for k, (name, cells) in enumerate(rows.items()):
        y = top + cell * k
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end" class="legend">{escape(name)}</text>')
        for j, (right, pred) in enumerate(cells):
            cls = "right" if right else "wrong"
            out.append(f'<rect x="{left + cell * j + 1}" y="{y + 1}" width="{cell - 2}" height="{cell - 2}" '
                       f'class="{cls}"><title>{escape(name)}, layer {layers[j]}: predicts {escape(pred)} '
                       f'({cls})</title></rect>')
    out.append(f'<text x="{left}" y="{height - 4}" class="axis">layer</text></svg>')
    return "".join(out)
