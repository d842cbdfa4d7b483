"""Keep the copy of the room side in line with the room database, moving only what differs.

Each function brings one part of the copy up to date before a statement reads it, and does
nothing when the room side shares the chat side's database:

- ``sync`` (full and range scopes, the validation): per-room fingerprints are computed inside the
  room database (one aggregate, parallel there) and streamed over; the chat database compares them
  with the copy's own (``mirror_fingerprints``) and only the rooms that differ are streamed again.
  A part the copy holds nothing of (the first pass, a copy a crash emptied) is streamed whole,
  straight into the copy, in room-id ranges on parallel connections. Bytes moved follow the rooms
  that changed on the room side since the copy was taken, not the table, nor the chat side's drift;
- ``refresh_rooms`` (the rooms scope): the named rooms, whole;
- ``refresh_scope_keys`` (the keys and incremental scopes, the repair): the keys of
  ``pg_temp.chatsync_scope_keys``, in the caller's transaction; ``add_changed_room_keys`` first
  adds the keys changed on the room side since a watermark, read there.

Every refresh changes the copy in one transaction with the rooms' new fingerprints, under a lock
per table (the rows staged in a temporary table and merged, writing only those that changed; a
first pass's loads straight into the copy): a refresh that fails (the room database lost
mid-stream) leaves the copy as it was, and the copy and its fingerprints always agree. A room row
that changes on the room side while it is streamed is copied as one snapshot saw it; its
fingerprint then differs from the room database's and the next pass streams it again.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.db.statements import sql_file
from chatsync.errors import TransientError
from chatsync.model import catalog
from chatsync.model import keys as key_types
from chatsync.model.sqlgen import changed_since
from chatsync.roomside import mirror
from chatsync.roomside.mirror import Shape
from chatsync.roomside.transfer import Moved, stream

log = logging.getLogger("chatsync.roomside")
J = sql.SQL

# Lock keys of the copies' writers: "chmirr" and the entity's index in the low byte.
MIRROR_LOCK = 0x63686D697272 << 8
# Rooms named in one streamed statement (the array of ids is bound in the COPY's text).
ROOMS_PER_STATEMENT = 5_000
KEYS_PER_STATEMENT = 20_000

_shapes: dict[tuple, list[Shape]] = {}
_shapes_lock = threading.Lock()


def shapes(settings: Settings) -> list[Shape]:
    """The copies' shapes, made sure of once per process (the room tables' types are read from the
    room database's catalog; `chatsync init` re-reads them)."""
    key = (settings.room_url(), settings.database_url, settings.mapping_path, settings.ops_schema)
    with _shapes_lock:
        if key not in _shapes:
            _shapes[key] = mirror.ensure(settings)
        return _shapes[key]


def forget_shapes() -> None:
    with _shapes_lock:
        _shapes.clear()


# A refresh may wait this long for the copy's lock: a first pass loads the whole table under it.
LOCK_WAIT = "600s"


def _lock(conn, shape: Shape, shared: bool = False) -> None:
    """The copy's lock, to the end of conn's transaction: shared by the range loads of a pass
    (disjoint, side by side), exclusive for the refreshes of rooms and keys."""
    previous = one(conn.execute("SELECT current_setting('lock_timeout')"))[0]
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_WAIT,))
    conn.execute(J("SELECT {}(%s)").format(J("pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock")),
                 (MIRROR_LOCK | mirror.ENTITY_INDEX[shape.entity.name],))
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))


def _stage_table(shape: Shape) -> sql.Identifier:
    return sql.Identifier("pg_temp", _stage_name(shape))


def _stage_name(shape: Shape) -> str:
    return f"chatsync_stage_{shape.copy.name}"


def _stage(conn, shape: Shape, rows: bool = True) -> None:
    """Empty staging tables in conn's transaction: the rows streamed (shaped like the copy; not
    for the loads that replace whole rooms) and the rooms whose fingerprints are recomputed."""
    if rows:
        conn.execute(J("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DROP").format(
            sql.Identifier(_stage_name(shape)), shape.copy.ident))
        conn.execute(J("TRUNCATE {}").format(_stage_table(shape)))
    conn.execute(J("CREATE TEMP TABLE IF NOT EXISTS chatsync_mirror_rooms (room_id {}) ON COMMIT DROP").format(
        shape.key_types.room.sql_type))
    conn.execute("TRUNCATE pg_temp.chatsync_mirror_rooms")


def _record_fingerprints(conn, settings: Settings, shape: Shape) -> None:
    """The copy's fingerprints of the rooms of pg_temp.chatsync_mirror_rooms, from the copy."""
    common = {"ops": sql.Identifier(settings.ops_schema), "mirror": shape.copy.ident, "room_col": shape.room_col,
              "rooms": ROOMS_OF_THE_REFRESH}
    conn.execute(sql_file(settings, "mirror_forget_fingerprints", **common), {"entity": shape.entity.name})
    conn.execute(sql_file(settings, "mirror_record_fingerprints", **common, row_hash=shape.row_hash("m", False)),
                 {"entity": shape.entity.name})


def _merge(conn, settings: Settings, shape: Shape, in_part: sql.Composable, params: dict,
           record: bool = True) -> tuple[int, int]:
    """Staged rows into the copy (see mirror_merge.sql), then (record) the fingerprints of the
    rooms of pg_temp.chatsync_mirror_rooms; in conn's transaction, under the copy's lock."""
    _lock(conn, shape)
    keys = shape.key_list()
    eq = J(" AND ").join(J("s.{k} = m.{k}").format(k=sql.Identifier(k)) for k in shape.keys)
    others = [c for c in shape.columns if c.name not in shape.keys]
    merge = sql_file(
        settings, "mirror_merge", mirror=shape.copy.ident, stage=_stage_table(shape), in_part=in_part, stage_eq_m=eq,
        columns=shape.column_list(), keys=keys,
        set_excluded=J(", ").join(J("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c.name)) for c in others),
        m_columns=J(", ").join(sql.Identifier("m", c.name) for c in others),
        s_columns=J(", ").join(sql.Identifier("s", c.name) for c in others),
        excluded_columns=J(", ").join(J("EXCLUDED.{}").format(sql.Identifier(c.name)) for c in others))
    gone, written = one(conn.execute(merge, params))
    if record:
        _record_fingerprints(conn, settings, shape)
    return gone, written


# The rooms of a refresh, as an array the copy's key index is probed with: as a semi-join with the
# temporary table the planner scanned the whole copy (208 ms against 1M rows for 200 rooms).
ROOMS_OF_THE_REFRESH = J("ANY(ARRAY(SELECT room_id FROM pg_temp.chatsync_mirror_rooms))")


def _rooms_in(alias: str, shape: Shape) -> sql.Composed:
    return J("{} = {}").format(sql.Identifier(alias, shape.keys[0]), ROOMS_OF_THE_REFRESH)


def _copy_rooms(settings: Settings, shape: Shape, rooms: list, moved: Moved) -> None:
    """The named rooms of one table, whole, into the copy: staged, then merged (only the rows
    that changed are written, so the triggers of maintained fingerprints log only those); one
    transaction."""
    with connection(settings, side="room", application_name="chatsync room copy") as room_conn, \
            connection(settings, application_name="chatsync room copy") as conn, conn.transaction():
        _stage(conn, shape)
        with conn.cursor() as cur, cur.copy("COPY pg_temp.chatsync_mirror_rooms (room_id) FROM STDIN") as copy:
            for room in rooms:
                copy.write_row((room,))
        for i in range(0, len(rooms), ROOMS_PER_STATEMENT):
            chunk = rooms[i:i + ROOMS_PER_STATEMENT]
            stream(room_conn, shape.source_select(J("{} = ANY({})").format(
                sql.Identifier("r", shape.keys[0]), shape.key_types.room.array("rooms"))), {"rooms": chunk},
                conn, J("{} ({})").format(_stage_table(shape), shape.column_list()), moved, "room_copy:rows")
        conn.execute(J("ANALYZE {}").format(_stage_table(shape)))
        conn.execute("ANALYZE pg_temp.chatsync_mirror_rooms")
        _merge(conn, settings, shape, _rooms_in("m", shape), {})


def _copy_range(settings: Settings, shape: Shape, lo, hi, moved: Moved) -> None:
    """One room-id range of one table, whole, into the copy: one transaction. Where the copy
    holds nothing of the range yet (a first pass), the rows go straight into it, the loads of one
    pass side by side under the copy's shared lock (two passes loading the same empty range at
    once meet on the copy's key: the one that loses is retried, and finds the range current);
    elsewhere they are staged and merged, writing only the rows that changed."""
    params = {"room_lo": lo, "room_hi": hi}
    with connection(settings, side="room", application_name="chatsync room copy") as room_conn, \
            connection(settings, application_name="chatsync room copy") as conn, conn.transaction():
        select = shape.source_select(shape.in_range("r"))
        empty = not one(conn.execute(J("SELECT EXISTS (SELECT 1 FROM {} AS m WHERE {})").format(
            shape.copy.ident, shape.in_range("m")), params))[0]
        _stage(conn, shape, rows=not empty)
        if empty:
            _lock(conn, shape, shared=True)
            try:
                stream(room_conn, select, params, conn, J("{} ({})").format(shape.copy.ident, shape.column_list()),
                       moved, "room_copy:rows")
            except psycopg.errors.UniqueViolation as exc:
                raise TransientError(f"{shape.copy.qualified}: rooms {lo} to {hi} were copied by another pass "
                                     "meanwhile") from exc
        else:
            stream(room_conn, select, params, conn, J("{} ({})").format(_stage_table(shape), shape.column_list()),
                   moved, "room_copy:rows")
            conn.execute(J("ANALYZE {}").format(_stage_table(shape)))
            _merge(conn, settings, shape, shape.in_range("m"), params, record=False)
        conn.execute(sql_file(settings, "mirror_range_rooms", room_col=shape.room_col, mirror=shape.copy.ident,
                              ops=sql.Identifier(settings.ops_schema)), {**params, "entity": shape.entity.name})
        _record_fingerprints(conn, settings, shape)


def _range_cuts(counts: list[tuple], lo, hi, parts: int) -> list[tuple]:
    """[lo, hi) cut at room ids so that each part holds about the same number of rows."""
    total = sum(n for _, n in counts)
    if parts <= 1 or total == 0:
        return [(lo, hi)]
    cuts, acc, share = [lo], 0, total / parts
    for room, n in counts:
        if acc >= share * len(cuts) and (cuts[-1] is None or room > cuts[-1]):
            cuts.append(room)
        acc += n
    cuts.append(hi)
    return list(zip(cuts, cuts[1:]))


def _note_a_lost_copy(conn, settings: Settings, shape: Shape) -> None:
    """A crash empties the unlogged copy and its fingerprints, and no trigger sees it: fingerprints
    maintained on the copy (chatsync fingerprints install) then count rows the copy no longer
    holds. Marked stale, so detect diffs the tables (and says to rebuild them) until reinstalled."""
    ops = sql.Identifier(settings.ops_schema)
    lost = one(conn.execute(J(
        "SELECT NOT EXISTS (SELECT 1 FROM {ops}.mirror_fingerprints WHERE entity = %(e)s) "
        "AND EXISTS (SELECT 1 FROM {ops}.room_fingerprints WHERE entity = %(e)s AND side = 'room')").format(ops=ops),
        {"e": shape.entity.name}))[0]
    if lost:
        conn.execute(J("UPDATE {}.fingerprint_maintenance SET stale_since = clock_timestamp(), stale_reason = %s "
                       "WHERE entity = %s AND stale_since IS NULL").format(ops),
                     (f"the copy {shape.copy.qualified} was emptied without its triggers (a crash empties "
                      "unlogged tables)", shape.entity.name))
        log.warning("room copy %s was emptied under its maintained fingerprints: they are stale until "
                    "'chatsync fingerprints install'", shape.copy.qualified)


def _sync_shape(settings: Settings, shape: Shape, lo, hi) -> Moved:
    moved = Moved()
    t0 = time.perf_counter()
    params = {"room_lo": lo, "room_hi": hi, "entity": shape.entity.name}
    with connection(settings, side="room", application_name="chatsync room fingerprints") as room_conn, \
            connection(settings, application_name="chatsync room fingerprints") as conn, conn.transaction():
        _note_a_lost_copy(conn, settings, shape)
        conn.execute(J("CREATE TEMP TABLE IF NOT EXISTS chatsync_room_fingerprints "
                       "(room_id {}, row_count bigint, hash bigint) ON COMMIT DROP").format(
            shape.key_types.room.sql_type))
        conn.execute("TRUNCATE pg_temp.chatsync_room_fingerprints")
        stream(room_conn, shape.source_fingerprints(shape.in_range("r")), params,
               conn, J("pg_temp.chatsync_room_fingerprints (room_id, row_count, hash)"), moved)
        moved.rooms_compared, moved.rows = moved.rows, 0
        conn.execute("ANALYZE pg_temp.chatsync_room_fingerprints")
        differing = conn.execute(sql_file(settings, "mirror_compare_fingerprints",
                                          ops=sql.Identifier(settings.ops_schema)), params).fetchall()
        copy_is_empty = not one(conn.execute(J("SELECT EXISTS (SELECT 1 FROM {} AS m WHERE {})").format(
            shape.copy.ident, shape.in_range("m")), params))[0]
        counts = [] if not differing else conn.execute(
            "SELECT room_id, row_count FROM pg_temp.chatsync_room_fingerprints ORDER BY 1").fetchall()
    moved.parts["fingerprints"] = time.perf_counter() - t0
    moved.rooms_differing = len(differing)
    if not differing:
        return moved
    t1 = time.perf_counter()
    share = len(differing) / max(moved.rooms_compared, 1)
    if copy_is_empty:
        # a first pass (or a copy a crash emptied): the part goes straight into the copy, by
        # ranges of equal rows on parallel connections, each its own transaction
        workers = settings.parallel_workers() if sum(n for _, n in counts) >= settings.detect_parallel_min_rows else 1
        ranges = _range_cuts(counts, lo, hi, workers)
        lock = threading.Lock()

        def one_range(bounds: tuple) -> None:
            part = Moved()
            _copy_range(settings, shape, bounds[0], bounds[1], part)
            with lock:
                moved.rows += part.rows
                moved.bytes += part.bytes

        with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="room-copy") as pool:
            for future in [pool.submit(one_range, r) for r in ranges]:
                future.result()
        with connection(settings, autocommit=True) as conn:  # the planner's view of the new rows
            conn.execute(J("ANALYZE {}").format(shape.copy.ident))
        how = f"whole, in {len(ranges)} ranges"
    else:
        # merging the differing rooms beats streaming the part again at any share measured (5 % to
        # 50 % of the rooms at 1M rows: 1.6-8.6 s against 7.7-11.8 s), and writes only what changed
        rooms = [r for r, _ in differing]
        _copy_rooms(settings, shape, rooms, moved)
        how = f"{len(rooms)} rooms"
    moved.parts["rows"] = time.perf_counter() - t1
    moved.seconds = time.perf_counter() - t0
    log.info("room copy %s: %d of %d rooms differ from the room database (%.1f%%): streamed %s, %d rows, "
             "%d bytes, in %.2fs", shape.copy.qualified, len(differing), moved.rooms_compared, 100 * share, how,
             moved.rows, moved.bytes, moved.seconds)
    return moved


def sync(settings: Settings, room_range: tuple | None = None) -> Moved | None:
    """Bring the copy (or the rooms of room_range) in line with the room database; None when the
    room side shares the chat side's database."""
    if not settings.two_databases:
        return None
    t0 = time.perf_counter()
    lo, hi = room_range or (None, None)
    total = Moved()
    # the tables side by side: each its own connections, transactions and lock
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="room-sync") as pool:
        parts = [f.result() for f in [pool.submit(_sync_shape, settings, shape, lo, hi)
                                      for shape in shapes(settings)]]
    for part in parts:
        total.add(part)
        for name, seconds in part.parts.items():
            total.parts[name] = total.parts.get(name, 0.0) + seconds
    total.seconds = time.perf_counter() - t0
    return total


def refresh_rooms(settings: Settings, rooms: list) -> Moved | None:
    """The named rooms of both tables, whole, from the room database."""
    if not settings.two_databases:
        return None
    moved = Moved()
    for shape in shapes(settings):
        _copy_rooms(settings, shape, sorted(set(rooms)), moved)
    return moved


def _shape_of(settings: Settings, entity_name: str) -> Shape:
    return next(s for s in shapes(settings) if s.entity.name == entity_name)


def add_changed_room_keys(conn, settings: Settings, entity_name: str, since) -> int:
    """Add to conn's pg_temp.chatsync_scope_keys the keys of the room rows changed since `since`,
    read in the room database (the incremental scope's room side); returns how many."""
    if not settings.two_databases:
        return 0
    shape = _shape_of(settings, entity_name)
    updated = sql.Identifier("r", shape.source.columns["updated_at"])
    # a timestamp without time zone read as UTC, whatever the room connection's TimeZone
    changed = changed_since(updated, catalog.types(settings).of(shape.source.key, "updated_at"))
    select = J("SELECT {} FROM {} AS r WHERE {}").format(shape.key_columns(), shape.source.ident, changed)
    moved = Moved()
    with connection(settings, side="room", application_name="chatsync room keys") as room_conn:
        stream(room_conn, select, {"since": since}, conn,
               J("pg_temp.chatsync_scope_keys (room_id, user_id)"), moved)
    return moved.rows


def refresh_scope_keys(conn, settings: Settings, entity_name: str) -> Moved | None:
    """The rows of the keys in conn's pg_temp.chatsync_scope_keys (room ids for the room table),
    from the room database into the copy, in conn's transaction (a key the room side no longer
    has leaves the copy)."""
    if not settings.two_databases:
        return None
    shape = _shape_of(settings, entity_name)
    moved = Moved()
    has_user = len(shape.keys) > 1
    keys = conn.execute("SELECT DISTINCT room_id, user_id FROM pg_temp.chatsync_scope_keys "
                        "WHERE room_id IS NOT NULL ORDER BY 1, 2").fetchall()
    _stage(conn, shape)
    conn.execute("INSERT INTO pg_temp.chatsync_mirror_rooms SELECT DISTINCT room_id FROM pg_temp.chatsync_scope_keys")
    if keys:
        with connection(settings, side="room", application_name="chatsync room keys") as room_conn:
            for i in range(0, len(keys), KEYS_PER_STATEMENT):
                chunk = keys[i:i + KEYS_PER_STATEMENT]
                if has_user:
                    where = J("({}, {}) IN (SELECT * FROM unnest({}, {}))").format(
                        sql.Identifier("r", shape.keys[0]), sql.Identifier("r", shape.keys[1]),
                        shape.key_types.room.array("rooms"), shape.key_types.user.array("users"))
                    params = {"rooms": [k[0] for k in chunk], "users": [k[1] for k in chunk]}
                else:
                    where = J("{} = ANY({})").format(sql.Identifier("r", shape.keys[0]),
                                                     shape.key_types.room.array("rooms"))
                    params = {"rooms": [k[0] for k in chunk]}
                stream(room_conn, shape.source_select(where), params,
                       conn, J("{} ({})").format(_stage_table(shape), shape.column_list()), moved)
    if has_user:
        in_part = J("{} AND EXISTS (SELECT 1 FROM pg_temp.chatsync_scope_keys AS k WHERE k.room_id = m.{} "
                    "AND k.user_id = m.{})").format(_rooms_in("m", shape), sql.Identifier(shape.keys[0]),
                                                   sql.Identifier(shape.keys[1]))
    else:
        in_part = _rooms_in("m", shape)
    _merge(conn, settings, shape, in_part, {})
    return moved


def check_mapping(settings: Settings, conn) -> None:
    """The mapping against the databases: the chat tables in conn's, the room tables in the room
    database (when it has its own)."""
    from chatsync.model.mapping import load_mapping

    mapping = load_mapping(settings.mapping_path)
    if not settings.two_databases:
        mapping.check_database(conn)
        _check_types(settings)
    else:
        mapping.side("chat").check_database(conn)
        with connection(settings, side="room") as room_conn:
            mapping.side("room").check_database(room_conn)
        _check_types(settings)
        shapes(settings)
    key_types.check_ops(conn, settings, key_types.keys(settings))  # the ops tables hold the mapped keys' type


def _check_types(settings: Settings) -> None:
    """The mapped columns' types, read again, are pairs chatsync can compare (ConfigError naming
    the mapping file, both columns and their types otherwise)."""
    catalog.forget()
    catalog.types(settings).check()

