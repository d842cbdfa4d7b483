"""The fingerprint diff: per-room hashes of both sides compared first, then only the rooms whose
hashes differ diffed row by row. Maintained fingerprints (chatsync.consistency.fingerprints) make
the first step a read of two small tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from psycopg import sql

from chatsync.config import Settings
from chatsync.consistency.fingerprints import hashed_side
from chatsync.db.statements import sql_file
from chatsync.model.sqlgen import EntitySQL

log = logging.getLogger("chatsync.fingerprints")
J = sql.SQL


def key_ranges(conn, settings: Settings, es: EntitySQL, parts: int) -> list[tuple]:
    """Room-id ranges [lo, hi) covering every room id, holding about equal shares of the keys
    changed since the last detect (whole rooms: a room's keys stay in one range)."""
    cuts = conn.execute(J(
        "SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY room_id) "
        "FROM {}.fingerprint_changed_keys WHERE entity = %s").format(sql.Identifier(settings.ops_schema)),
        ([i / parts for i in range(1, parts)], es.entity.name)).fetchone()[0] or []
    bounds = [None, *sorted(set(cuts)), None]  # open at both ends: every room id
    return list(zip(bounds, bounds[1:]))


@dataclass
class KeyedDiff:
    """What diff_keys did for one room-id range."""
    rooms: int = 0  # rooms compared
    differing: int = 0  # rooms whose fingerprints differ
    keys: int = 0  # keys diffed
    findings: int = 0
    unexplained: list = field(default_factory=list)  # rooms left for a row diff


def diff_keys(conn, settings: Settings, es: EntitySQL, run_id: int, room_range: tuple) -> KeyedDiff:
    """In conn's transaction (with an empty pg_temp.chatsync_scope_keys), for the rooms of
    room_range: compare the fingerprints (fingerprints_differing_rooms.sql), store the findings
    of the differing rooms' scope keys (fingerprints_scope_keys.sql) and prove the rest of those
    rooms in the same read (detect_changed_keys.sql). The fold, these statements and a row diff after them may each
    read a newer snapshot (READ COMMITTED): a key written in between either makes the proof
    fail for its room (a row diff, never a miss) or waits in the log for the next run."""
    ops = sql.Identifier(settings.ops_schema)
    params = {"run_id": run_id, "entity": es.entity.name, "kinds": list(es.entity.kinds),
              "room_lo": room_range[0], "room_hi": room_range[1]}
    side = J("SELECT room_id, row_count AS n, hash AS h FROM {}.room_fingerprints WHERE entity = %(entity)s "
             "AND side = {} AND {}")
    in_range = es.keys.room.in_range(J("room_id"))
    rooms, differing = differing_rooms(conn, settings, side.format(ops, sql.Literal("room"), in_range),
                                        side.format(ops, sql.Literal("chat"), in_range), params, es)
    # into the caller's empty pg_temp.chatsync_scope_keys; analysed, like the differing rooms,
    # for the joins to plan on the true row counts
    conn.execute(sql_file(settings, "fingerprints_scope_keys", ops=ops), params)
    conn.execute("ANALYZE pg_temp.chatsync_scope_keys")
    keys, findings, unexplained = conn.execute(sql_file(
        settings, "detect_changed_keys", **es.common(settings.ops_schema),
        key_out=es.key_out(), kinds_array=es.kinds_array(), digest=es.chat_digest_or_null(),
        room_key_is_null=es.room_key_is_null(), chat_key_is_null=es.chat_key_is_null(),
        room_hash=es.row_hash("room"), chat_hash=es.row_hash("chat"),
        room_eq_s=es.join_room_to("s"), chat_eq_s=es.join_chat_to("s")), params).fetchone()
    return KeyedDiff(rooms, differing, keys, findings, unexplained)


def differing_rooms(conn, settings: Settings, room_side: sql.Composable, chat_side: sql.Composable,
                     params: dict | None, es: EntitySQL) -> tuple[int, int]:
    """pg_temp.chatsync_differing_rooms := the rooms whose fingerprints differ, from two
    (room_id, n, h) queries (fingerprints_differing_rooms.sql), analysed: a table with statistics
    and a key for the joins that read it. Returns (rooms compared, rooms that differ)."""
    conn.execute(J("CREATE TEMP TABLE IF NOT EXISTS chatsync_differing_rooms "
                   "(room_id {} PRIMARY KEY, dn bigint NOT NULL, dh bigint NOT NULL) ON COMMIT DROP").format(
        es.keys.room.sql_type))
    conn.execute("TRUNCATE pg_temp.chatsync_differing_rooms")
    compared, differing = conn.execute(sql_file(settings, "fingerprints_differing_rooms", room_side=room_side,
                                                chat_side=chat_side), params).fetchone()
    conn.execute("ANALYZE pg_temp.chatsync_differing_rooms")
    return compared, differing


def hashed_differing_rooms(conn, settings: Settings, es: EntitySQL) -> tuple[list, int]:
    """(Rooms whose fingerprints, hashed from both tables now, differ; rooms compared)."""
    compared, _ = differing_rooms(conn, settings, hashed_side(es, "room"), hashed_side(es, "chat"), None, es)
    rooms = conn.execute("SELECT coalesce(array_agg(room_id ORDER BY room_id), '{}') "
                         "FROM pg_temp.chatsync_differing_rooms").fetchone()[0]
    return rooms, compared
