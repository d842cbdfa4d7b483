"""The health page and the Prometheus endpoint (a FastAPI app the Airflow plugin mounts at
``/chatsync``; it also runs alone: ``uvicorn --factory chatsync.web:create_app``).

- ``GET /health``: current state (alert conditions), the metrics of the last window, charts of
  the last 24 h and 7 days (from metric_buckets), open inconsistencies, dead letters, frozen chats,
  last runs. Plain HTML with inline SVG: no script, nothing fetched from elsewhere.
- ``GET /health.json``: the same data.
- ``GET /metrics``: Prometheus text format, prefix ``chatsync_``.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone
from pathlib import Path

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync import health
from chatsync.config import Settings
from chatsync.db import connection, sql_file
from chatsync.errors import ConfigError
from chatsync.mapping import load_mapping

CHARTS = (  # (title, metric name, labels, aggregation per step)
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

        from chatsync.airflow_support import DB_CONN_ID, REDIS_CONN_ID, _postgres_url, _redis_url

        db = _postgres_url(Connection.get_connection_from_secrets(DB_CONN_ID))
        try:
            redis_url = _redis_url(Connection.get_connection_from_secrets(REDIS_CONN_ID))
        except Exception:  # noqa: BLE001 - Redis is optional for the page
            redis_url = settings.redis_url
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"no chatsync database for the health page: set CHATSYNC_DATABASE_URL or the "
                          f"Airflow connection 'chatsync_db' ({exc})") from None
    return Settings.from_env(database_url=db, redis_url=redis_url)


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
    monthly = sorted(Path(settings.reports_dir).glob("monthly/*/report.html"))
    return {"generated_at": now.isoformat(), "window_minutes": settings.health_window_minutes,
            "latest_monthly_report": monthly[-1].parent.name if monthly else None,
            "healthy": not any(s["firing"] for s in state), "alerts": state, "figures": f, "charts": charts,
            "last_runs": runs, "dead_letters": dead, "frozen_chats": frozen}


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

def _svg(points: list[tuple[str, float]], width: int = 320, height: int = 70) -> str:
    if not points:
        return f"<svg width='{width}' height='{height}' class='empty'><text x='8' y='38'>no data</text></svg>"
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / max(len(points) - 1, 1)
    coords = " ".join(f"{i * step:.1f},{height - 6 - (v - lo) / span * (height - 12):.1f}" for i, v in enumerate(values))
    return (f"<svg width='{width}' height='{height}'><polyline fill='none' stroke='#2b6cb0' stroke-width='1.5' "
            f"points='{coords}'/><text x='4' y='12' class='axis'>{hi:g}</text>"
            f"<text x='4' y='{height - 2}' class='axis'>{lo:g}</text></svg>")


def _table(rows: list[dict], columns: list[str], empty: str) -> str:
    if not rows:
        return f"<p class='none'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric(name: str, value, fmt: str = "{}") -> str:
    shown = "–" if value is None else fmt.format(value)
    return f"<div class='metric' data-metric='{name}'><span class='v'>{html.escape(shown)}</span><span class='n'>{name}</span></div>"


def render(snap: dict) -> str:
    f = snap["figures"]
    status = "healthy" if snap["healthy"] else "ALERTING"
    alerts = _table([{**a, "firing": "FIRING" if a["firing"] else "ok"} for a in snap["alerts"]],
                    ["condition", "firing", "value", "threshold", "since", "message"], "no condition evaluated yet")
    metrics = "".join([
        _metric("sync_success_rate", f["sync_success_rate"], "{:.2%}"),
        _metric("events_synced", f["events_synced"]), _metric("dead_letters", f["dead_letters"]),
        _metric("sync_delay_p50_s", f["sync_delay_p50_s"]), _metric("sync_delay_p95_s", f["sync_delay_p95_s"]),
        _metric("sync_delay_max_s", f["sync_delay_max_s"]),
        _metric("open_inconsistencies", f["open_inconsistencies_total"]),
        _metric("time_to_resolution_p50_s", f["time_to_resolution_p50_s"]),
        _metric("rows_repaired", sum(f["rows_repaired"].values())),
        _metric("event_backlog", (f.get("backlog") or {}).get("length")),
        _metric("runs_abandoned", f["runs_abandoned"]), _metric("runs_open", f["runs_open"]),
    ])
    charts = "".join(
        f"<div class='chart'><h3>{html.escape(c['title'])}</h3>"
        + "".join(f"<div><span class='span'>{span}</span>{_svg(c['series'][span])}</div>" for span, _, _ in SPANS)
        + "</div>" for c in snap["charts"])
    open_rows = [{"kind": k, "open": v} for k, v in f["open_inconsistencies"].items() if v]
    month = snap.get("latest_monthly_report")
    report_link = (f"<p><a id='monthly-report' href='reports/monthly/{html.escape(month)}/report.html'>monthly "
                   f"operations report {html.escape(month)}</a></p>") if month else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>chatsync health</title>
<style>body{{font-family:sans-serif;margin:24px;color:#1a202c}} h1 span{{padding:2px 10px;border-radius:4px}}
.healthy{{background:#c6f6d5}} .ALERTING{{background:#fed7d7}} table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #cbd5e0;padding:3px 8px;font-size:13px;text-align:left}} .metrics{{display:flex;flex-wrap:wrap;gap:10px}}
.metric{{border:1px solid #cbd5e0;border-radius:6px;padding:8px 12px;min-width:130px}} .metric .v{{display:block;font-size:22px}}
.metric .n{{font-size:11px;color:#4a5568}} .charts{{display:flex;flex-wrap:wrap;gap:16px}} .axis{{font-size:9px;fill:#718096}}
.span{{font-size:11px;color:#4a5568;display:block}} .none{{color:#718096}}</style></head><body>
<h1>chatsync <span class="{status}" id="status">{status}</span></h1>{report_link}
<p>generated {html.escape(snap['generated_at'])}; window: last {snap['window_minutes']} minutes</p>
<h2>Alert conditions</h2>{alerts}
<h2>Metrics (last {snap['window_minutes']} minutes)</h2><div class="metrics">{metrics}</div>
<h2>Trends</h2><div class="charts">{charts}</div>
<h2>Open inconsistencies</h2>{_table(open_rows, ["kind", "open"], "none")}
<h2>Dead letters (latest)</h2>{_table(snap["dead_letters"], ["received_at", "stream_id", "event_id", "type", "reason"], "none")}
<h2>Frozen chats</h2>{_table(snap["frozen_chats"], ["room_id", "since"], "none")}
<h2>Last runs</h2>{_table(snap["last_runs"], ["run_id", "kind", "scope", "status", "found", "repaired", "started_at", "triggered_by"], "none yet")}
</body></html>"""


def create_app(settings_provider=settings_for_web):
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="chatsync health", description=__doc__)

    @app.get("/health", response_class=HTMLResponse)
    def health_page() -> str:
        return render(snapshot(settings_provider()))

    @app.get("/health.json")
    def health_json() -> JSONResponse:
        import json

        return JSONResponse(json.loads(json.dumps(snapshot(settings_provider()), default=str)))

    @app.get("/reports/monthly/{month}/{name}")
    def monthly_report_file(month: str, name: str):
        from fastapi import HTTPException
        from fastapi.responses import FileResponse

        folder = (Path(settings_provider().reports_dir) / "monthly").resolve()
        path = (folder / month / name).resolve()
        if not path.is_file() or folder not in path.parents:  # nothing outside the reports folder
            raise HTTPException(status_code=404, detail="no such report file")
        return FileResponse(path)

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(prometheus_text(snapshot(settings_provider())), media_type=CONTENT_TYPE_LATEST)

    return app

