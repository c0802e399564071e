"""The ``bertology serve`` application: the explorer's pages and JSON API in one FastAPI app.

FastAPI (on Starlette, served by uvicorn) because its typed parameters are checked before any handler runs
(a wrong type or a value out of range answers 4xx with the reason), it writes the API's OpenAPI document
from the same declarations, and it runs blocking handlers (DuckDB and zarr reads) in a thread pool. Pages
are rendered on the server with Jinja2 (autoescaping on: sample text is data); the one script and one style
sheet are the app's own files. FastAPI's /docs and /redoc pages load Swagger UI and ReDoc from a CDN, so they
are turned off: ``/api`` describes the API from the OpenAPI document instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from bertology import BertologyError, __version__
from bertology.analysis.index import IndexUnavailable

from . import api, pages
from .explorer import Explorer, NotFound, Unavailable

HERE = Path(__file__).parent
log = logging.getLogger("bertology.serve")


def _status(e: BertologyError) -> int:
    if isinstance(e, IndexUnavailable):
        return 503
    if isinstance(e, (NotFound, Unavailable)):
        return 404
    return 400  # BadRequest, RefusedQuery, an SQL error, a query interrupted at its time limit


def _validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')}); send "
                         '{"query": "..."} with Content-Type: application/json')
            continue
        if loc[:1] == ("body",) and len(loc) == 1:
            parts.append('the body must be a JSON object such as {"query": "SELECT 1"}, sent with '
                         'Content-Type: application/json')
            continue
        where = ".".join(str(p) for p in loc[1:]) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


#: Host names a request may carry when the server listens on loopback (others: DNS rebinding, refused).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
#: --host values that listen on every interface.
EVERY_INTERFACE = ("0.0.0.0", "::", "")


def create_app(results: str | Path, db: str | Path | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The app serving ``results`` (a results folder) and its index ``db``, listening on ``host``: requests
    must name that host (or loopback), so that a web page elsewhere cannot reach it by DNS rebinding."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    ex = Explorer(results, db)
    app = FastAPI(title="bertology", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Runs, samples and the insides of BERT-family encoders, from a bertology index "
                              "and its stores.")
    app.state.explorer = ex

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api")

    def error(request: Request, status: int, message: str):
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return pages.error_page(request, status, message)

    @app.exception_handler(BertologyError)
    async def _bertology_error(request: Request, e: BertologyError):
        return error(request, _status(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return error(request, 422, _validation_message(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        message = e.detail if isinstance(e.detail, str) else "error"
        if e.status_code == 404 and message == "Not Found":
            message = f"no page {request.url.path} (the pages: /, /errors, /sql, /api)"
        return error(request, e.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error(request, 500, f"internal error ({type(e).__name__}); the server log has the details")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        # nothing is fetched from anywhere but this server, and no page can be framed by another site
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                    "frame-ancestors 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # listening on every interface (only when the user asks for it), any name of the machine is legitimate
    allowed = ["*"] if host in EVERY_INTERFACE else sorted(set(LOOPBACK_HOSTS + [host, f"[{host}]"]))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed)
    app.include_router(api.router(ex))
    app.include_router(pages.router(ex))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    report = ex.results.local_path / "report" if ex.results.local else None
    app.state.has_report = report is not None and (report / "index.html").is_file()
    if app.state.has_report:
        app.mount("/report", StaticFiles(directory=report, html=True), name="report")
    return app


def serve(results: str | Path, db: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          quiet: bool = False) -> None:
    """Serve until interrupted."""
    import socket

    import uvicorn

    app = create_app(results, db, host)
    ex = app.state.explorer
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family):
            pass
    except OSError as e:
        raise BertologyError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port "
                             f"(or --host)") from None
    if host not in LOOPBACK_HOSTS:
        print(f"bertology serve: listening on {host}, reachable from other machines; it has no authentication",
              file=sys.stderr)
    print(f"bertology serve: {ex.results} (index {ex.index.db}) on http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info", access_log=not quiet)
