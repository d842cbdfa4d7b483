"""Metrics of a consistency run, stored in <ops>.metrics (one row per name and labels).

Names (README "Metrics"): inconsistencies_detected{kind}, rows_to_change, rows_repaired{action},
findings_skipped, step_seconds{step}, time_to_resolution_seconds{stat=p50|max|count}.
"""

from __future__ import annotations

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.config import Settings
from chatsync.db import runs
from chatsync.db.connection import connection, one
from chatsync.db.statements import sql_file


def record_run(settings: Settings, run_id: int) -> dict:
    """(Re)write the metrics of one run from its record, findings and audit. Idempotent."""
    ops = settings.ops_schema
    with connection(settings) as conn:
        run = runs.get(conn, ops, run_id)
        if run is None:
            raise ValueError(f"run {run_id} does not exist")
        rows: list[tuple[str, dict, float]] = []
        for kind, n in (run["counts"] or {}).items():
            rows.append(("inconsistencies_detected", {"kind": kind}, n))
        rows.append(("rows_to_change", {}, run["rows_to_change"] or 0))
        for action, n in conn.execute(sql.SQL(
                "SELECT action, count(*) FROM {}.repair_audit WHERE run_id = %s GROUP BY action")
                .format(sql.Identifier(ops)), (run_id,)):
            rows.append(("rows_repaired", {"action": action}, n))
        rows.append(("findings_skipped", {}, run["skipped"] or 0))
        for step, seconds in (run["step_durations"] or {}).items():
            rows.append(("step_seconds", {"step": step}, seconds))
        ttr = one(conn.execute(sql_file(settings, "time_to_resolution", ops=sql.Identifier(ops)),
                               {"run_id": run_id}))
        ttr_summary = {"count": ttr[0], "p50": ttr[1], "max": ttr[2]}
        for stat, value in ttr_summary.items():
            if value is not None:
                rows.append(("time_to_resolution_seconds", {"stat": stat}, float(value)))
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {}.metrics WHERE run_id = %s").format(sql.Identifier(ops)), (run_id,))
            with conn.cursor() as cur:
                cur.executemany(sql.SQL("INSERT INTO {}.metrics (run_id, name, labels, value) VALUES (%s, %s, %s, %s)")
                                .format(sql.Identifier(ops)),
                                [(run_id, name, Jsonb(labels), float(value)) for name, labels, value in rows])
    return {"metrics": len(rows), "time_to_resolution_seconds": ttr_summary}


def sync_delays(conn, settings: Settings, *, start=None, end=None, worker: str | None = None) -> dict:
    """The sync log's figures over [start, end) and/or one worker (sql/ops/sync_delays.sql)."""
    n, applied, pct, worst, span, redeliveries = one(conn.execute(
        sql_file(settings, "sync_delays", ops=sql.Identifier(settings.ops_schema)),
        {"start": start, "end": end, "worker": worker}))
    p50, p95, p99 = pct or (None, None, None)
    return {"events": n, "applied": applied, "p50_s": p50, "p95_s": p95, "p99_s": p99, "max_s": worst,
            "span_s": span, "redeliveries": int(redeliveries)}
