"""The run record: one row per consistency pass (or rollback) in <ops>.runs.

A run is open until its ``finished_at`` is set. While a process works on it, that process holds
the run's lock (chatsync.db.locks), so a run whose process died is found and closed as
``abandoned`` by the next pass (``close_abandoned``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.db import locks

log = logging.getLogger("chatsync.runs")


_JSON_FIELDS = {"scope_params", "counts", "validation", "step_durations"}
_FIELDS = {"scope", "status", "detect_started_at", "finished_at", "counts", "rows_to_change", "total_rows",
           "repaired", "skipped", "validation", "step_durations", "error", "settled_at"}


def create(conn, settings, *, scope: str, params: dict, triggered_by: str, kind: str = "check") -> int:
    """A new open run, held by this process (its lock is taken before conn's transaction makes
    the run visible, so no pass ever sees it open and unheld)."""
    row = conn.execute(
        sql.SQL("INSERT INTO {}.runs (kind, scope, scope_params, triggered_by, lease_until) "
                "VALUES (%s, %s, %s, %s, CASE WHEN %s > 0 THEN clock_timestamp() + make_interval(secs => %s) END) "
                "RETURNING run_id").format(sql.Identifier(settings.ops_schema)),
        (kind, scope, Jsonb(params), triggered_by, settings.run_lease_seconds, settings.run_lease_seconds)).fetchone()
    locks.hold_run(settings, row[0])
    return row[0]


def update(conn, ops: str, run_id: int, **fields: Any) -> None:
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"unknown run fields {sorted(unknown)}")
    sets, values = [], []
    for name, value in fields.items():
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        values.append(Jsonb(value) if name in _JSON_FIELDS else value)
    conn.execute(sql.SQL("UPDATE {}.runs SET {} WHERE run_id = %s").format(
        sql.Identifier(ops), sql.SQL(", ").join(sets)), (*values, run_id))
    if fields.get("finished_at") is not None:
        locks.release_run(run_id)


def add_step_duration(conn, ops: str, run_id: int, step: str, seconds: float) -> None:
    conn.execute(sql.SQL("UPDATE {}.runs SET step_durations = step_durations || %s WHERE run_id = %s")
                 .format(sql.Identifier(ops)), (Jsonb({step: round(seconds, 4)}), run_id))


def get(conn, ops: str, run_id: int) -> dict | None:
    cur = conn.execute(sql.SQL("SELECT * FROM {}.runs WHERE run_id = %s").format(sql.Identifier(ops)), (run_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row))


def require(conn, ops: str, run_id: int) -> dict:
    """The run, which must exist (ConfigError naming it otherwise)."""
    from chatsync.errors import ConfigError

    run = get(conn, ops, run_id)
    if run is None:
        raise ConfigError(f"run {run_id} does not exist")
    return run


def settle(conn, settings) -> int:
    """Mark settled the finished runs that no unresolved finding is left in
    (sql/db/runs_settle.sql); returns how many."""
    from chatsync.db.statements import sql_file

    return conn.execute(sql_file(settings, "runs_settle", ops=sql.Identifier(settings.ops_schema))).rowcount


def _close(conn, settings, run_id: int | None, why: str) -> list[dict]:
    from chatsync.db.statements import sql_file

    return [dict(zip(("run_id", "was", "rows_repaired", "triggered_by", "error"), r)) for r in conn.execute(
        sql_file(settings, "runs_close", ops=sql.Identifier(settings.ops_schema)),
        {"run_id": run_id, "why": why, "lock_base": locks.RUN_LOCK_BASE}).fetchall()]


def close_abandoned(conn, settings) -> list[dict]:
    """Close as 'abandoned' the open runs whose process is gone (sql/db/runs_close.sql),
    saying in each run's error what happened to the data; alerts once when it closes any."""
    from chatsync.alerting import alerts

    closed = _close(conn, settings, None, "abandoned: its process is gone")
    if closed:
        for run in closed:
            log.warning(alerts.structured("run_abandoned", **run))
        alerts.notify("runs_abandoned", f"{len(closed)} run(s) closed as abandoned (their process is gone): "
                      + "; ".join(f"run {r['run_id']} ({r['triggered_by']}): {r['error']}" for r in closed),
                      runs=[r["run_id"] for r in closed])
    return closed


def fail_open(settings, run_id: int, exc: BaseException) -> str | None:
    """Close the run as 'failed' after exc, if it is still open, saying what happened to its data;
    the error text, or None (already finished, or the database cannot be reached: the next pass
    then closes it as abandoned once this process is gone)."""
    from chatsync.db.connection import connection

    try:
        with connection(settings) as conn:
            closed = _close(conn, settings, run_id, f"failed: {type(exc).__name__}: {exc}")
    except Exception as err:  # noqa: BLE001 - the original error is the one to raise
        log.warning("run %s: could not record its failure (%s); the next pass will close it", run_id, err)
        return None
    finally:
        locks.release_run(run_id)  # this process is done with it, recorded or not
    return closed[0]["error"] if closed else None


def incremental_watermark(conn, ops: str):
    """Detect start of the last run that left its scope consistent (full or incremental)."""
    row = conn.execute(sql.SQL(
        "SELECT max(detect_started_at) FROM {}.runs WHERE kind = 'check' "
        "AND scope IN ('full', 'incremental') AND status IN ('consistent', 'validated')"
    ).format(sql.Identifier(ops))).fetchone()
    return row[0]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
