"""Repair: make the chat side equal to the room side for a run's findings, with a receipt.

Each batch (a room-id range holding at most ``repair_batch_rows`` findings) is one transaction
with one statement per entity (sql/consistency/repair_batch.sql): the findings marked repaired as it
reads them, inserts, updates, deletes, and an audit row with the before/after image of every
changed row; findings of rows left alone are then marked skipped, and other unsettled runs'
findings of the changed keys repaired, each by a statement of its own that runs only when needed.
Batches run on parallel connections. Every change re-checks the difference itself, so a chat row
changed by the application between detect and repair is skipped, never overwritten. A room row
holding a value outside its field's domain (the mapping's ``domains:``) is not copied either: its
findings are held back, open, and the value recorded in room_domain_violations and reported (the
room side's data to fix, or the domain to widen). Rollback restores a run's before-images,
skipping rows changed since.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import sql

from chatsync.config import Settings
from chatsync.consistency.scope import empty_scope_keys
from chatsync.db import locks, runs
from chatsync.db.connection import connection, one
from chatsync.db.retry import with_retry
from chatsync.db.statements import sql_file, unsettled_runs
from chatsync.errors import ConfigError
from chatsync.model.domains import EntityDomains, entity_domains
from chatsync.model.mapping import load_mapping
from chatsync.model.rules import ENTITIES
from chatsync.model.sqlgen import entity_sql, value_errors
from chatsync.roomside import refresh as room_copy

log = logging.getLogger("chatsync.repair")
J = sql.SQL


@dataclass
class RepairResult:
    run_id: int
    repaired: int = 0  # rows changed
    by_action: dict[str, int] = field(default_factory=lambda: {"insert": 0, "update": 0, "delete": 0})
    skipped: int = 0  # findings left open (row changed meanwhile or no longer differing)
    held_back: int = 0  # keys not repaired: their room row holds a value outside its domain
    room_domain_violations: dict[str, int] = field(default_factory=dict)  # field -> values held back
    batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "repaired": self.repaired, "by_action": self.by_action,
                "skipped": self.skipped, "held_back": self.held_back,
                "room_domain_violations": self.room_domain_violations, "batches": self.batches,
                "seconds": round(self.seconds, 4)}


@dataclass
class BatchOutcome:
    """What one batch did: rows changed by action, findings skipped, keys held back and the room
    values recorded for them (field, value, room_id, user_id)."""

    counts: dict[str, int] = field(default_factory=lambda: {"insert": 0, "update": 0, "delete": 0})
    skipped: int = 0
    held_back: int = 0
    violations: list[tuple] = field(default_factory=list)


# A repair logs this many held-back room values one by one, then their number (the ops table and
# the run's result hold them all).
LOGGED_VIOLATIONS = 20


def _batches(conn, settings: Settings, run_id: int) -> list[tuple]:
    """Room-id ranges [lo, hi) of even size, each holding at most repair_batch_rows open findings
    (a room is never split). From repair_parallel_min_rows findings their number is a multiple
    of the workers, so no worker runs a last batch alone (at 10M participants, 110k findings
    made 50k + 50k + 10k on 2 workers)."""
    rows = conn.execute(J(
        "SELECT room_id, count(*) FROM {}.inconsistencies WHERE run_id = %s AND status = 'open' "
        "GROUP BY room_id ORDER BY room_id").format(sql.Identifier(settings.ops_schema)), (run_id,)).fetchall()
    total = sum(n for _, n in rows)
    most = settings.repair_batch_rows
    count = max(1, math.ceil(total / most))
    if total >= settings.repair_parallel_min_rows:
        workers = settings.parallel_workers()
        count = workers * math.ceil(total / (workers * most))
    ranges, lo, size, before = [], None, 0, 0
    for room_id, n in rows:
        if lo is None:
            lo = room_id
        # cut at the room boundary nearest the next even share, or where the batch would be full
        elif size + n > most or before + size + n / 2 > total * (len(ranges) + 1) / count:
            ranges.append((lo, room_id))
            lo, before, size = room_id, before + size, 0
        size += n
    if lo is not None:
        ranges.append((lo, None))  # open above: every room id from lo
    return ranges


def _statements(settings: Settings, ed: EntityDomains) -> dict[str, sql.Composed | None]:
    """The statements that repair this entity for a batch's rooms: the one that changes the rows
    and those that mark findings when some row was left alone (held back, or skipped) or another
    run is unsettled."""
    es = ed.es
    common = es.common(settings.ops_schema)
    return {
        "batch": sql_file(settings, "repair_batch", **common,
                          insert_columns=es.insert_columns(), insert_values=es.insert_values(),
                          room_eq_todo=es.join_room_to("t"), chat_eq_todo=es.join_chat_to("t"),
                          chat_eq_todo_o=es.join_chat_to("t", "o"), set_from_room=es.set_from_room(),
                          room_eq_old=es.join_room_chat("r", "o"), digest_c=es.chat_digest("c"),
                          still_differs=es.still_differs("r", "c"), room_eq_c=es.join_room_chat("r", "c"),
                          chat_key_out=es.chat_key_cols("c", as_names=True),
                          is_entity_finding=es.is_entity_finding(),
                          held_back_insert=ed.held_back("r", None), held_back_update=ed.held_back("r", "c")),
        "hold_back": sql_file(settings, "repair_hold_back", **common,
                              room_eq_c=es.join_room_chat("r", "c"), room_eq_i=es.join_room_to("i"),
                              room_eq_k=es.join_room_to("k"), is_entity_finding_i=es.is_entity_finding("i"),
                              held_back=ed.held_back("r", "c"), violations=ed.violations("r", "c"),
                              audit_user_eq_i=es.same_user("a", "i"), violation_user_eq_k=es.same_user("d", "k"))
        if ed.fields else None,  # no domain: nothing is ever held back
        "mark_skipped": sql_file(settings, "repair_mark_skipped", **common,
                                 is_entity_finding_i=es.is_entity_finding("i"),
                                 audit_user_eq_i=es.same_user("a", "i")),
        "mark_earlier": sql_file(settings, "repair_mark_earlier", **common,
                                 finding_user_eq_d=es.same_user("i", "d")),
    }


def wal_compression(conn, settings: Settings) -> str | None:
    """The WAL compression the repair's transactions set, or None to leave the server's: the
    configured method when this role may set it and the server was built with it."""
    wanted = settings.repair_wal_compression
    if wanted == "default":
        return None
    may_set = ("has_parameter_privilege('wal_compression', 'SET')" if conn.info.server_version >= 150000
               else "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    allowed, built = conn.execute(J(
        "SELECT {}, %s = ANY(enumvals) FROM pg_settings WHERE name = 'wal_compression'").format(J(may_set)),
        (wanted,)).fetchone()
    if not built:
        log.info("repair: this server was built without %s WAL compression (CHATSYNC_REPAIR_WAL_COMPRESSION): "
                 "the server's setting stays", wanted)
    elif not allowed:
        log.info("repair: role %s may not set wal_compression (superuser or GRANT SET ON PARAMETER "
                 "wal_compression): the server's setting stays", conn.info.user)
    return wanted if allowed and built else None


def _repair_batch(settings: Settings, statements: dict, run_id: int, lo, hi,
                  compression: str | None = None) -> BatchOutcome:
    """One batch in one transaction: each entity's statement for the rooms in [lo, hi)."""
    out = BatchOutcome()
    with connection(settings, application_name="chatsync repair") as conn, conn.transaction():
        # A batch meets a few thousand keys of a table of millions: index probes, not a scan of
        # the table. PostgreSQL's default random_page_cost (4, spinning disks) picked the scan
        # (measured at 1M participants: 155 ms vs 25 ms for the lookups of one batch).
        conn.execute("SET LOCAL random_page_cost = 1.1")
        if compression:  # the batch's first change of each page after a checkpoint writes all of it
            conn.execute("SELECT set_config('wal_compression', %s, true)", (compression,))
        # runs other than this one with unresolved findings: usually none
        other_runs = one(conn.execute(J("SELECT array_remove({}, %s)").format(unsettled_runs(settings)),
                                  (run_id,)))[0]
        for es in entity_sql(settings):  # no foreign key between the chat tables: any order
            e = es.entity
            params = {"run_id": run_id, "room_lo": lo, "room_hi": hi, "missing_kind": e.missing_kind,
                      "orphan_kind": e.orphan_kind, "mismatch_kinds": list(e.mismatch_kinds),
                      "kinds": list(e.kinds), "other_runs": other_runs}
            ins, upd, dele, keys = one(conn.execute(statements[e.name]["batch"], params))
            # rows left alone (changed since detection, or held back): rare, so not a pass of every batch
            if ins + upd + dele < keys:
                if statements[e.name]["hold_back"] is not None:
                    held = conn.execute(statements[e.name]["hold_back"], params).fetchall()
                    out.held_back += held[0][0]
                    out.violations += [row[1:] for row in held if row[1] is not None]
                out.skipped += conn.execute(statements[e.name]["mark_skipped"], params).rowcount
            if other_runs and ins + upd + dele:
                conn.execute(statements[e.name]["mark_earlier"], params)
            out.counts["insert"] += ins
            out.counts["update"] += upd
            out.counts["delete"] += dele
        sys.audit("chatsync.step", "repair:in_batch")
    sys.audit("chatsync.step", "repair:after_commit")
    return out


def _refresh_room_rows_of_findings(settings: Settings, run_id: int) -> None:
    """The room rows the run's open findings name, read again in the room database into its copy
    (two databases): a repair writes the room side's values of the moment, as in one database."""
    with connection(settings, application_name="chatsync room keys") as conn, conn.transaction():
        for entity in ENTITIES:
            empty_scope_keys(conn, settings)
            conn.execute(J("INSERT INTO pg_temp.chatsync_scope_keys SELECT DISTINCT room_id, user_id "
                           "FROM {}.inconsistencies WHERE run_id = %s AND status = 'open' AND kind = ANY(%s)").format(
                sql.Identifier(settings.ops_schema)), (run_id, list(entity.kinds)))
            room_copy.refresh_scope_keys(conn, settings, entity.name)


def repair(settings: Settings, run_id: int) -> RepairResult:
    """Repair every open finding of the run, batch by batch. Rerunning resumes where it stopped.

    The batches (disjoint room ranges, one transaction each) run on parallel connections while
    this process holds the repair lock on its control connection (chatsync.db.locks), so no other
    repair or rollback interleaves with them; a cut control connection is reconnected and the
    lock taken back.
    """
    ops = settings.ops_schema
    t0 = time.perf_counter()
    result = RepairResult(run_id)
    statements = {ed.entity.name: _statements(settings, ed) for ed in entity_domains(settings)}
    domains = load_mapping(settings.mapping_path).domains
    control = locks.control(settings)

    def on_control(fn, what: str):
        return control.run(fn, f"repair run {run_id}: {what}")

    run = on_control(lambda c: runs.get(c, ops, run_id), "read the run")
    if run is None:
        raise ConfigError(f"run {run_id} does not exist")
    if run["status"] not in ("detected", "repairing", "major", "repaired", "validation_failed"):
        raise ConfigError(f"run {run_id} is {run['status']}: only a detected run can be repaired")
    locks.hold_run(settings, run_id)
    control.take(locks.REPAIR_LOCK, "the repair lock")
    try:
        on_control(lambda c: runs.update(c, ops, run_id, status="repairing"), "mark it repairing")
        # the room side's values of now, as a repair reads them when both sides share a database
        if settings.two_databases:
            with_retry(lambda: _refresh_room_rows_of_findings(settings, run_id), settings,
                       f"repair run {run_id}: the room rows of its findings")
        batches = on_control(lambda c: _batches(c, settings, run_id), "plan the batches")
        compression = on_control(lambda c: wal_compression(c, settings), "WAL compression")
        sys.audit("chatsync.step", "repair:before_batches")
        workers = max(1, min(settings.parallel_workers(), len(batches)))

        def one_batch(i: int, lo, hi) -> None:
            batch = with_retry(lambda: _repair_batch(settings, statements, run_id, lo, hi, compression),
                               settings, f"repair run {run_id} batch {i}/{len(batches)}")
            counts, skipped = batch.counts, batch.skipped
            with progress:
                for action, n in counts.items():
                    result.by_action[action] += n
                result.repaired += sum(counts.values())
                result.skipped += skipped
                result.held_back += batch.held_back
                for field_name, value, room_id, user_id in batch.violations:
                    result.room_domain_violations[field_name] = result.room_domain_violations.get(field_name, 0) + 1
                    if logged[0] < LOGGED_VIOLATIONS:
                        log.warning("run %s: held back room %s user %s: its %s %r is outside the mapping's "
                                    "domain (%s); the chat row stays as it is", run_id, room_id,
                                    "-" if user_id is None else user_id, field_name, value,
                                    domains[field_name].describe())
                    logged[0] += 1
                result.batches += 1
                done = result.batches
            log.info("run %s: repair batch %d/%d done (%d/%d; rooms %s..%s) changed %s, skipped %d findings",
                     run_id, i, len(batches), done, len(batches), lo, "end" if hi is None else hi,
                     counts, skipped)

        progress = threading.Lock()
        logged = [0]  # held-back values logged one by one so far
        # a room value the chat column cannot hold (a text too long for its varchar(n)...): one line
        with value_errors(entity_sql(settings)), \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repair") as pool:
            futures = [pool.submit(one_batch, i, lo, hi) for i, (lo, hi) in enumerate(batches, 1)]
            for future in futures:
                future.result()  # the first failure is raised; committed batches stay (resumable)

        result.seconds = time.perf_counter() - t0

        def settle(conn) -> None:
            totals = conn.execute(J(
                "SELECT count(*) FILTER (WHERE rolled_back_by IS NULL), "
                "(SELECT count(*) FROM {ops}.inconsistencies WHERE run_id = %(r)s AND status = 'skipped'), "
                "(SELECT count(*) FROM {ops}.inconsistencies WHERE run_id = %(r)s AND status = 'open') "
                "FROM {ops}.repair_audit WHERE run_id = %(r)s").format(ops=sql.Identifier(ops)),
                {"r": run_id}).fetchone()
            # totals over the whole run, so a resumed repair reports what the run did in all
            # with no finding skipped or held back (open), every finding of the run is resolved: it is settled
            runs.update(conn, ops, run_id, status="repaired", repaired=totals[0], skipped=totals[1],
                        settled_at=None if totals[1] or totals[2] else datetime.now().astimezone())
            runs.add_step_duration(conn, ops, run_id, "repair", result.seconds)
        on_control(settle, "record the totals")
    finally:
        control.release(locks.REPAIR_LOCK)
        locks.release_run(run_id)
    log.info("run %s: repaired %d rows (%s), %d findings skipped, %d batches on %d connections, in %.3fs",
             run_id, result.repaired, result.by_action, result.skipped, result.batches, workers, result.seconds)
    if result.held_back:
        log.warning("run %s: %d keys held back, their room values outside the mapping's domains (by field: %s); "
                    "they stay open until the room data is fixed or the domain widened (%s.room_domain_violations)",
                    run_id, result.held_back, result.room_domain_violations, ops)
    return result
