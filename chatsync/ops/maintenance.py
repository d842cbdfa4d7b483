"""Maintenance, keyed by data interval: the daily review and the weekly care of the database.

Every function takes the DAG run's [start, end) and reads only that interval (plus, for
comparisons, the intervals before it), so an Airflow rerun or backfill gives the same report;
what maintenance changes is recorded in maintenance_actions under its interval, so it is never
done twice. Reports are stored in maintenance_reports (JSON + Markdown) and written as files
under ``settings.reports_dir`` (``chatsync.ops.report_store``: a folder or an object store); a report
that needs a person raises one alert.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.config import Settings
from chatsync.consistency.detect import detect
from chatsync.consistency.repair import repair
from chatsync.consistency.scope import Scope
from chatsync.db.connection import connection, one
from chatsync.db.statements import ops_ident, sql_file, unsettled_runs
from chatsync.ops import metrics, report_store
from chatsync.ops.maintenance_reports import (
    charts,
    daily_markdown,
    jsonable,
    monthly_markdown,
    report_html,
    store,
    weekly_markdown,
)

log = logging.getLogger("chatsync.maintenance")
J = sql.SQL


def _f(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def sync_review(settings: Settings, start: datetime, end: datetime) -> dict:
    ops, window = ops_ident(settings), {"start": start, "end": end}
    with connection(settings) as conn:
        failures = [{"type": t, "error_class": c, "count": n} for t, c, n in
                    conn.execute(sql_file(settings, "maint_dead_letter_classes", ops=ops), window)]
        by_type = [{"type": t, "outcome": o, "events": n, "redeliveries": r} for t, o, n, r in
                   conn.execute(sql_file(settings, "maint_sync_by_type", ops=ops), window)]
        slowest = [{"event_id": e, "type": t, "room_id": r, "user_id": u, "delay_s": _f(d)} for e, t, r, u, d in
                   conn.execute(sql_file(settings, "maint_slowest_syncs", ops=ops), {**window, "limit": 10})]
    events = sum(x["events"] for x in by_type)
    dead = sum(x["count"] for x in failures)
    return {"events": events, "dead_letters": dead,
            "failure_rate": _f(dead / (events + dead)) if events + dead else None,
            "redeliveries": sum(x["redeliveries"] for x in by_type),
            "failures": failures, "by_type": by_type, "slowest": slowest}


def _delays(conn, settings: Settings, start: datetime, end: datetime) -> dict:
    delays = metrics.sync_delays(conn, settings, start=start, end=end)
    return {"events": delays["events"], **{k: _f(delays[k]) for k in ("p50_s", "p95_s", "p99_s")}}


def performance(settings: Settings, start: datetime, end: datetime) -> dict:
    """The day's sync delays and run durations against the 7 days before; a figure more than
    ``regression_factor`` times its baseline is a regression."""
    from chatsync.ops.health import step_seconds

    base_start = start - timedelta(days=7)
    with connection(settings) as conn:
        day, baseline = _delays(conn, settings, start, end), _delays(conn, settings, base_start, start)
        steps_day = step_seconds(conn, settings, start, end)
        steps_base = step_seconds(conn, settings, base_start, start)
    regressions = []

    def compare(name: str, value, base) -> None:
        if value is not None and base and value > settings.regression_factor * base:
            regressions.append({"metric": name, "value": value, "baseline": base,
                                "ratio": round(value / base, 2)})

    for key in ("p50_s", "p95_s", "p99_s"):
        compare(f"sync_delay_{key}", day[key], baseline[key])
    for step, v in steps_day.items():
        compare(f"{step}_seconds_mean", v["mean"], (steps_base.get(step) or {}).get("mean"))
    return {"sync_delay": day, "sync_delay_previous_7_days": baseline, "step_seconds": steps_day,
            "step_seconds_previous_7_days": steps_base, "regressions": regressions}


def resolve_open(settings: Settings, start: datetime, end: datetime) -> dict:
    """Re-check every key still open at the end of the interval and repair what still differs
    (the engine, scope keys); keys found by several runs over the last 7 days are escalated."""
    ops = ops_ident(settings)
    with connection(settings) as conn:
        keys = conn.execute(sql_file(settings, "maint_open_keys", ops=ops), {"end": end}).fetchall()
        recurring = [{"kind": k, "room_id": r, "user_id": u, "runs": n, "first": a, "last": b}
                     for k, r, u, n, a, b in conn.execute(sql_file(settings, "maint_recurring_keys", ops=ops), {
                         "since": end - timedelta(days=7), "end": end, "min_runs": settings.recurring_runs})]
    out = {"open_keys": len(keys), "rechecked_run": None, "still_differing": 0, "repaired": 0,
           "recurring": recurring}
    if not keys:
        return out
    rooms = tuple(sorted({r for r, _, is_room in keys if is_room}))
    participants = tuple(sorted({(r, u) for r, u, is_room in keys if not is_room}))
    found = detect(settings, Scope("keys", rooms=rooms, participants=participants), triggered_by="maintenance:daily")
    out.update(rechecked_run=found.run_id, still_differing=found.rows_to_change)
    if found.rows_to_change:
        out["repaired"] = repair(settings, found.run_id).repaired
    with connection(settings) as conn:
        conn.execute(J("UPDATE {}.runs SET status = %s, finished_at = now() WHERE run_id = %s").format(ops),
                     ("repaired" if found.rows_to_change else "consistent", found.run_id))
    return out


def room_domain_violations(settings: Settings, start: datetime, end: datetime) -> dict:
    """The room values repairs held back over the interval, outside their field's domain (the
    mapping's domains:): the room side's data to fix, or a domain to widen."""
    with connection(settings) as conn:
        by_field = [{"entity": e, "field": f, "keys": k, "recorded": n, "runs": r,
                     "latest": {"value": v, "room_id": room, "user_id": user}}
                    for e, f, k, n, r, v, room, user in conn.execute(
                        sql_file(settings, "maint_room_domain_violations", ops=ops_ident(settings)),
                        {"start": start, "end": end})]
    return {"keys": sum(x["keys"] for x in by_field), "by_field": by_field}


def daily_review(settings: Settings, start: datetime, end: datetime) -> dict:
    """The read-only half of the daily run: sync-log review, performance analysis and the room
    values held back."""
    return jsonable({"sync_review": sync_review(settings, start, end),
                     "performance": performance(settings, start, end),
                     "room_domain_violations": room_domain_violations(settings, start, end)})


def daily_report(settings: Settings, start: datetime, end: datetime, review: dict, resolution: dict) -> dict:
    report = {"interval": [start.isoformat(), end.isoformat()], **review, "resolution": jsonable(resolution)}
    attention = bool(report["performance"]["regressions"] or report["resolution"]["recurring"]
                     or report.get("room_domain_violations", {}).get("by_field"))
    return store(settings, "daily", start, end, report, daily_markdown(report), attention)


def daily(settings: Settings, start: datetime, end: datetime) -> dict:
    return daily_report(settings, start, end, daily_review(settings, start, end), resolve_open(settings, start, end))


def error_review(settings: Settings, start: datetime, end: datetime) -> dict:
    with connection(settings) as conn:
        rows = conn.execute(sql_file(settings, "maint_week_errors", ops=ops_ident(settings)),
                            {"start": start, "end": end}).fetchall()
    return {"top_errors": [{"error_class": c, "this_week": a, "previous_week": b,
                            "trend": "new" if not b else f"{(a - b) / b:+.0%}"} for c, a, b in rows]}


def _care_tables(settings: Settings) -> list[tuple[str, str]]:
    """(schema, table) of the tables the maintenance looks after: the chat side and chatsync's own."""
    from chatsync.model.mapping import load_mapping

    m = load_mapping(settings.mapping_path)
    ops = settings.ops_schema
    return [(m["chat_rooms"].schema, m["chat_rooms"].name),
            (m["chat_participants"].schema, m["chat_participants"].name),
            *((ops, t) for t in ("runs", "inconsistencies", "repair_audit", "sync_log", "dead_letters",
                                 "metrics", "metric_buckets", "alert_log"))]


def _tables_params(tables: list[tuple[str, str]]) -> dict[str, list[str]]:
    return {"schemas": [s for s, _ in tables], "names": [n for _, n in tables]}


def _leaf_density(conn, index: str) -> float | None:
    try:
        with conn.transaction():
            density = conn.execute("SELECT avg_leaf_density FROM pgstatindex(%s::regclass)", (index,)).fetchone()[0]
            return None if density is None or density != density else float(density)  # NaN: no leaf page yet
    except Exception as exc:  # noqa: BLE001 - an empty index or no pgstattuple: bloat unknown
        log.info("no leaf density for %s: %s", index, exc)
        return None


def index_care(settings: Settings, start: datetime) -> dict:
    """Bloat (pgstattuple's leaf density), unused and duplicate indexes; REINDEX CONCURRENTLY the
    bloated B-trees (once per week, even on a rerun), then ANALYZE."""
    tables = _care_tables(settings)
    ops = ops_ident(settings)
    out: dict = {"reindexed": [], "failed": [], "unused": [], "duplicates": [], "bloat_measured": True}
    with connection(settings, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        except Exception as exc:  # noqa: BLE001 - not allowed for this role: report, skip reindex
            out["bloat_measured"] = False
            out["bloat_note"] = f"pgstattuple unavailable ({str(exc).strip()}): bloat not measured"
        indexes = [dict(zip(("index", "table", "unique", "primary", "bytes", "scans", "am", "signature",
                             "schema_name", "index_relname"), r))
                   for r in conn.execute(sql_file(settings, "maint_indexes"), _tables_params(tables))]
        seen: dict[str, str] = {}
        for ix in indexes:
            if ix["signature"] in seen:
                out["duplicates"].append({"index": ix["index"], "same_as": seen[ix["signature"]]})
            seen.setdefault(ix["signature"], ix["index"])
            if ix["scans"] == 0 and not (ix["unique"] or ix["primary"]):
                out["unused"].append({"index": ix["index"], "bytes": ix["bytes"]})
            measured = out["bloat_measured"] and ix["am"] == "btree"
            ix["leaf_density"] = _leaf_density(conn, ix["index"]) if measured else None
        for ix in indexes:
            density = ix["leaf_density"]
            if (density is None or density >= settings.reindex_max_leaf_density
                    or ix["bytes"] < settings.reindex_min_bytes):
                continue
            done = conn.execute(J("SELECT details FROM {}.maintenance_actions WHERE kind = 'weekly' AND "
                                  "interval_start = %s AND action = 'reindex' AND target = %s").format(ops),
                                (start, ix["index"])).fetchone()
            if done:
                out["reindexed"].append({**done[0], "already_done": True})
                continue
            t0 = time.perf_counter()
            try:
                conn.execute(J("REINDEX INDEX CONCURRENTLY {}").format(
                    sql.Identifier(ix["schema_name"], ix["index_relname"])))
            except Exception as exc:  # noqa: BLE001 - one index failing must not stop the others
                out["failed"].append({"index": ix["index"], "error": str(exc).strip()})
                continue
            after = one(conn.execute("SELECT pg_relation_size(%s::regclass)", (ix["index"],)))[0]
            details = {"index": ix["index"], "leaf_density": _f(density, 1), "bytes_before": ix["bytes"],
                       "bytes_after": after, "seconds": elapsed(t0)}
            conn.execute(J("INSERT INTO {}.maintenance_actions (kind, interval_start, action, target, details) "
                           "VALUES ('weekly', %s, 'reindex', %s, %s) ON CONFLICT DO NOTHING").format(ops),
                         (start, ix["index"], Jsonb(details)))
            out["reindexed"].append(details)
        for schema, name in tables:
            conn.execute(J("ANALYZE {}").format(sql.Identifier(schema, name)))
    out["indexes"] = [{k: ix[k] for k in ("index", "table", "bytes", "scans", "leaf_density")} for ix in indexes]
    out["analyzed"] = [f"{s}.{n}" for s, n in tables]
    return out


def _retention_rules(settings: Settings) -> list[tuple[str, int, sql.Composable]]:
    """(table, days, condition on alias a with %(cutoff)s): what may go, and what must stay."""
    ops = ops_ident(settings)
    return [
        ("sync_log", settings.retention_sync_log_days, J("a.processed_at < %(cutoff)s")),
        ("dead_letters", settings.retention_dead_letters_days, J("a.received_at < %(cutoff)s")),
        ("metrics", settings.retention_metrics_days, J("a.recorded_at < %(cutoff)s")),
        ("metric_buckets", settings.retention_metrics_days, J("a.bucket_start < %(cutoff)s")),
        ("alert_log", settings.retention_alert_log_days, J("a.sent_at < %(cutoff)s")),
        ("inconsistencies", settings.retention_findings_days,
         J("a.resolved_at IS NOT NULL AND a.resolved_at < %(cutoff)s")),
        # each run holding a key back records its value again: kept as long as findings
        ("room_domain_violations", settings.retention_findings_days, J("a.detected_at < %(cutoff)s")),
        # the audit outlives the rollback window, and any key an open inconsistency still names
        ("repair_audit", settings.rollback_window_days, J(
            "a.changed_at < %(cutoff)s AND NOT EXISTS (SELECT 1 FROM {ops}.inconsistencies AS o WHERE "
            "o.run_id = ANY({unsettled}) "
            "AND o.resolved_at IS NULL AND o.room_id = a.room_id AND o.user_id IS NOT DISTINCT FROM a.user_id)"
        ).format(ops=ops, unsettled=unsettled_runs(settings))),
    ]


def retention(settings: Settings, start: datetime, end: datetime) -> dict:
    ops = ops_ident(settings)
    deleted: dict[str, dict] = {}
    for table, days, condition in _retention_rules(settings):
        cutoff = end - timedelta(days=days)
        statement = sql_file(settings, "maint_delete_batch", table=sql.Identifier(settings.ops_schema, table),
                             condition=condition)
        total, batches, t0 = 0, 0, time.perf_counter()
        while True:
            with connection(settings) as conn:
                n = conn.execute(statement, {"cutoff": cutoff, "batch": settings.retention_batch_rows}).rowcount
            total += max(n, 0)
            batches += 1
            if n < settings.retention_batch_rows:
                break
        deleted[table] = {"older_than": cutoff.isoformat(), "deleted": total, "batches": batches,
                          "seconds": elapsed(t0)}
        if total:
            with connection(settings) as conn:
                conn.execute(J("INSERT INTO {}.maintenance_actions (kind, interval_start, action, target, details) "
                               "VALUES ('weekly', %s, 'delete', %s, %s) ON CONFLICT (kind, interval_start, action, "
                               "target) DO UPDATE SET details = jsonb_set(maintenance_actions.details, '{{deleted}}', "
                               "to_jsonb((maintenance_actions.details->>'deleted')::bigint + %s))").format(ops),
                             (start, table, Jsonb(deleted[table]), total))
    deleted["gx_results"] = _gx_results_cleanup(settings, end - timedelta(days=settings.retention_metrics_days))
    return deleted


def _gx_results_cleanup(settings: Settings, cutoff: datetime) -> dict:
    from chatsync.validation.gx import context_dir

    folder = context_dir(settings) / "gx" / "uncommitted" / "validations"
    removed = 0
    if folder.is_dir():
        for path in folder.rglob("*.json"):
            if path.stat().st_mtime < cutoff.timestamp():
                path.unlink()
                removed += 1
    return {"older_than": cutoff.isoformat(), "deleted": removed}


def weekly_report(settings: Settings, start: datetime, end: datetime, errors: dict, indexes: dict,
                  cleanup: dict) -> dict:
    record_table_sizes(settings, "weekly", start)
    report = {"interval": [start.isoformat(), end.isoformat()], "errors": errors, "indexes": indexes,
              "retention": cleanup}
    return store(settings, "weekly", start, end, report, weekly_markdown(report), bool(indexes["failed"]))


def weekly(settings: Settings, start: datetime, end: datetime) -> dict:
    return weekly_report(settings, start, end, error_review(settings, start, end), index_care(settings, start),
                         retention(settings, start, end))


def record_table_sizes(settings: Settings, kind: str, start: datetime) -> None:
    with connection(settings) as conn:
        conn.execute(sql_file(settings, "maint_record_table_sizes", ops=ops_ident(settings)),
                     {"kind": kind, "start": start, **_tables_params(_care_tables(settings))})


def capacity(settings: Settings, horizon_days: int = 90) -> dict:
    """Each table's size now, its growth per day over the measurements so far (least squares) and
    the size that growth projects in `horizon_days`."""
    with connection(settings) as conn:
        rows = conn.execute(sql_file(settings, "maint_table_growth", ops=ops_ident(settings))).fetchall()
    series: dict[str, list[tuple[datetime, int]]] = {}
    for table, at, size, _ in rows:
        series.setdefault(table, []).append((at, size))
    out = {}
    for table, points in series.items():
        xs = [(at - points[0][0]).total_seconds() / 86400 for at, _ in points]
        ys = [size for _, size in points]
        slope = None
        if len(points) >= 2 and xs[-1] > 0:
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            den = sum((x - mx) ** 2 for x in xs)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None
        out[table] = {"bytes_now": ys[-1], "measurements": len(points),
                      "bytes_per_day": None if slope is None else round(slope),
                      f"projected_bytes_in_{horizon_days}_days":
                          None if slope is None else max(round(ys[-1] + slope * horizon_days), 0)}
    return out


def full_audit(settings: Settings, start: datetime, end: datetime) -> dict:
    """Scope full, detect only, then the GX suite over the whole chat side with its Data Docs."""
    from chatsync.consistency.engine import validate_run

    found = detect(settings, Scope("full"), triggered_by="maintenance:monthly")
    validation = validate_run(settings, found.run_id)
    return {"run_id": found.run_id, "counts": found.counts, "rows_to_change": found.rows_to_change,
            "total_rows": found.total_rows, "seconds": round(found.seconds, 3),
            "validation": {"passed": validation["passed"], "evaluated": validation["evaluated"],
                           "failed": [f"{f['expectation']} on {f['table']}" for f in validation["failed"]],
                           "docs_index": validation.get("docs_index")}}


def month_review(settings: Settings, start: datetime, end: datetime) -> dict:
    with connection(settings) as conn:
        days = [{"day": d.date().isoformat(), "events": _f(e, 0), "dead_letters": _f(x, 0), "delay_p95_s": _f(p),
                 "open_max": _f(o, 0)} for d, e, x, p, o in
                conn.execute(sql_file(settings, "maint_month_daily", ops=ops_ident(settings)),
                             {"start": start, "end": end})]

    def trend(key: str):
        values = [d[key] for d in days if d[key] is not None]
        if len(values) < 2:
            return None
        half = len(values) // 2
        first, second = sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)
        return None if not first else round(second / first - 1, 3)

    return {"days": days, "trend": {k: trend(k) for k in ("events", "dead_letters", "delay_p95_s", "open_max")}}


def monthly_report(settings: Settings, start: datetime, end: datetime, audit: dict) -> dict:
    record_table_sizes(settings, "monthly", start)
    review, cap = month_review(settings, start, end), capacity(settings)
    report = {"interval": [start.isoformat(), end.isoformat()], "audit": audit, "review": review, "capacity": cap}
    folder = ("monthly", f"{start:%Y-%m}")
    report["charts"] = charts(settings, folder, review, cap)
    markdown = monthly_markdown(report)
    html = report_store.write(settings, (*folder, "report.html"),
                              report_html(markdown, f"chatsync monthly report {start:%Y-%m}"))
    attention = not audit["validation"]["passed"]
    out = store(settings, "monthly", start, end, report, markdown, attention, parts=(*folder, "report.md"))
    return {**out, "folder": str(html.parent)}



def elapsed(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)
