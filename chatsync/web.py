"""The health page and the Prometheus endpoint (a FastAPI app the Airflow plugin mounts at
``/chatsync``; it also runs alone: ``uvicorn --factory chatsync.web:create_app``).

- ``GET /health``: current state (alert conditions), the metrics of the last window, charts of
  the last 24 h and 7 days (from metric_buckets), open inconsistencies, dead letters, frozen chats,
  last runs. Plain HTML with inline SVG: no script, nothing fetched from elsewhere.
- ``GET /health.json``: the same data.
- ``GET /metrics``: Prometheus text format, prefix ``chatsync_``.

In Airflow the pages need a logged-in Airflow user (``chatsync.airflow_support.plugin_app``) and
/metrics the ``metrics_token`` when it is set.
"""

from __future__ import annotations

import functools
import hmac
import html
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync import health, report_store
from chatsync.config import Settings
from chatsync.db import connection, sql_file
from chatsync.errors import ConfigError
from chatsync.mapping import load_mapping

CHARTS: tuple[tuple[str, str, dict[str, str], str], ...] = (  # (title, metric name, labels, aggregation per step)
    ("events synced", "events_synced", {}, "sum"),
    ("sync delay p95 (s)", "sync_delay_seconds", {"stat": "p95"}, "avg"),
    ("error rate", "error_rate", {}, "avg"),
    ("open inconsistencies", "open_inconsistencies", {}, "avg"),
)
SPANS = (("24 h", timedelta(hours=24), "5 minutes"), ("7 days", timedelta(days=7), "1 hour"))


def settings_for_web() -> Settings:
    """CHATSYNC_DATABASE_URL when set; otherwise the Airflow connections (inside the api-server)."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings
    try:
        from airflow.models.connection import Connection

        from chatsync.airflow_support import connection_urls

        # the same conversion as the tasks' settings_from_airflow; here through the secrets backends
        db, redis_url = connection_urls(Connection.get_connection_from_secrets)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"no chatsync database for the health page: set CHATSYNC_DATABASE_URL or the "
                          f"Airflow connection 'chatsync_db' ({exc})") from None
    return Settings.from_env(database_url=db, redis_url=redis_url or settings.redis_url)  # Redis: optional


def snapshot(settings: Settings, now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    ops = sql.Identifier(settings.ops_schema)
    f = health.figures(settings, now - timedelta(minutes=settings.health_window_minutes), now)
    chat_rooms = load_mapping(settings.mapping_path)["chat_rooms"]
    with connection(settings) as conn:
        state = [dict(zip(("condition", "firing", "since", "last_notified_at", "value", "threshold", "message"), r))
                 for r in conn.execute(sql_file(settings, "web_alert_state", ops=ops))]
        charts = []
        for title, name, labels, agg in CHARTS:
            series = {}
            for span, delta, step in SPANS:
                rows = conn.execute(sql_file(settings, "web_series", ops=ops), {
                    "step": step, "agg": agg, "name": name, "labels": Jsonb(labels), "since": now - delta}).fetchall()
                series[span] = [(t.isoformat(), float(v)) for t, v in rows]
            charts.append({"title": title, "name": name, "labels": labels, "series": series})
        runs = [dict(zip(("run_id", "kind", "scope", "status", "triggered_by", "started_at", "finished_at",
                          "found", "repaired", "error"), r))
                for r in conn.execute(sql_file(settings, "web_last_runs", ops=ops), {"limit": 10})]
        dead = [dict(zip(("received_at", "stream_id", "event_id", "type", "reason"), r))
                for r in conn.execute(sql_file(settings, "web_dead_letters", ops=ops), {"limit": 20})]
        frozen = [{"room_id": r[0], "since": r[1]} for r in conn.execute(sql_file(
            settings, "web_frozen_chats", chat_rooms=chat_rooms.ident, room_id=chat_rooms.col("room_id"),
            updated_at=chat_rooms.col("updated_at"), writes_frozen=chat_rooms.col("writes_frozen")), {"limit": 50})]
    return {"generated_at": now.isoformat(), "window_minutes": settings.health_window_minutes,
            "healthy": not any(s["firing"] for s in state), "alerts": state, "figures": f, "charts": charts,
            "last_runs": runs, "dead_letters": dead, "frozen_chats": frozen}


def page_data(settings: Settings) -> dict:
    """The snapshot, and the pages' links to what the tasks stored (reports_dir, maybe an object
    store): looked up for the pages only, not on every Prometheus scrape."""
    from chatsync.validate import context_key

    docs = context_key(settings)
    return {**snapshot(settings), "latest_monthly_report": report_store.latest_monthly(settings),
            "data_docs": f"data-docs/{docs}/index.html" if report_store.stored_file(
                settings, ("data_docs", docs, "index.html")) else None}


# -- Prometheus ---------------------------------------------------------------------------------

def prometheus_text(snap: dict) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    f = snap["figures"]

    class Snapshot:
        def collect(self):
            def gauge(name, doc, value=None, labels=None, samples=()):
                g = GaugeMetricFamily(f"chatsync_{name}", doc, labels=list(labels or []))
                if value is not None:
                    g.add_metric([], float(value))
                for label_values, v in samples:
                    if v is not None:
                        g.add_metric(list(label_values), float(v))
                return g

            window = f"over the last {snap['window_minutes']} minutes"
            yield gauge("events_synced", f"Events synced {window}", f["events_synced"])
            yield gauge("dead_letters", f"Events dead-lettered {window}", f["dead_letters"])
            if f["sync_success_rate"] is not None:
                yield gauge("sync_success_rate", f"Synced / (synced + dead letters) {window}", f["sync_success_rate"])
            yield gauge("sync_delay_seconds", f"Sync delay (processed - occurred) {window}", labels=["stat"],
                        samples=[(("p50",), f["sync_delay_p50_s"]), (("p95",), f["sync_delay_p95_s"]),
                                 (("max",), f["sync_delay_max_s"])])
            yield gauge("open_inconsistencies", "Inconsistencies unresolved now, by kind", labels=["kind"],
                        samples=[((k,), v) for k, v in f["open_inconsistencies"].items()])
            yield gauge("inconsistencies_detected", f"Inconsistencies detected {window}, by kind", labels=["kind"],
                        samples=[((k,), v) for k, v in f["inconsistencies_detected"].items()])
            yield gauge("rows_repaired", f"Chat rows repaired {window}, by action", labels=["action"],
                        samples=[((a,), v) for a, v in f["rows_repaired"].items()])
            yield gauge("time_to_resolution_seconds", f"Detection to resolution of what was resolved {window}",
                        labels=["stat"], samples=[(("p50",), f["time_to_resolution_p50_s"]),
                                                  (("max",), f["time_to_resolution_max_s"])])
            yield gauge("runs_abandoned", f"Runs closed as abandoned (their process died) {window}",
                        f["runs_abandoned"])
            yield gauge("runs_open", "Consistency runs open now (detecting, repairing or validating)", f["runs_open"])
            b = f.get("backlog") or {}
            yield gauge("event_backlog", "Event stream: length, consumer-group lag, pending entries",
                        labels=["measure"], samples=[((k,), b.get(k)) for k in ("length", "lag", "pending")
                                                     if isinstance(b.get(k), int)])
            yield gauge("alert_firing", "1 while the alert condition is breached", labels=["condition"],
                        samples=[((s["condition"],), 1 if s["firing"] else 0) for s in snap["alerts"]])
            yield gauge("step_seconds", f"Mean duration of the consistency runs' steps {window}", labels=["step"],
                        samples=[((k,), v["mean"]) for k, v in f["step_seconds"].items()])

    registry = CollectorRegistry()
    registry.register(Snapshot())
    return generate_latest(registry)


# -- HTML -----------------------------------------------------------------------------------------
# The page is templates/health.html.j2 (package data, found through the package, so it works from an
# installed wheel); this module hands it data only: names, values, and the sparklines' coordinates.

METRICS = (  # (name on the page, figure, format of a value that is not None), in the page's order
    ("sync_success_rate", "sync_success_rate", "{:.2%}"),
    ("events_synced", "events_synced", "{}"),
    ("dead_letters", "dead_letters", "{}"),
    ("sync_delay_p50_s", "sync_delay_p50_s", "{}"),
    ("sync_delay_p95_s", "sync_delay_p95_s", "{}"),
    ("sync_delay_max_s", "sync_delay_max_s", "{}"),
    ("open_inconsistencies", "open_inconsistencies_total", "{}"),
    ("time_to_resolution_p50_s", "time_to_resolution_p50_s", "{}"),
    ("rows_repaired", "rows_repaired_total", "{}"),
    ("event_backlog", "event_backlog", "{}"),
    ("runs_abandoned", "runs_abandoned", "{}"),
    ("runs_open", "runs_open", "{}"),
)


def _as_text(value):
    """What every ``{{ }}`` of the templates shows: markup the template made itself (a macro's
    output) as it is; None as nothing; anything else as text, escaped with ``html.escape`` (so the
    entities are the ones the page has always used, ``&quot;`` and ``&#x27;`` included)."""
    from markupsafe import Markup

    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value)))


@functools.cache
def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("chatsync", "templates"), autoescape=True,
                              finalize=_as_text, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def _sparkline(points: list[tuple[str, float]], width: int = 320, height: int = 70) -> dict:
    """A chart's geometry, numbers only: the polyline's points (x from 0 to width, the highest value
    6 px from the top, the lowest 6 px from the bottom) and the values at its top and bottom."""
    if not points:
        return {"width": width, "height": height, "points": [], "hi": None, "lo": None}
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / max(len(points) - 1, 1)
    return {"width": width, "height": height, "hi": hi, "lo": lo,
            "points": [(i * step, height - 6 - (v - lo) / span * (height - 12)) for i, v in enumerate(values)]}


def render(snap: dict) -> str:
    f = snap["figures"]
    figures = {**f, "rows_repaired_total": sum(f["rows_repaired"].values()),
               "event_backlog": (f.get("backlog") or {}).get("length")}
    shown = [(name, "–" if figures[key] is None else fmt.format(figures[key])) for name, key, fmt in METRICS]
    return _templates().get_template("health.html.j2").render(
        status="healthy" if snap["healthy"] else "ALERTING", generated_at=snap["generated_at"],
        window_minutes=snap["window_minutes"], month=snap.get("latest_monthly_report"),
        data_docs=snap.get("data_docs"),
        alerts=[{**a, "firing": "FIRING" if a["firing"] else "ok"} for a in snap["alerts"]], metrics=shown,
        charts=[{"title": c["title"], "spans": [(span, _sparkline(c["series"][span])) for span, _, _ in SPANS]}
                for c in snap["charts"]],
        open_rows=[{"kind": k, "open": v} for k, v in f["open_inconsistencies"].items() if v],
        dead_letters=snap["dead_letters"], frozen_chats=snap["frozen_chats"], last_runs=snap["last_runs"])


def create_app(settings_provider=settings_for_web, page_dependencies: Sequence = (),
               login_url: Callable[[str], str] | None = None):
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

