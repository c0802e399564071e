"""The explorer's HTML pages: Runs, Errors, Sample, Layers, SQL (and /api, the API's description).

Rendered on the server by Jinja2 with autoescaping, so every text from a store or the index is escaped; data
for the page's own script travels as JSON in ``<script type="application/json">`` (Jinja's ``tojson``
escapes ``<``, ``>`` and ``&`` there). Every form is a plain GET form: pages are links, usable with the
keyboard and without the script.
"""

from __future__ import annotations

import io
import math
import numbers
from pathlib import Path as FilePath
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from bertology import BertologyError, __version__
from bertology.analysis.options import CONFIDENT_MARGIN
from bertology.analysis.vocabulary import SCOPES

from ..render import ci, num
from . import plots
from .api import RUN_ID, sample_filter
from .explorer import SORTABLE, BadRequest, Explorer, Unavailable

templates = Jinja2Templates(directory=FilePath(__file__).parent / "templates")
PAGE_SIZE = 50
SHOW = {"errors": (True, False), "confident": (True, True), "correct": (False, False), "all": (None, False)}


def _num(x, digits: int = 3) -> str:
    """A table cell as the report writes numbers (:func:`reports.render.num`); text as it is, integers (ids,
    counts, layers) whole, and the index's NULLs (pandas NA) as an en dash."""
    if isinstance(x, str):
        return x
    if x is pd.NA:
        return num(None)
    if isinstance(x, np.bool_):
        x = bool(x)
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return str(int(x))
    return num(x, digits)


def _ci(m: dict | None) -> str:
    """A metric of ``/api/runs`` as the report writes it: estimate [low, high]."""
    return ci(m.get("estimate"), m.get("ci_low"), m.get("ci_high")) if m else num(None)


templates.env.filters["num"] = _num
templates.env.filters["ci"] = _ci
templates.env.globals["version"] = __version__
templates.env.globals["zip"] = zip
templates.env.globals["CONFIDENT_MARGIN"] = CONFIDENT_MARGIN


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message, title=f"{status}")


#: The separability statistics (analysis/separability.py); ``chance_X`` is X's label-permutation chance level
#: and ``delta_X`` its change from the layer below.
SEPARABILITY = ("fisher_trace", "centroid_ratio", "probe_accuracy")


def _series(g, name: str, marks=None) -> plots.Series:
    """A statistic per layer with its CI; ``marks``: a layer -> p-value mapping (filled where p < 0.05)."""
    g = g.sort_values("layer")
    filled = [bool(marks.get(layer, 1.0) < 0.05) for layer in g["layer"]] if marks is not None else None
    return plots.Series(name, list(g["layer"].astype(float)), list(g["estimate"].astype(float)),
                        list(g["ci_low"].astype(float)), list(g["ci_high"].astype(float)), filled)


def _separability_charts(df, site: str) -> list[str]:
    """Per statistic: the [CLS] separability at ``site`` per layer (layer 0: the embeddings) with its CI band
    and chance level; and its change layer to layer, where the table has it for this site."""
    if not len(df):
        return []
    if "pooling" in df:
        df = df[df["pooling"] == "cls"]
    at = df[df["site"].isin([site, "embed"])]
    charts = []
    for stat in SEPARABILITY:
        own = at[at["statistic"] == stat]
        if not len(own):
            continue
        chance = at[at["statistic"] == f"chance_{stat}"]
        above = dict(zip(chance["layer"], chance["p"])) if len(chance) and "p" in chance else None
        series = [_series(own, stat, above)]
        if len(chance):
            series.append(_series(chance, "chance (2.5–97.5% of permutations)"))
        note = " (filled: above chance, permutation p < 0.05)" if above is not None else ""
        charts.append(plots.line_chart(series, title=f"{stat} at {site}{note}", y_label=stat))
        delta = at[at["statistic"] == f"delta_{stat}"]
        if len(delta):
            marks = dict(zip(delta["layer"], delta["p_adj"])) if "p_adj" in delta else None
            note = " (filled: p_adj < 0.05)" if marks is not None else ""
            charts.append(plots.line_chart([_series(delta, f"Δ {stat}", marks)], zero_line=True, y_label="Δ",
                                           title=f"Δ {stat} from the layer below{note}"))
    return charts


SKIP_COLUMNS = ("layer", "statistic", "estimate", "ci_low", "ci_high", "p_adj", "rank", "candidate", "rule")
LAYER_SKIP_COLUMNS = ("layer", "intervention", "baseline_accuracy", "skipped_accuracy", "estimate", "ci_low",
                      "ci_high", "p_adj", "compensated_accuracy", "compensated_ci_low", "compensated_ci_high",
                      "hidden_units", "flops_saved", "apriori_candidate")
APRIORI_COLUMNS = ("statistic", "candidates", "best_skip", "layers_swept", "top1_hit", "accuracy", "estimate",
                   "ci_low", "ci_high")


def _columns(df, names):
    """The columns of a table the page shows, in this order (those it has)."""
    return df[[c for c in names if c in df.columns]] if len(df) else df


def _field(name: str, text: str | None, kind, low=None, high=None):
    """A form field: empty means None; otherwise a number of ``kind`` within [low, high]."""
    if text is None or not text.strip():
        return None
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name}={text!r}: not {'an integer' if kind is int else 'a number'}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or (low is not None and value < low) or \
            (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise BadRequest(f"{name}={text!r}: must be {bounds}")
    return value


def router(ex: Explorer) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/", response_class=HTMLResponse)
    def runs_page(request: Request):
        runs = ex.runs()
        return render(request, "runs.html", runs=runs, title="Runs", has_report=request.app.state.has_report,
                      metric_names=sorted({m for r in runs for m in r["metrics"]}))

    @pages.get("/errors", response_class=HTMLResponse)
    def errors_page(
        request: Request,
        run_id: str | None = Query(None, pattern=RUN_ID + "|^$"),
        task: str | None = Query(None, max_length=32),
        show: str = Query("errors", pattern="^(errors|confident|correct|all)$"),
        min_margin: str | None = Query(None, max_length=32),
        max_margin: str | None = Query(None, max_length=32),
        min_length: str | None = Query(None, max_length=32),
        max_length: str | None = Query(None, max_length=32),
        q: str | None = Query(None, max_length=200),
        sort: str = Query("margin", pattern="^(" + "|".join(SORTABLE) + ")$"),
        order: str = Query("desc", pattern="^(asc|desc)$"),
        page: int = Query(1, ge=1, le=10**7),
    ):
        # an HTML form sends its empty fields as empty strings: they mean "no bound"
        min_margin, max_margin = _field("min_margin", min_margin, float, -1, 1), _field("max_margin", max_margin, float, -1, 1)
        min_length, max_length = _field("min_length", min_length, int, 0), _field("max_length", max_length, int, 0)
        errors, confident = SHOW[show]
        f = sample_filter(run_id, task, errors, confident, min_margin, max_margin, min_length, max_length, q)
        result = ex.samples(f, sort=sort, descending=order == "desc", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        params = {k: v for k, v in dict(run_id=run_id, task=task, show=show, min_margin=min_margin,
                                        max_margin=max_margin, min_length=min_length, max_length=max_length, q=q,
                                        sort=sort, order=order).items() if v not in (None, "")}
        pages_total = max(1, math.ceil(result["total"] / PAGE_SIZE))

        def link(**change):
            return "/errors?" + urlencode({**params, **change})

        runs = ex.runs()
        tasks = sorted({r["task"] for r in runs})
        return render(request, "errors.html", title="Errors", result=result, params=params, page=page,
                      pages_total=pages_total, link=link, runs=runs, tasks=tasks, sortable=SORTABLE)

    @pages.get("/runs/{run_id}/samples/{sample_index}", response_class=HTMLResponse)
    def sample_page(request: Request, run_id: str = Path(..., pattern=RUN_ID),
                    sample_index: int = Path(..., ge=0, le=2**40),
                    layer: int | None = Query(None, ge=1, le=1000), head: int | None = Query(None, ge=0, le=1000),
                    attr_layer: int | None = Query(None, ge=1, le=1000),
                    scope: str = Query(SCOPES[-1], pattern="^(" + "|".join(SCOPES) + ")$")):
        s = ex.sample(run_id, sample_index)
        L = s["n_layers"]
        layer = layer or L
        attention = attribution = None
        attention_why = attribution_why = None
        if s["available"]["attention"] is True:
            try:
                attention = ex.attention(run_id, sample_index, layer, head or None)
            except Unavailable as e:
                attention_why = str(e)
        else:
            attention_why = s["available"]["attention"]
        if attr_layer is not None:
            if s["available"]["attribution"] is True:
                try:
                    attribution = ex.attribution(run_id, sample_index, attr_layer, scope)
                except Unavailable as e:
                    attribution_why = str(e)
            else:
                attribution_why = s["available"]["attribution"]
        classes = s["classes"]

        def name(k):
            """A readout's prediction as its class name; a regression's predicted score (a float) as a number."""
            if k is None or (isinstance(k, float) and math.isnan(k)):
                return "–"
            if isinstance(k, float) and not (k.is_integer() and len(classes) > 1):
                return f"{k:.3g}"
            k = int(k)
            return classes[k] if 0 <= k < len(classes) else str(k)

        strip = plots.readout_strip(
            [r["layer"] for r in s["layers"]],
            {readout: [(bool(r[f"{readout}_correct"]), name(r[f"{readout}_pred"])) for r in s["layers"]]
             for readout in ("probe", "centroid")},
            title="per-layer readouts of [CLS]")
        projection = None
        if s["layers"] and any(r.get("class_direction_projection") is not None for r in s["layers"]):
            projection = plots.line_chart([plots.Series(
                "projection", [float(r["layer"]) for r in s["layers"]],
                [r["class_direction_projection"] if r["class_direction_projection"] is not None else float("nan")
                 for r in s["layers"]], marks=[bool(r["probe_correct"]) for r in s["layers"]],
                notes=["probe right" if r["probe_correct"] else "probe wrong" for r in s["layers"]])],
                title="[CLS] on the class-mean direction (filled: probe right)", y_label="projection",
                height=200, zero_line=True)
        right_from = None   # the first layer from which the probe stays right to the output
        for r in reversed(s["layers"]):
            if not r["probe_correct"]:
                break
            right_from = r["layer"]
        return render(request, "sample.html", title=f"Sample {sample_index}", s=s, layer=layer, head=head or 0,
                      attention=attention, attention_why=attention_why, attribution=attribution,
                      attribution_why=attribution_why, attr_layer=attr_layer, scope=scope, scopes=SCOPES,
                      strip=strip, projection=projection, right_from=right_from,
                      any_layer_right=any(r["probe_correct"] for r in s["layers"]))

    @pages.get("/runs/{run_id}/layers", response_class=HTMLResponse)
    def layers_page(request: Request, run_id: str = Path(..., pattern=RUN_ID),
                    site: str = Query("ln2", pattern="^(attn|res1|ln1|ff|res2|ln2)$")):
        run = ex.run(run_id)
        sep = ex.table("separability", run_id)
        charts = _separability_charts(sep, site)
        skip = _columns(ex.table("skip_candidates", run_id, "ORDER BY layer"), SKIP_COLUMNS)
        layer_skip = _columns(ex.table("layer_skip", run_id, "ORDER BY layer NULLS FIRST"), LAYER_SKIP_COLUMNS)
        apriori = _columns(ex.table("apriori_validation", run_id), APRIORI_COLUMNS)
        sites = sorted(set(sep["site"]) - {"embed"}) if len(sep) else []
        return render(request, "layers.html", title=f"Layers of {run['task']}", run=run, charts=charts, site=site,
                      sites=sites, skip=skip, layer_skip=layer_skip, apriori=apriori)

    @pages.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, a: str | None = Query(None, pattern=RUN_ID),
                     b: str | None = Query(None, pattern=RUN_ID)):
        runs = ex.runs()
        c = ex.comparison(a, b) if a and b else None
        return render(request, "compare.html", title="Compare two runs", runs=runs, a=a, b=b, c=c)

    @pages.get("/sql", response_class=HTMLResponse)
    def sql_page(request: Request, query: str | None = Query(None, max_length=100_000)):
        result, message = None, None
        if query and query.strip():
            try:
                result = ex.sql(query)
            except BertologyError as e:
                message = str(e)
        tables = sorted(ex.index.tables())
        return render(request, "sql.html", title="SQL", query=query or "", result=result, message=message,
                      tables=tables, status=400 if message else 200,
                      csv_link="/sql.csv?" + urlencode({"query": query}) if result else None)

    @pages.get("/sql.csv")
    def sql_csv(query: str = Query(..., min_length=1, max_length=100_000)):
        df = ex.sql_frame(query)
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        headers = {"Content-Disposition": 'attachment; filename="bertology-query.csv"'}
        if df.attrs.get("truncated"):
            headers["X-Bertology-Truncated"] = "true"
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)

    @pages.get("/favicon.ico")
    def favicon():  # what browsers ask for on pages that name no icon (the static report)
        return FileResponse(FilePath(__file__).parent / "static" / "favicon.svg", media_type="image/svg+xml")

    @pages.get("/api", response_class=HTMLResponse)
    def api_page(request: Request):
        spec = request.app.openapi()
        endpoints = []
        for path, methods in spec["paths"].items():
            for method, op in methods.items():
                params = [(p["name"], p["in"], p.get("description", ""), p.get("required", False))
                          for p in op.get("parameters", [])]
                if "requestBody" in op:
                    params.append(("query", "body (JSON)", "one read-only SQL statement", True))
                endpoints.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                                  "params": params})
        return render(request, "api.html", title="API", endpoints=endpoints)

    return pages
