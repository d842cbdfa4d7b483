"""Per-room fingerprints kept current by statement triggers, so the hourly full check need not
hash every row.

``install`` puts three statement triggers (insert, update, delete, with transition tables) and a
TRUNCATE trigger on both tables of each per-room entity and hashes the baseline, in one
transaction (the triggers' lock holds writes back meanwhile: seconds at 10M rows). Each write
then appends its net change per key to ``room_fingerprint_deltas``; detect ``fold``s that log
into ``room_fingerprints``, then, by room-id range, compares the two sides, diffs the changed keys
of the rooms that differ and proves the rest of those rooms in one statement (``diff_keys``). The hash is
``EntitySQL.row_hash``, the one detect uses when it hashes the tables.

A write that bypasses row triggers cannot be seen: TRUNCATE marks the fingerprints stale, a
disabled or dropped trigger is noticed by ``state`` (and remembered); both send detect back to
diffing the tables (and say so in the log) until ``install`` runs again.
``session_replication_role = replica`` (logical-replication apply, some restore tools) skips
triggers silently: rebuild after one.
"""

from __future__ import annotations

import logging
import time

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.db.locks import FOLD_LOCK
from chatsync.db.statements import sql_file
from chatsync.model.sqlgen import EntitySQL

log = logging.getLogger("chatsync.fingerprints")
J = sql.SQL


SIDES = ("room", "chat")
# event -> (REFERENCING clause, [(transition table, sign)])
EVENTS = {
    "insert": ("NEW TABLE AS new_rows", [("new_rows", 1)]),
    "update": ("OLD TABLE AS old_rows NEW TABLE AS new_rows", [("new_rows", 1), ("old_rows", -1)]),
    "delete": ("OLD TABLE AS old_rows", [("old_rows", -1)]),
}
TRIGGER_PREFIX = "chatsync_fingerprint_"
TRIGGERS_PER_TABLE = len(EVENTS) + 1  # + truncate


def per_room_entities(settings: Settings) -> list[EntitySQL]:
    from chatsync.model.sqlgen import entity_sql

    return [es for es in entity_sql(settings) if es.entity.has_user]


def _side(es: EntitySQL, side: str):
    """(table, alias, "room id AS room_id, user id AS user_id", row hash) of one side, in terms of
    the alias."""
    if side == "room":
        table, alias, cols, row_hash = es.room, "r", [es.rc(k, "r") for k in es.entity.room_key], es.row_hash("room")
    else:
        table, alias, cols, row_hash = es.chat, "c", [es.cc(k, "c") for k in es.entity.chat_key], es.row_hash("chat")
    return table, alias, J("{} AS room_id, {} AS user_id").format(*cols), row_hash


def _function(settings: Settings, es: EntitySQL, side: str, event: str) -> sql.Identifier:
    return sql.Identifier(settings.ops_schema, f"fingerprint_{es.entity.name}_{side}_{event}")


def install(settings: Settings) -> list[dict]:
    """Create (or replace) the triggers and hash the baseline; returns one summary per entity."""
    with connection(settings) as conn, conn.transaction():
        return install_on(conn, settings)


def install_on(conn, settings: Settings) -> list[dict]:
    """install() inside the caller's transaction."""
    ops = sql.Identifier(settings.ops_schema)
    out = []
    for es in per_room_entities(settings):
        t0 = time.perf_counter()
        name = es.entity.name
        for side in SIDES:
            table, alias, key, row_hash = _side(es, side)
            for event, (referencing, sources) in EVENTS.items():
                changes = J(" UNION ALL ").join(
                    J("SELECT {}, {} AS n, {} AS h FROM {} AS {}").format(
                        key, sql.Literal(sign), row_hash, sql.Identifier(src), sql.Identifier(alias))
                    for src, sign in sources)
                function = _function(settings, es, side, event)
                conn.execute(sql_file(settings, "fingerprint_trigger_function", function=function, ops=ops,
                                      entity=sql.Literal(name), side=sql.Literal(side), changes=changes))
                trigger = sql.Identifier(TRIGGER_PREFIX + event)
                conn.execute(J("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table.ident))
                conn.execute(J("CREATE TRIGGER {} AFTER {} ON {} REFERENCING {} FOR EACH STATEMENT "
                               "EXECUTE FUNCTION {}()").format(trigger, J(event.upper()), table.ident,
                                                               J(referencing), function))
            trigger = sql.Identifier(TRIGGER_PREFIX + "truncate")
            conn.execute(J("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table.ident))
            conn.execute(J("CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT "
                           "EXECUTE FUNCTION {}.fingerprint_truncated({})").format(
                trigger, table.ident, ops, sql.Literal(name)))
        # the triggers hold writers back until commit: the baseline and the log meet exactly
        for table_name in ("room_fingerprint_deltas", "room_fingerprints", "fingerprint_changed_keys"):
            conn.execute(J("DELETE FROM {}.{} WHERE entity = %s").format(ops, sql.Identifier(table_name)),
                         (name,))
        conn.execute(_build_statement(settings, es), {"entity": name})
        hashed = conn.execute(J("SELECT coalesce(sum(row_count), 0) FROM {}.room_fingerprints "
                                "WHERE entity = %s").format(ops), (name,)).fetchone()[0]
        conn.execute(J(
            "INSERT INTO {}.fingerprint_maintenance (entity, built_at, rows_hashed) VALUES (%s, now(), %s) "
            "ON CONFLICT (entity) DO UPDATE SET built_at = excluded.built_at, "
            "rows_hashed = excluded.rows_hashed, stale_since = NULL, stale_reason = NULL").format(ops),
            (name, hashed))
        seconds = time.perf_counter() - t0
        log.info("fingerprints of %s installed: %d rows hashed on both sides in %.2fs", name, hashed, seconds)
        out.append({"entity": name, "rows_hashed": int(hashed), "seconds": round(seconds, 3),
                    "tables": [es.room.qualified, es.chat.qualified]})
    return out


def hashed_side(es: EntitySQL, side: str) -> sql.Composed:
    """(room_id, n, h) per room of one side, hashed from its table: the baseline of install and
    detect's compare when no fingerprints are maintained."""
    table, alias, _, row_hash = _side(es, side)
    room_id = es.rc(es.entity.room_key[0], "r") if side == "room" else es.cc(es.entity.chat_key[0], "c")
    return J("SELECT {} AS room_id, count(*) AS n, bit_xor({}) AS h FROM {} AS {} GROUP BY 1").format(
        room_id, row_hash, table.ident, sql.Identifier(alias))


def _build_statement(settings: Settings, es: EntitySQL) -> sql.Composed:
    return sql_file(settings, "fingerprints_build", ops=sql.Identifier(settings.ops_schema),
                    room_side=hashed_side(es, "room"), chat_side=hashed_side(es, "chat"))


def uninstall(settings: Settings) -> list[str]:
    with connection(settings) as conn, conn.transaction():
        return uninstall_on(conn, settings)


def uninstall_on(conn, settings: Settings) -> list[str]:
    """Drop the triggers and the fingerprints, inside the caller's transaction."""
    ops = sql.Identifier(settings.ops_schema)
    removed = []
    for es in per_room_entities(settings):
        for side in SIDES:
            table = _side(es, side)[0]
            for event in (*EVENTS, "truncate"):
                conn.execute(J("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(TRIGGER_PREFIX + event), table.ident))
            for event in EVENTS:
                conn.execute(J("DROP FUNCTION IF EXISTS {}()").format(_function(settings, es, side, event)))
        for table_name in ("room_fingerprint_deltas", "room_fingerprints", "fingerprint_changed_keys",
                           "fingerprint_maintenance"):
            conn.execute(J("DELETE FROM {}.{} WHERE entity = %s").format(ops, sql.Identifier(table_name)),
                         (es.entity.name,))
        removed.append(es.entity.name)
    return removed


def _triggers(conn, es: EntitySQL, enabled_only: bool = True) -> int:
    """Fingerprint triggers on both tables (looked up by name, no regclass text)."""
    return conn.execute(
        "SELECT count(*) FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN ((%s, %s), (%s, %s)) AND t.tgname LIKE %s "
        "AND (t.tgenabled <> 'D' OR NOT %s)",
        (es.room.schema, es.room.name, es.chat.schema, es.chat.name, TRIGGER_PREFIX.replace("_", r"\_") + "%",
         enabled_only)
    ).fetchone()[0]


def remove_if_installed(conn, settings: Settings) -> None:
    """uninstall_on, when any fingerprint trigger is there (the ops tables may predate them)."""
    if any(_triggers(conn, es, enabled_only=False) for es in per_room_entities(settings)):
        uninstall_on(conn, settings)


def state(conn, settings: Settings, es: EntitySQL) -> tuple[str, str]:
    """('current' | 'stale' | 'absent', why) for one entity's maintained fingerprints."""
    row = conn.execute(J("SELECT stale_since, stale_reason FROM {}.fingerprint_maintenance WHERE entity = %s")
                       .format(sql.Identifier(settings.ops_schema)), (es.entity.name,)).fetchone()
    if row is None:
        return "absent", "not installed (chatsync fingerprints install)"
    if row[0] is not None:
        return "stale", f"{row[1]} at {row[0]:%Y-%m-%d %H:%M:%S%z}"
    enabled = _triggers(conn, es)
    if enabled != 2 * TRIGGERS_PER_TABLE:
        why = f"{enabled} of {2 * TRIGGERS_PER_TABLE} triggers enabled on {es.room.qualified}/{es.chat.qualified}"
        # remembered: writes made meanwhile are missing from the log even once the triggers are back
        conn.execute(J("UPDATE {}.fingerprint_maintenance SET stale_since = clock_timestamp(), stale_reason = %s "
                       "WHERE entity = %s AND stale_since IS NULL").format(sql.Identifier(settings.ops_schema)),
                     (why, es.entity.name))
        return "stale", why
    return "current", "maintained by triggers"


def fold(conn, settings: Settings, es: EntitySQL) -> int:
    """Fold the delta log into the fingerprints; the keys it named join fingerprint_changed_keys.
    Returns how many keys changed since the last detect. Holds the fold lock to the end of the
    caller's transaction (see hold_changed_keys)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (FOLD_LOCK,))
    conn.execute(sql_file(settings, "fingerprints_fold", ops=sql.Identifier(settings.ops_schema)),
                 {"entity": es.entity.name})
    return _changed_key_count(conn, settings, es)


def hold_changed_keys(conn, settings: Settings, es: EntitySQL) -> int:
    """Keep folds out until the end of conn's transaction, so the keys a detect diffs and then
    removes are not added to meanwhile; returns how many keys changed since the last detect (as
    folded so far)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (FOLD_LOCK,))
    return _changed_key_count(conn, settings, es)


def _changed_key_count(conn, settings: Settings, es: EntitySQL) -> int:
    return conn.execute(J("SELECT count(*) FROM {}.fingerprint_changed_keys WHERE entity = %s").format(
        sql.Identifier(settings.ops_schema)), (es.entity.name,)).fetchone()[0]


def forget_changed_keys(conn, settings: Settings, es: EntitySQL) -> None:
    """The detect that folded has diffed every changed key (or the whole tables): clear them."""
    conn.execute(J("DELETE FROM {}.fingerprint_changed_keys WHERE entity = %s").format(
        sql.Identifier(settings.ops_schema)), (es.entity.name,))


def fold_pending(settings: Settings) -> dict[str, int]:
    """Fold the delta logs now (between hourly runs): entity -> keys waiting for the next detect.
    Entities without current fingerprints are left out."""
    out = {}
    for es in per_room_entities(settings):
        with connection(settings) as conn, conn.transaction():
            if state(conn, settings, es)[0] == "current":
                out[es.entity.name] = fold(conn, settings, es)
    return out


def status(settings: Settings) -> list[dict]:
    ops = sql.Identifier(settings.ops_schema)
    out = []
    with connection(settings) as conn:
        for es in per_room_entities(settings):
            st, why = state(conn, settings, es)
            pending = one(conn.execute(J("SELECT count(*) FROM {}.room_fingerprint_deltas WHERE entity = %s")
                                   .format(ops), (es.entity.name,)))[0]
            built = conn.execute(J("SELECT built_at, rows_hashed FROM {}.fingerprint_maintenance WHERE entity = %s")
                                 .format(ops), (es.entity.name,)).fetchone()
            out.append({"entity": es.entity.name, "state": st, "why": why, "pending_deltas": pending,
                        "built_at": built[0].isoformat() if built else None,
                        "rows_hashed": built[1] if built else None})
    return out
