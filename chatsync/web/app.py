"""The health page and the Prometheus endpoint (a FastAPI app the Airflow plugin mounts at
``/chatsync``; it also runs alone: ``uvicorn --factory chatsync.web.app:create_app``).

- ``GET /health``: current state (alert conditions), the metrics of the last window, charts of
  the last 24 h and 7 days (from metric_buckets), open inconsistencies, dead letters, frozen chats,
  last runs. Plain HTML with inline SVG: no script, nothing fetched from elsewhere.
- ``GET /health.json``: the same data.
- ``GET /metrics``: Prometheus text format, prefix ``chatsync_``.

In Airflow the pages need a logged-in Airflow user (``chatsync.airflow.plugin.plugin_app``) and
/metrics the ``metrics_token`` when it is set.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from chatsync.config import Settings
from chatsync.ops import report_store
from chatsync.web.page import page_data, render, snapshot
from chatsync.web.prometheus import prometheus_text


def create_app(settings_provider: Callable[[], Settings] = Settings.from_env,
               page_dependencies: Sequence = (), login_url: Callable[[str], str] | None = None):
    """The app. ``page_dependencies`` guard every page but /metrics (the Airflow plugin passes
    Airflow's own user check: run alone, the app trusts whoever reaches it, so bind it to
    localhost); ``login_url(next)``, where a browser refused a page is sent. /metrics needs
    ``Authorization: Bearer <metrics_token>`` when that setting is set."""
    from fastapi import FastAPI, Header, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="chatsync health", description=__doc__)
    guarded = list(page_dependencies)

    if login_url is not None:
        @app.exception_handler(StarletteHTTPException)
        async def to_login(request: Request, exc: StarletteHTTPException):
            # a person's browser goes to the login page and comes back; an API client gets the status
            if exc.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse(login_url(str(request.url)), status_code=303)
            return await http_exception_handler(request, exc)

    @app.get("/health", response_class=HTMLResponse, dependencies=guarded)
    def health_page() -> str:
        return render(page_data(settings_provider()))

    @app.get("/health.json", dependencies=guarded)
    def health_json() -> JSONResponse:
        import json

        return JSONResponse(json.loads(json.dumps(page_data(settings_provider()), default=str)))

    def stored(parts: tuple[str, ...], what: str) -> Response:
        import mimetypes

        # read where the tasks wrote it (a folder or an object store), not from this host's disk
        path = report_store.stored_file(settings_provider(), parts)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no such {what}")
        return Response(path.read_bytes(), media_type=mimetypes.guess_type(parts[-1])[0] or "application/octet-stream")

    @app.get("/reports/monthly/{month}/{name}", dependencies=guarded)
    def monthly_report_file(month: str, name: str) -> Response:
        if not report_store.MONTH.fullmatch(month):
            raise HTTPException(status_code=404, detail="no such report file")
        return stored(("monthly", month, name), "report file")

    @app.get("/data-docs/{path:path}", dependencies=guarded)
    def data_docs_file(path: str) -> Response:
        return stored(("data_docs", *path.split("/")), "Data Docs file")

    @app.get("/metrics")
    def metrics(authorization: str | None = Header(default=None)) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        settings = settings_provider()
        if settings.metrics_token is not None and not _bearer_matches(authorization, settings.metrics_token):
            raise HTTPException(status_code=401, detail="a bearer token is required (the metrics_token setting)",
                                headers={"WWW-Authenticate": "Bearer"})
        return Response(prometheus_text(snapshot(settings)), media_type=CONTENT_TYPE_LATEST)

    return app


def _bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
