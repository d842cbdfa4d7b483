"""The health page's data and HTML: a snapshot of the health figures, alert conditions, the last
runs, open findings, dead letters and frozen chats, the 24 h and 7 day charts (inline SVG), and
links to the stored reports; rendered with Jinja2 (autoescaped)."""

from __future__ import annotations

import functools
import html
from datetime import datetime, timedelta, timezone

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.config import Settings
from chatsync.db.connection import connection
from chatsync.db.statements import sql_file
from chatsync.model.mapping import load_mapping
from chatsync.ops import health, report_store

SPANS = (("24 h", timedelta(hours=24), "5 minutes"), ("7 days", timedelta(days=7), "1 hour"))


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
    from chatsync.validation.gx import context_key

    docs = context_key(settings)
    return {**snapshot(settings), "latest_monthly_report": report_store.latest_monthly(settings),
            "data_docs": f"data-docs/{docs}/index.html" if report_store.stored_file(
                settings, ("data_docs", docs, "index.html")) else None}


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
def templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("chatsync.web", "templates"), autoescape=True,
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
    return templates().get_template("health.html.j2").render(
        status="healthy" if snap["healthy"] else "ALERTING", generated_at=snap["generated_at"],
        window_minutes=snap["window_minutes"], month=snap.get("latest_monthly_report"),
        data_docs=snap.get("data_docs"),
        alerts=[{**a, "firing": "FIRING" if a["firing"] else "ok"} for a in snap["alerts"]], metrics=shown,
        charts=[{"title": c["title"], "spans": [(span, _sparkline(c["series"][span])) for span, _, _ in SPANS]}
                for c in snap["charts"]],
        open_rows=[{"kind": k, "open": v} for k, v in f["open_inconsistencies"].items() if v],
        dead_letters=snap["dead_letters"], frozen_chats=snap["frozen_chats"], last_runs=snap["last_runs"])


CHARTS: tuple[tuple[str, str, dict[str, str], str], ...] = (  # (title, metric name, labels, aggregation per step)
    ("events synced", "events_synced", {}, "sum"),
    ("sync delay p95 (s)", "sync_delay_seconds", {"stat": "p95"}, "avg"),
    ("error rate", "error_rate", {}, "avg"),
    ("open inconsistencies", "open_inconsistencies", {}, "avg"),
)
