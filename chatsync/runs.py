"""The run record: one row per consistency pass (or rollback) in <ops>.runs."""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

_JSON_FIELDS = {"scope_params", "counts", "validation", "step_durations"}
_FIELDS = {"scope", "status", "detect_started_at", "finished_at", "counts", "rows_to_change", "total_rows",
           "repaired", "skipped", "validation", "step_durations", "error", "settled_at"}


def create(conn, ops: str, *, scope: str, params: dict, triggered_by: str, kind: str = "check") -> int:
    row = conn.execute(
        sql.SQL("INSERT INTO {}.runs (kind, scope, scope_params, triggered_by) "
                "VALUES (%s, %s, %s, %s) RETURNING run_id").format(sql.Identifier(ops)),
        (kind, scope, Jsonb(params), triggered_by)).fetchone()
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


def add_step_duration(conn, ops: str, run_id: int, step: str, seconds: float) -> None:
    conn.execute(sql.SQL("UPDATE {}.runs SET step_durations = step_durations || %s WHERE run_id = %s")
                 .format(sql.Identifier(ops)), (Jsonb({step: round(seconds, 4)}), run_id))


def get(conn, ops: str, run_id: int) -> dict | None:
    cur = conn.execute(sql.SQL("SELECT * FROM {}.runs WHERE run_id = %s").format(sql.Identifier(ops)), (run_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description], row))


def settle(conn, settings) -> int:
    """Mark settled the finished runs that no unresolved finding is left in
    (include/sql/runs_settle.sql); returns how many."""
    from chatsync.db import sql_file

    return conn.execute(sql_file(settings, "runs_settle", ops=sql.Identifier(settings.ops_schema))).rowcount


def incremental_watermark(conn, ops: str):
    """Detect start of the last run that left its scope consistent (full or incremental)."""
    row = conn.execute(sql.SQL(
        "SELECT max(detect_started_at) FROM {}.runs WHERE kind = 'check' "
        "AND scope IN ('full', 'incremental') AND status IN ('consistent', 'validated')"
    ).format(sql.Identifier(ops))).fetchone()
    return row[0]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
