"""The JSON API of ``bertology serve`` (OpenAPI at ``/api/openapi.json``, described at ``/api``).

Every answer is JSON. A refused or impossible request answers 4xx with ``{"error": "..."}`` naming the
parameter and what it accepts: 400 a bad value or a refused SQL statement, 404 an unknown run or sample
or a map the run does not hold, 422 a parameter of the wrong type or out of its declared range.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from bertology.analysis.vocabulary import SCOPES

from .explorer import MAX_LIMIT, SORTABLE, Explorer, SampleFilter

#: A run id as the index makes them (16 hex digits): nothing else reaches a query.
RUN_ID = r"^[0-9a-f]{16}$"
LAST_SCOPE = SCOPES[-1]


class SqlQuery(BaseModel):
    query: str = Field(..., max_length=100_000, description="one read-only SQL statement over the index")


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list]
    truncated: bool
    max_rows: int


def sample_filter(run_id: str | None, task: str | None, errors: bool | None, confident: bool,
                  min_margin: float | None, max_margin: float | None, min_length: int | None,
                  max_length: int | None, q: str | None) -> SampleFilter:
    return SampleFilter(run_id=run_id or None, task=task or None, errors=errors, confident=confident,
                        min_margin=min_margin, max_margin=max_margin, min_length=min_length, max_length=max_length,
                        q=q or None)


def router(ex: Explorer) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["api"])

    @api.get("/runs", summary="every run in the index, with its metrics and bootstrap CIs")
    def runs() -> list[dict]:
        return ex.runs()

    @api.get("/samples", summary="samples matching the filters, one page of them, and their total")
    def samples(
        run_id: str | None = Query(None, pattern=RUN_ID, description="one run (GET /api/runs)"),
        task: str | None = Query(None, max_length=32, description="one task, e.g. sst2"),
        errors: bool | None = Query(None, description="true: misclassified only; false: correct only"),
        confident: bool = Query(False, description="misclassified with margin > 0.3 only"),
        min_margin: float | None = Query(None, ge=-1, le=1, allow_inf_nan=False,
                                         description="margin = p(predicted) − p(true) at least this"),
        max_margin: float | None = Query(None, ge=-1, le=1, allow_inf_nan=False),
        min_length: int | None = Query(None, ge=0, description="tokens, special tokens included"),
        max_length: int | None = Query(None, ge=0),
        q: str | None = Query(None, max_length=200, description="case-insensitive substring of either text"),
        sort: Literal[SORTABLE] = Query("sample_index"),  # type: ignore[valid-type]
        order: Literal["asc", "desc"] = Query("asc"),
        limit: int = Query(50, ge=1, le=MAX_LIMIT),
        offset: int = Query(0, ge=0, le=10**9),
    ) -> dict:
        f = sample_filter(run_id, task, errors, confident, min_margin, max_margin, min_length, max_length, q)
        return ex.samples(f, sort=sort, descending=order == "desc", limit=limit, offset=offset)

    @api.get("/samples/{run_id}/{sample_index}",
             summary="one sample: prediction, per-layer readouts, tokens and strengths, flips, what is available")
    def sample(run_id: str = Path(..., pattern=RUN_ID), sample_index: int = Path(..., ge=0, le=2**40)) -> dict:
        return ex.sample(run_id, sample_index)

    @api.get("/samples/{run_id}/{sample_index}/attention",
             summary="one attention map (query × key) and the tokens; no head: the mean over heads")
    def attention(run_id: str = Path(..., pattern=RUN_ID), sample_index: int = Path(..., ge=0, le=2**40),
                  layer: int = Query(..., ge=1, le=1000), head: int | None = Query(None, ge=1, le=1000)) -> dict:
        return ex.attention(run_id, sample_index, layer, head)

    @api.get("/samples/{run_id}/{sample_index}/attribution",
             summary="one scope's token-to-token attribution map (output × input) at one layer, from the store")
    def attribution(run_id: str = Path(..., pattern=RUN_ID), sample_index: int = Path(..., ge=0, le=2**40),
                    layer: int = Query(..., ge=1, le=1000),
                    scope: Literal[SCOPES] = Query(LAST_SCOPE)) -> dict:  # type: ignore[valid-type]
        return ex.attribution(run_id, sample_index, layer, scope)

    @api.get("/compare", summary="run a against run b of one task (A − B, paired): per-layer readouts, the "
                                 "heads whose features differ most, the samples that flip")
    def compare(a: str = Query(..., pattern=RUN_ID, description="run A (GET /api/runs)"),
                b: str = Query(..., pattern=RUN_ID, description="run B, of the same task and split")) -> dict:
        return ex.comparison(a, b)

    @api.post("/sql", summary="one read-only SQL query over the index (the sandbox of `bertology sql`)",
              response_model=SqlResult)
    def sql(body: SqlQuery) -> dict:
        return ex.sql(body.query)

    return api
