"""Health: the platform's sync metrics over a time window, the alert conditions, and their state.

``figures`` computes every metric over [start, end) from the ops tables (and the stream backlog
from Redis when configured). ``record_bucket`` stores one bucket of them (metric_buckets).
``evaluate`` checks the thresholds (one configuration: ``Settings``) and notifies once per
condition when it starts to breach, again only after ``alert_repeat_minutes`` while it lasts,
and once more with "resolved" when it clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.db.statements import ops_ident, sql_file
from chatsync.model.rules import KINDS
from chatsync.ops import metrics

J = sql.SQL


def _f(x):
    return None if x is None else round(float(x), 6)


def backlog(settings: Settings) -> dict | None:
    """Stream length, consumer-group lag and pending entries; None when Redis is not configured,
    {"error": ...} when it cannot be read."""
    if not settings.redis_url:
        return None
    from chatsync.events.cache import client_for
    from chatsync.events.worker import stream_backlog

    client = client_for(settings)
    try:
        return stream_backlog(client, settings.events_stream)
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        client.close()


def step_seconds(conn, settings: Settings, start: datetime, end: datetime) -> dict:
    """Mean and max duration of each step of the consistency runs over [start, end)."""
    return {k: {"mean": _f(mean), "max": _f(mx), "runs": n} for k, mean, mx, n in conn.execute(
        sql_file(settings, "health_step_durations", ops=ops_ident(settings)), {"start": start, "end": end})}


def figures(settings: Settings, start: datetime, end: datetime, *, with_backlog: bool = True) -> dict:
    """Every metric of the README's table over [start, end), plus what is open right now."""
    ops = ops_ident(settings)
    window = {"start": start, "end": end}
    with connection(settings) as conn:
        road = metrics.sync_delays(conn, settings, start=start, end=end)
        events, applied, retries = road["events"], road["applied"], road["redeliveries"]
        dead = one(conn.execute(J("SELECT count(*) FROM {}.dead_letters WHERE received_at >= %(start)s "
                              "AND received_at < %(end)s").format(ops), window))[0]
        open_by_kind = dict(conn.execute(sql_file(settings, "health_open_inconsistencies", ops=ops)).fetchall())
        detected = dict(conn.execute(sql_file(settings, "health_detected_by_kind", ops=ops), window).fetchall())
        repairs = dict(conn.execute(sql_file(settings, "health_repairs", ops=ops), window).fetchall())
        resolved, ttr_p50, ttr_max = one(conn.execute(sql_file(settings, "health_resolution", ops=ops), window))
        steps = step_seconds(conn, settings, start, end)
        abandoned, open_runs = one(conn.execute(sql_file(settings, "health_runs_abandoned", ops=ops), window))
    total = events + dead
    return {
        "start": start.isoformat(), "end": end.isoformat(),
        "events_synced": events, "events_applied": applied, "dead_letters": dead, "redeliveries": int(retries),
        "sync_success_rate": _f(events / total) if total else None,
        "error_rate": _f(dead / total) if total else None,
        "sync_delay_p50_s": _f(road["p50_s"]), "sync_delay_p95_s": _f(road["p95_s"]),
        "sync_delay_max_s": _f(road["max_s"]),
        "inconsistencies_detected": {k: detected.get(k, 0) for k in KINDS},
        "open_inconsistencies": {k: open_by_kind.get(k, 0) for k in KINDS},
        "open_inconsistencies_total": sum(open_by_kind.values()),
        "rows_repaired": {a: repairs.get(a, 0) for a in ("insert", "update", "delete")},
        "resolved": resolved, "time_to_resolution_p50_s": _f(ttr_p50), "time_to_resolution_max_s": _f(ttr_max),
        "step_seconds": steps,
        "runs_abandoned": abandoned, "runs_open": open_runs,
        "backlog": backlog(settings) if with_backlog else None,
    }


def bucket_rows(f: dict) -> list[tuple[str, dict, float | None]]:
    """The figures as (name, labels, value) rows: the Prometheus names without the prefix."""
    rows: list[tuple[str, dict, float | None]] = [
        ("events_synced", {}, f["events_synced"]), ("events_applied", {}, f["events_applied"]),
        ("dead_letters", {}, f["dead_letters"]), ("redeliveries", {}, f["redeliveries"]),
        ("sync_success_rate", {}, f["sync_success_rate"]), ("error_rate", {}, f["error_rate"]),
        ("sync_delay_seconds", {"stat": "p50"}, f["sync_delay_p50_s"]),
        ("sync_delay_seconds", {"stat": "p95"}, f["sync_delay_p95_s"]),
        ("sync_delay_seconds", {"stat": "max"}, f["sync_delay_max_s"]),
        ("open_inconsistencies", {}, f["open_inconsistencies_total"]),
        ("inconsistencies_resolved", {}, f["resolved"]),
        ("time_to_resolution_seconds", {"stat": "p50"}, f["time_to_resolution_p50_s"]),
        ("time_to_resolution_seconds", {"stat": "max"}, f["time_to_resolution_max_s"]),
        ("runs_abandoned", {}, f["runs_abandoned"]), ("runs_open", {}, f["runs_open"]),
    ]
    rows += [("inconsistencies_detected", {"kind": k}, v) for k, v in f["inconsistencies_detected"].items()]
    rows += [("rows_repaired", {"action": a}, v) for a, v in f["rows_repaired"].items()]
    rows += [("step_seconds", {"step": s, "stat": "mean"}, v["mean"]) for s, v in f["step_seconds"].items()]
    b = f.get("backlog") or {}
    for key in ("length", "lag", "pending"):
        if isinstance(b.get(key), int):
            rows.append(("event_backlog", {"measure": key}, b[key]))
    return rows


def record_bucket(settings: Settings, start: datetime, end: datetime) -> dict:
    """Compute and store the bucket [start, end); rerunning the same interval rewrites the same rows."""
    f = figures(settings, start, end, with_backlog=end >= datetime.now(timezone.utc) - timedelta(minutes=10))
    rows = bucket_rows(f)
    with connection(settings) as conn:
        conn.execute(sql_file(settings, "health_record_bucket", ops=ops_ident(settings)), {
            "start": start, "seconds": int((end - start).total_seconds()),
            "names": [r[0] for r in rows], "labels": [Jsonb(r[1]) for r in rows],
            "values": [None if r[2] is None else float(r[2]) for r in rows]})
    return {"bucket_start": start.isoformat(), "metrics": len(rows), "figures": f}


@dataclass(frozen=True)
class Condition:
    name: str
    breached: bool
    value: float | None
    threshold: float
    message: str


def conditions(settings: Settings, f: dict) -> list[Condition]:
    """The three alert thresholds, each one condition with its figures."""
    limit_delay = settings.sync_delay_ms / 1000
    p95 = f["sync_delay_p95_s"]
    events = f["events_synced"] + f["dead_letters"]
    rate = f["error_rate"]
    open_total = f["open_inconsistencies_total"]
    open_kinds = ", ".join(f"{k} {v}" for k, v in f["open_inconsistencies"].items() if v) or "none"
    window = f"{f['start']} .. {f['end']}"
    return [
        Condition("sync_delay", p95 is not None and p95 > limit_delay, p95, limit_delay,
                  f"sync delay p95 {p95}s (max {f['sync_delay_max_s']}s) over {f['events_synced']} events "
                  f"in {window}; threshold {limit_delay}s"),
        Condition("error_rate", rate is not None and events >= settings.error_rate_min_events
                  and rate > settings.error_rate, rate, settings.error_rate,
                  f"sync error rate {0 if rate is None else rate:.2%} ({f['dead_letters']} dead letters of "
                  f"{events} events) in {window}; threshold {settings.error_rate:.2%}"
                  + (f"; not judged: fewer than {settings.error_rate_min_events} events in the window "
                     "(error_rate_min_events)" if events < settings.error_rate_min_events else "")),
        Condition("inconsistency_count", open_total > settings.inconsistency_count, open_total,
                  settings.inconsistency_count,
                  f"{open_total} inconsistencies open ({open_kinds}); threshold {settings.inconsistency_count}"),
    ]


def evaluate(settings: Settings, *, at: datetime | None = None, source: str = "cli",
             link: str | None = None) -> dict:
    """Check the thresholds over the last ``health_window_minutes`` and send what changed."""
    end = at or datetime.now(timezone.utc)
    f = figures(settings, end - timedelta(minutes=settings.health_window_minutes), end)
    sent = []
    ops = ops_ident(settings)
    with connection(settings) as conn:
        for c in conditions(settings, f):
            sent += _transition(conn, settings, ops, c, end, source, link)
    return {"figures": f, "alerts": sent}


def _transition(conn, settings: Settings, ops, c: Condition, now: datetime, source: str, link) -> list[dict]:
    with conn.transaction():
        row = conn.execute(sql.SQL("SELECT firing, last_notified_at FROM {}.alert_state WHERE condition = %s "
                                   "FOR UPDATE").format(ops), (c.name,)).fetchone()
        firing, last = (row or (False, None))
        event = None
        if c.breached and not firing:
            event = "firing"
        elif c.breached and settings.alert_repeat_minutes and last is not None \
                and now - last >= timedelta(minutes=settings.alert_repeat_minutes):
            event = "repeat"
        elif not c.breached and firing:
            event = "resolved"
        since_changed = row is None or firing != c.breached
        conn.execute(sql.SQL(
            "INSERT INTO {ops}.alert_state AS s "
            "(condition, firing, since, last_notified_at, value, threshold, message) "
            "VALUES (%(c)s, %(firing)s, %(now)s, %(notified)s, %(value)s, %(threshold)s, %(message)s) "
            "ON CONFLICT (condition) DO UPDATE SET firing = EXCLUDED.firing, value = EXCLUDED.value, "
            "threshold = EXCLUDED.threshold, message = EXCLUDED.message, updated_at = clock_timestamp(), "
            "since = CASE WHEN %(changed)s THEN EXCLUDED.since ELSE s.since END, "
            "last_notified_at = coalesce(EXCLUDED.last_notified_at, s.last_notified_at)").format(ops=ops),
            {"c": c.name, "firing": c.breached, "now": now, "notified": now if event else None,
             "value": c.value, "threshold": c.threshold, "message": c.message, "changed": since_changed})
        if event is None:
            return []
        title = {"firing": "ALERT", "repeat": "STILL FIRING", "resolved": "RESOLVED"}[event]
        message = f"chatsync {title}: {c.name}: {c.message}" + (f" — {link}" if link else "")
        conn.execute(sql.SQL("INSERT INTO {}.alert_log (condition, event, message, value, threshold, source) "
                             "VALUES (%s, %s, %s, %s, %s, %s)").format(ops),
                     (c.name, event, message, c.value, c.threshold, source))
    if event == "resolved":
        alerts.resolve(c.name, message, value=c.value, threshold=c.threshold, source=source)
    else:
        alerts.notify(c.name, message, value=c.value, threshold=c.threshold, source=source, event=event)
    return [{"condition": c.name, "event": event, "message": message}]
