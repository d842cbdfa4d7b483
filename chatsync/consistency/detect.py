"""Detect: set-based diff of the room side against the chat side, in Postgres.

One engine, several scopes ("one pass, three scopes"):
- ``full``: both whole tables; the only scope that sees deletes and old drift.
- ``incremental``: keys changed on either side since the last consistent run's watermark, plus
  keys of findings still unresolved.
- ``rooms``: the given room ids (CLI ``--rooms``, the major-inconsistency procedure).
- ``keys``: explicit (room_id, user_id) keys and room ids (the event worker).
- ``range``: a room-id range [lo, hi) (sharding).
No row is pulled into Python: findings are written by INSERT ... SELECT into <ops>.inconsistencies.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from psycopg import sql

from chatsync.config import Settings
from chatsync.consistency import fingerprint_diff, fingerprints
from chatsync.consistency.scope import Scope, empty_scope_keys
from chatsync.db import runs
from chatsync.db.connection import connection, one
from chatsync.db.retry import with_retry
from chatsync.db.statements import sql_file
from chatsync.model.domains import entity_domains
from chatsync.model.rules import ENTITIES, KINDS, Entity
from chatsync.model.sqlgen import EntitySQL, entity_sql, source_entity_sql, value_errors
from chatsync.roomside import refresh as room_copy

log = logging.getLogger("chatsync.diff")
J = sql.SQL


@dataclass
class DetectResult:
    run_id: int
    scope: str
    counts: dict[str, int]
    rows_to_change: int
    total_rows: int
    seconds: float
    since: datetime | None = None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "scope": self.scope, "counts": self.counts,
                "rows_to_change": self.rows_to_change, "total_rows": self.total_rows,
                "seconds": round(self.seconds, 4),
                "since": self.since.isoformat() if self.since else None}


def _fill_scope_keys(conn, settings: Settings, es: EntitySQL, scope: Scope, since) -> None:
    """(Re)fill pg_temp.chatsync_scope_keys with this entity's keys for a key-set scope (and, with
    the room side in a database of its own, bring those keys' rows of its copy up to date)."""
    empty_scope_keys(conn, settings)
    e = es.entity
    if scope.kind == "incremental":
        room_copy.add_changed_room_keys(conn, settings, e.name, since)  # read in the room database
        conn.execute(sql_file(
            settings, "scope_changed_keys", **es.common(settings.ops_schema),
            room_key=_key_select(es, "room"), chat_key=_key_select(es, "chat"),
            room_changed=J("FALSE") if settings.two_databases else es.changed_since("room"),
            chat_changed=es.changed_since("chat")),
            {"since": since, "kinds": list(e.kinds)})
    else:  # keys: participant keys for participants, room ids for rooms
        rows = scope.participants if e.has_user else [(r, None) for r in scope.rooms]
        with conn.cursor() as cur:
            with cur.copy("COPY pg_temp.chatsync_scope_keys (room_id, user_id) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    room_copy.refresh_scope_keys(conn, settings, e.name)
    conn.execute("ANALYZE pg_temp.chatsync_scope_keys")


def _key_select(es: EntitySQL, side: str) -> sql.Composable:
    if side == "room":
        cols = [es.rc(k) for k in es.entity.room_key]
    else:
        cols = [es.cc(k) for k in es.entity.chat_key]
    if not es.entity.has_user:
        cols.append(es.keys.user.null())
    return J(", ").join(cols)


def _side_filter(es: EntitySQL, side: str, scope: Scope) -> sql.Composable:
    """WHERE clause restricting one side (columns unqualified) to the scope."""
    room_col = es.room_scope_col(side)
    if scope.kind == "full":
        return J("TRUE")
    if scope.kind == "rooms":
        return J("{} = ANY({})").format(room_col, es.keys.room.array("rooms"))
    if scope.kind == "range":
        return es.keys.room.in_range(room_col)
    # key-set scopes: semi-join with the temp key table
    table = es.room if side == "room" else es.chat
    keys = es.entity.room_key if side == "room" else es.entity.chat_key
    conds = [J("s.room_id = {}").format(table.col(keys[0], table.name))]
    if es.entity.has_user:
        conds.append(J("s.user_id = {}").format(table.col(keys[1], table.name)))
    return J("EXISTS (SELECT 1 FROM pg_temp.chatsync_scope_keys AS s WHERE {})").format(J(" AND ").join(conds))


def _findings_in_scope(es: EntitySQL, scope: Scope) -> sql.Composable:
    if scope.kind == "full":
        return J("TRUE")
    if scope.kind == "rooms":
        return J("o.room_id = ANY({})").format(es.keys.room.array("rooms"))
    if scope.kind == "range":
        return es.keys.room.in_range(J("o.room_id"))
    return J("EXISTS (SELECT 1 FROM pg_temp.chatsync_scope_keys AS s WHERE s.room_id = o.room_id AND {})").format(
        es.same_user("s", "o"))


def _bind(scope: Scope, run_id: int, entity: Entity) -> dict:
    params: dict = {"run_id": run_id, "kinds": list(entity.kinds)}
    if scope.kind == "rooms":
        params["rooms"] = list(scope.rooms)
    if scope.kind == "range" and scope.room_range:
        params["room_lo"], params["room_hi"] = scope.room_range
    return params


def table_rows(conn, settings: Settings) -> int:
    """Rows on the room side (the repair threshold's denominator).

    Exact below 100k rows, the planner's estimate above (an exact count of 10M rows costs more
    than the threshold needs).
    """
    if settings.two_databases:  # the room database's tables, not their copy (maybe not taken yet)
        with connection(settings, side="room") as room_conn:
            return _rows(room_conn, source_entity_sql(settings))
    return _rows(conn, entity_sql(settings))


def _rows(conn, entities: list[EntitySQL]) -> int:
    total = 0
    for es in entities:
        est = es.room.reltuples(conn)
        if est is None or est < 100_000:
            est = one(conn.execute(J("SELECT count(*) FROM {}").format(es.room.ident)))[0]
        total += int(est or 0)
    return total


# (database, mapping) pairs already checked by this process: the event worker detects many
# times a second, the check costs a catalog query per mapped table
_mapping_checked: set[tuple[str | None, str | None, str]] = set()


@dataclass(frozen=True)
class DetectPlan:
    """A detect run begun: its record exists, its scope is resolved (incremental → its watermark,
    or full when there is none), its watermark-to-be is taken. The parts (the whole scope, or
    room-id shards of a full scope) then run on their own and ``finish`` sums them up."""
    run_id: int
    scope: Scope  # effective
    detect_started_at: datetime
    since: datetime | None = None

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "scope": self.scope.kind, "scope_params": self.scope.params(),
                "detect_started_at": self.detect_started_at.isoformat(),
                "since": self.since.isoformat() if self.since else None}

    @classmethod
    def from_dict(cls, d: dict) -> DetectPlan:
        p = d.get("scope_params") or {}
        scope = Scope(d["scope"], rooms=tuple(p.get("rooms", ())),
                      participants=tuple(tuple(k) for k in p.get("participants", ())),
                      room_range=tuple(p["room_range"]) if p.get("room_range") else None)
        since = d.get("since")
        return cls(d["run_id"], scope, datetime.fromisoformat(d["detect_started_at"]),
                   datetime.fromisoformat(since) if since else None)


def detect(settings: Settings, scope: Scope = Scope(), *, triggered_by: str = "cli",
           run_id: int | None = None) -> DetectResult:
    """Find every inconsistency in the scope and store it under a run (new unless run_id given)."""
    t0 = time.perf_counter()
    plan = begin(settings, scope, triggered_by=triggered_by, run_id=run_id)
    try:
        durations = with_retry(lambda: detect_part(settings, plan), settings, f"detect run {plan.run_id}")
        sys.audit("chatsync.step", "detect:before_finish")
        return finish(settings, plan, seconds=time.perf_counter() - t0, durations=durations)
    except Exception as exc:
        discard(settings, plan.run_id, f"detect failed: {exc}")
        raise


def begin(settings: Settings, scope: Scope = Scope(), *, triggered_by: str = "cli",
          run_id: int | None = None) -> DetectPlan:
    """Create the run (unless given) and resolve its scope."""
    ops = settings.ops_schema

    def attempt() -> DetectPlan:
        with connection(settings) as conn:
            checked = (settings.database_url, settings.room_database_url, settings.mapping_path)
            if checked not in _mapping_checked:
                room_copy.check_mapping(settings, conn)
                _mapping_checked.add(checked)
            if scope.kind != "keys":  # a pass closes what dead processes left open (the worker: periodically)
                runs.close_abandoned(conn, settings)
                conn.commit()
            rid = run_id if run_id is not None else runs.create(
                conn, settings, scope=scope.kind, params=scope.params(), triggered_by=triggered_by)
            effective, since = scope, None
            if scope.kind == "incremental":
                watermark = runs.incremental_watermark(conn, ops)
                if watermark is None:
                    log.info("run %s: no consistent run yet, incremental scope falls back to full", rid)
                    effective = Scope("full")
                else:
                    since = watermark - timedelta(seconds=settings.incremental_overlap_seconds)
            started = one(conn.execute("SELECT now()"))[0]
            runs.update(conn, ops, rid, scope=effective.kind, detect_started_at=started)
            return DetectPlan(rid, effective, started, since)

    return with_retry(attempt, settings, "detect: begin the run")


def shards(settings: Settings, plan: DetectPlan) -> list[Scope | None]:
    """The parts of a run, each for its own task and transaction: room-id ranges of a full scope
    of more than detect_shard_rows rows (one per detect_shard_rows, at most detect_max_shards),
    else [None], the whole scope in one part. Fingerprints kept current by triggers make a full
    scan cost what changed, not the table: one part then."""
    if plan.scope.kind != "full":
        return [None]
    with connection(settings) as conn:
        per_room = next(es for es in entity_sql(settings) if es.entity.has_user)
        if fingerprints.state(conn, settings, per_room)[0] == "current":
            return [None]
        rows = table_rows(conn, settings)
        n = min(settings.detect_max_shards, math.ceil(rows / settings.detect_shard_rows))
        if n <= 1:
            return [None]
        ranges: list[Scope | None] = list(_split(conn, per_room, plan.scope, n))
        return ranges if len(ranges) > 1 else [None]


def detect_part(settings: Settings, plan: DetectPlan, part: Scope | None = None) -> dict[str, float]:
    """Diff one part of the run (None: the whole scope) in one transaction, replacing the part's
    findings of an earlier attempt; returns seconds by entity."""
    ops = settings.ops_schema
    scope = part or plan.scope
    durations: dict[str, float] = {}
    t_copy = time.perf_counter()
    if _refresh_room_copy(settings, scope) is not None:
        durations["room_copy"] = round(time.perf_counter() - t_copy, 4)
    # a room value the chat column's type cannot hold: one line naming the columns
    entities = entity_sql(settings)
    with value_errors(entities), connection(settings) as conn, conn.transaction():
        # a rerun of the same part replaces its findings (idempotent task retry)
        where: sql.Composable = J("")
        if part is not None:
            where = J(" AND {}").format(entities[0].keys.room.in_range(J("room_id")))
        conn.execute(J("DELETE FROM {}.inconsistencies WHERE run_id = %(run_id)s{}").format(
            sql.Identifier(ops), where), _bind(scope, plan.run_id, ENTITIES[0]))
        for es in entities:
            t_entity = time.perf_counter()
            if scope.kind in ("incremental", "keys"):
                _fill_scope_keys(conn, settings, es, scope, plan.since)
            params = _bind(scope, plan.run_id, es.entity)
            if not (_maintained_fingerprints(conn, settings, es, scope, plan.run_id)
                    and _diff_changed_keys(conn, settings, es, plan.run_id)):
                _diff_tables(conn, settings, es, scope, plan.run_id)
            conn.execute(sql_file(settings, "close_vanished_findings", **es.common(ops),
                                  in_scope=_findings_in_scope(es, scope), same_user=es.same_user("n", "o")), params)
            durations[es.entity.name] = round(time.perf_counter() - t_entity, 4)
    return durations


def _refresh_room_copy(settings: Settings, scope: Scope):
    """With the room side in a database of its own: its copy brought up to date for the scope
    before the diff reads it (key-set scopes: by _fill_scope_keys, in the diff's transaction)."""
    if scope.kind == "full":
        return room_copy.sync(settings)
    if scope.kind == "range" and scope.room_range:
        return room_copy.sync(settings, scope.room_range)
    if scope.kind == "rooms":
        return room_copy.refresh_rooms(settings, list(scope.rooms))
    return None


def finish(settings: Settings, plan: DetectPlan, *, seconds: float | None = None,
           durations: dict[str, float] | None = None) -> DetectResult:
    """Count the run's findings by kind and mark it detected. seconds: the detect's own time
    (None: since the plan began, by the database clock)."""
    ops = settings.ops_schema
    run_id = plan.run_id
    with connection(settings) as conn, conn.transaction():
        counts = {k: 0 for k in KINDS}
        for kind, n in conn.execute(J("SELECT kind, count(*) FROM {}.inconsistencies WHERE run_id = %s "
                                      "GROUP BY kind").format(sql.Identifier(ops)), (run_id,)):
            counts[kind] = n
        rows_to_change = one(conn.execute(J(
            "SELECT count(*) FROM (SELECT DISTINCT room_id, user_id FROM {}.inconsistencies "
            "WHERE run_id = %s) AS k").format(sql.Identifier(ops)), (run_id,)))[0]
        total_rows = table_rows(conn, settings)
        if seconds is None:
            seconds = one(conn.execute("SELECT extract(epoch FROM clock_timestamp() - %s)::float8",
                                   (plan.detect_started_at,)))[0]
        runs.update(conn, ops, run_id, status="detected", error=None, counts=counts,
                    rows_to_change=rows_to_change, total_rows=total_rows)
        runs.add_step_duration(conn, ops, run_id, "detect", seconds)
        # this run if it found nothing, and those whose last open findings it closed as vanished
        runs.settle(conn, settings)
    result = DetectResult(run_id, plan.scope.kind, counts, rows_to_change, total_rows, seconds, plan.since,
                          durations or {})
    log.info("run %s: detect (%s) found %d findings on %d rows in %.3fs: %s", run_id, plan.scope.kind,
             result.total, rows_to_change, seconds, {k: v for k, v in counts.items() if v})
    return result


def _insert_statement(settings: Settings, es: EntitySQL, scope: Scope) -> sql.Composed:
    return sql_file(
        settings, "detect_findings", **es.common(settings.ops_schema),
        key_out=es.key_out(), kinds=es.kinds_array(), digest=es.chat_digest_or_null(),
        room_filter=_side_filter(es, "room", scope), chat_filter=_side_filter(es, "chat", scope),
        join_on=es.join_room_chat(), differs=es.differs())


# Planner settings for one detect statement, by what it reads, restored afterwards.
_SCAN_SETTINGS = {
    # Both sides are indexed on the key: a merge full join streams them in key order, where a hash
    # join spills a 1M-row hash to disk (measured: 0.39 s against 0.47 s at 1M rows).
    "whole": {"enable_hashjoin": "off", "jit": "off"},
    # A key set (incremental, event keys, changed keys) probes both sides' key indexes, so its cost
    # follows the keys, not the tables; PostgreSQL's default random_page_cost (4, spinning disks)
    # prices two full scans lower from ~1 % of the rows on. JIT compiles for longer than the
    # probes of a few thousand keys take.
    "keys": {"random_page_cost": "1.1", "jit": "off"},
}


@contextmanager
def _planner(conn, reads: str):
    """_SCAN_SETTINGS[reads] for the statements run inside, in conn's current transaction."""
    local = _SCAN_SETTINGS[reads]
    previous = {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in local}
    for name, value in local.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
    yield
    for name, value in previous.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


def _scan(conn, settings: Settings, es: EntitySQL, scope: Scope, params: dict) -> None:
    """Run the detect INSERT for one scope on conn, inside its current transaction."""
    with _planner(conn, "whole" if scope.kind in ("full", "range") else "keys"):
        conn.execute(_insert_statement(settings, es, scope), params)


def _split(conn, es: EntitySQL, scope: Scope, parts: int) -> list[Scope]:
    """Room-id ranges covering the scope (full: every room id; range: its range), cut evenly
    over the ids the tables hold in it: an open-ended range split by its bounds alone would give
    one part all the rows. Whole numbers and uuids are cut evenly between the least and greatest
    id held; strings, which have no arithmetic, at the room side's percentiles of its ids."""
    lo, hi = scope.room_range if scope.kind == "range" and scope.room_range else (None, None)
    key = es.keys.room
    rk, ck = es.room_scope_col("room"), es.room_scope_col("chat")
    params = {"room_lo": lo, "room_hi": hi}
    if key.kind == "text":
        cuts = one(conn.execute(J(
            "SELECT percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY {rk}) "
            "FROM {room} WHERE {inside}").format(rk=rk, room=es.room.ident, inside=key.in_range(rk)),
            {**params, "fractions": [i / parts for i in range(1, parts)]}))[0] or []
    else:
        # ORDER BY ... LIMIT 1 rather than min/max: PostgreSQL has no min(uuid); an index serves both
        held_lo, held_hi = one(conn.execute(J(
            "SELECT least((SELECT {rk} FROM {room} WHERE {room_in} ORDER BY 1 LIMIT 1), "
            "             (SELECT {ck} FROM {chat} WHERE {chat_in} ORDER BY 1 LIMIT 1)), "
            "greatest((SELECT {rk} FROM {room} WHERE {room_in} ORDER BY 1 DESC LIMIT 1), "
            "         (SELECT {ck} FROM {chat} WHERE {chat_in} ORDER BY 1 DESC LIMIT 1))").format(
            rk=rk, ck=ck, room=es.room.ident, chat=es.chat.ident,
            room_in=key.in_range(rk), chat_in=key.in_range(ck)), params))
        cuts = [] if held_lo is None else key.even_cuts(held_lo, held_hi, parts)
    # the outer bounds stay the scope's: ids appearing after the cuts were read still fall in a range
    inner = sorted(set(c for c in cuts if (lo is None or c > lo) and (hi is None or c < hi)))
    bounds = [lo, *inner, hi]
    return [Scope("range", room_range=(a, b)) for a, b in zip(bounds, bounds[1:])]


def _estimated_rows(conn, es: EntitySQL) -> int:
    return max(es.room.reltuples(conn) or 0, 0)


def _parallel_ranges(conn, settings: Settings, es: EntitySQL, scope: Scope) -> list[Scope]:
    """The ranges to scan on parallel connections, or [] to scan in the main transaction."""
    workers = settings.parallel_workers()
    if (scope.kind not in ("full", "range") or workers < 2
            or _estimated_rows(conn, es) < settings.detect_parallel_min_rows):
        return []
    ranges = _split(conn, es, scope, workers)
    return ranges if len(ranges) > 1 else []


def _maintained_fingerprints(conn, settings: Settings, es: EntitySQL, scope: Scope, run_id: int) -> bool:
    """True when this full scan can start from fingerprints kept current by triggers."""
    if scope.kind != "full" or not es.entity.has_user:
        return False
    state, why = fingerprints.state(conn, settings, es)
    if state == "stale":
        log.warning("run %s: %s fingerprints are stale (%s): diffing the tables; rebuild with "
                    "'chatsync fingerprints install'", run_id, es.entity.name, why)
    return state == "current"


def _diff_changed_keys(conn, settings: Settings, es: EntitySQL, run_id: int) -> bool:
    """Full scope from maintained fingerprints: fold the log (what chat_sync_health has not folded
    already), then, by room-id ranges holding equal shares of the changed keys (on parallel
    connections), compare the fingerprints and, in the rooms that differ, diff the keys changed
    since the last detect (and those still unresolved) and prove the rest of each room matches in
    the same read (fingerprint_diff.diff_keys); a room the proof fails gets a row diff. The cost
    follows the changes, not the table; above fingerprint_max_changed_fraction of the rows changed
    a key costs more than its share of a table scan, so False: scan instead."""
    t0 = time.perf_counter()
    # The fold commits first, on its own connection, so the parallel connections read it; the
    # fold lock taken again here keeps further folds out until this transaction has removed the
    # changed keys it diffed (a fold that slips in between is read like the rest).
    with connection(settings, application_name="chatsync detect") as fold_conn, fold_conn.transaction():
        fingerprints.fold(fold_conn, settings, es)
    changed = fingerprints.hold_changed_keys(conn, settings, es)
    phases = {"fold": time.perf_counter() - t0}
    limit = settings.fingerprint_max_changed_fraction * max(_estimated_rows(conn, es), 1)
    if changed > limit:
        log.info("run %s: %s: %d keys changed since the last detect, above the switch (%.0f): diffing the tables",
                 run_id, es.entity.name, changed, limit)
        fingerprints.forget_changed_keys(conn, settings, es)  # the table diff in this transaction covers them
        return False
    # ranges with equal shares of the changed keys, on parallel connections when there are many
    workers = settings.parallel_workers() if changed >= settings.detect_parallel_min_keys else 1
    ranges = fingerprint_diff.key_ranges(conn, settings, es, workers)
    if len(ranges) > 1:
        def one(room_range: tuple) -> fingerprint_diff.KeyedDiff:
            with connection(settings, application_name="chatsync detect") as part, part.transaction():
                return _diff_keys_in_range(part, settings, es, run_id, room_range)

        with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="detect") as pool:
            done = [f.result() for f in [pool.submit(one, r) for r in ranges]]
    else:
        done = [_diff_keys_in_range(conn, settings, es, run_id, ranges[0])]
    phases["keys"] = time.perf_counter() - t0 - sum(phases.values())
    fingerprints.forget_changed_keys(conn, settings, es)
    total = fingerprint_diff.KeyedDiff(*(sum(getattr(d, f) for d in done)
                                     for f in ("rooms", "differing", "keys", "findings")))
    total.unexplained = [room for d in done for room in d.unexplained]
    log.info("run %s: %s from maintained fingerprints: %d of %d rooms differ, %d keys diffed (%d findings) "
             "on %d connections, %d rooms row-diffed, in %.2fs (%s)", run_id, es.entity.name, total.differing,
             total.rooms, total.keys, total.findings, len(ranges), len(total.unexplained),
             time.perf_counter() - t0, ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items()))
    return True


def _diff_keys_in_range(conn, settings: Settings, es: EntitySQL, run_id: int,
                        room_range: tuple) -> fingerprint_diff.KeyedDiff:
    """fingerprints.diff_keys for the rooms of room_range on conn, then a row diff of the rooms
    it leaves unexplained."""
    empty_scope_keys(conn, settings)
    with _planner(conn, "keys"):
        done = fingerprint_diff.diff_keys(conn, settings, es, run_id, room_range)
    if done.unexplained:
        log.warning("run %s: %s: %d rooms differ beyond their logged changes (drift older than the "
                    "log, or a write that skipped the triggers): row diff of those rooms",
                    run_id, es.entity.name, len(done.unexplained))
        conn.execute(J("DELETE FROM {}.inconsistencies WHERE run_id = %s AND kind = ANY(%s) "
                       "AND room_id = ANY(%s::{}[])").format(sql.Identifier(settings.ops_schema),
                                                            es.keys.room.sql_type),
                     (run_id, list(es.entity.kinds), done.unexplained))
        part = Scope("rooms", rooms=tuple(done.unexplained))
        _scan(conn, settings, es, part, _bind(part, run_id, es.entity))
    return done


def _fingerprinted_rooms(conn, settings: Settings, es: EntitySQL, scope: Scope, run_id: int) -> list[int] | None:
    """For a full scan of a big per-room entity with no maintained fingerprints: the rooms whose
    fingerprints, hashed from both tables, differ ([] when none), or None to diff the whole
    tables (small table, room-level entity, or too many rooms differ for the narrowing to pay:
    the adaptive switch)."""
    if (scope.kind != "full" or not es.entity.has_user
            or not settings.fingerprint_min_rows or _estimated_rows(conn, es) < settings.fingerprint_min_rows):
        return None
    t0 = time.perf_counter()
    differing, rooms = fingerprint_diff.hashed_differing_rooms(conn, settings, es)
    share = len(differing) / rooms if rooms else 0.0
    use = share <= settings.fingerprint_max_room_fraction
    log.info("run %s: %s fingerprints: %d of %d rooms differ (%.1f%%) in %.2fs; %s", run_id, es.entity.name,
             len(differing), rooms, 100 * share, time.perf_counter() - t0,
             "row diff of those rooms" if use else "above the switch: row diff of the whole tables")
    return differing if use else None


def _insert_in_parallel(settings: Settings, es: EntitySQL, ranges: list[Scope], run_id: int) -> None:
    """Each range on its own connection, committed on its own; the run's status says whether
    the set is complete, and a failed attempt's findings are deleted before the next."""
    def one(part: Scope) -> None:
        with connection(settings, application_name="chatsync detect") as conn:
            _scan(conn, settings, es, part, _bind(part, run_id, es.entity))

    with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="detect") as pool:
        for future in [pool.submit(one, part) for part in ranges]:
            future.result()


def _diff_tables(conn, settings: Settings, es: EntitySQL, scope: Scope, run_id: int) -> None:
    """The row diff of the scope: narrowed to the rooms whose hashed fingerprints differ, split in
    room-id ranges on parallel connections, or one statement."""
    if (narrowed := _fingerprinted_rooms(conn, settings, es, scope, run_id)) is not None:
        if narrowed:  # [] : every room's fingerprints match, nothing to diff
            part = Scope("rooms", rooms=tuple(narrowed))
            _scan(conn, settings, es, part, _bind(part, run_id, es.entity))
    elif ranges := _parallel_ranges(conn, settings, es, scope):
        _insert_in_parallel(settings, es, ranges, run_id)
        log.info("run %s: %s scanned in %d parallel ranges", run_id, es.entity.name, len(ranges))
    else:
        _scan(conn, settings, es, scope, _bind(scope, run_id, es.entity))


def discard(settings: Settings, run_id: int, error: str) -> None:
    """Mark a detect run failed, its findings removed: a failed detect leaves no partial set
    behind (parallel ranges and shards commit on their own)."""
    try:
        with connection(settings) as conn:
            conn.execute(J("DELETE FROM {}.inconsistencies WHERE run_id = %s").format(
                sql.Identifier(settings.ops_schema)), (run_id,))
            runs.update(conn, settings.ops_schema, run_id, status="failed", error=error[:2000],
                        finished_at=datetime.now().astimezone())
            conn.commit()
    except Exception:  # noqa: BLE001 - the original error matters more
        log.exception("run %s: could not record the failure", run_id)


def keys_changed_since(settings: Settings, run_id: int, since: datetime) -> int:
    """How many of the run's keys changed on either side since `since`."""
    with connection(settings) as conn:
        return sum(one(conn.execute(sql_file(
            settings, "findings_keys_changed_since", **es.common(settings.ops_schema),
            is_entity_finding=es.is_entity_finding("i"), room_eq_i=es.join_room_to("i"),
            chat_eq_i=es.join_chat_to("i"), room_changed=es.changed_since("room"),
            chat_changed=es.changed_since("chat")),
            {"run_id": run_id, "since": since}))[0] for es in entity_sql(settings))


def residual_statement(settings: Settings, entity: Entity) -> sql.Composed:
    """SELECT (kind, room_id, user_id) still differing over whole tables: the validation's "no
    remaining difference" (a view read by Great Expectations). Keys a repair holds back (a room
    value outside its domain) are left out: the room side's data-quality problem, reported as such
    (room_domain_violations), not a failure of the chat side. Only identifiers and the rules' and
    domains' constants are composed in."""
    ed = next(x for x in entity_domains(settings) if x.entity.name == entity.name)
    es = ed.es
    return sql_file(settings, "residual_differences", **es.common(settings.ops_schema),
                    key_out=es.key_out(), kinds=es.kinds_array(), join_on=es.join_room_chat(),
                    differs=es.differs(), held_back=ed.held_back("r", "c"))
