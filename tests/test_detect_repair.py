"""Detection and repair against the real Postgres: exact counts, re-checks, rollback, threshold."""

from __future__ import annotations

import os
import threading
from datetime import timezone

import psycopg
import pytest
from conftest import sides_equal, wait_until
from psycopg import sql

from chatsync.consistency.decide import decide
from chatsync.consistency.detect import detect
from chatsync.consistency.engine import check
from chatsync.consistency.repair import repair
from chatsync.consistency.rollback import rollback
from chatsync.consistency.scope import Scope
from chatsync.db.migrations import MIGRATIONS
from chatsync.model.rules import KINDS

# A hand-made case with every kind once or twice (see the comments for what each row is).
SMALL_CASE = """
INSERT INTO room.rooms (id, name, status, archived_at) VALUES
  (1, 'one', 'LIVE', NULL), (2, 'two', 'ENDED', now()), (3, 'three', 'DRAFT', NULL);
INSERT INTO chat.chat_rooms (room_id, status, is_public, chat_enabled, archived) VALUES
  (1, 'LIVE', true, true, false),
  (2, 'LIVE', true, true, false),      -- room_state_mismatch (status and archived: counts once)
  (4, 'LIVE', true, true, false);      -- orphan_chat_room; room 3 is missing_chat_room
INSERT INTO room.room_participants (room_id, user_id, role, permissions, banned_at) VALUES
  (1, 10, 'OWNER', 7, NULL), (1, 11, 'MEMBER', 3, now()), (1, 12, 'MEMBER', 3, NULL),
  (1, 14, 'SPEAKER', 5, NULL), (3, 30, 'OWNER', 7, NULL);
INSERT INTO chat.chat_participants (room_id, user_id, role, permissions, banned) VALUES
  (1, 10, 'OWNER', 7, false),
  (1, 11, 'ADMIN', 3, false),          -- role_mismatch + ban_mismatch
  (1, 13, 'MEMBER', 3, false),         -- orphan_participant; (1,12) and (3,30) are missing
  (1, 14, 'SPEAKER', 1, false),        -- permissions_mismatch
  (4, 40, 'OWNER', 1, false);          -- orphan_participant of the orphan chat room
-- and 20 consistent members, so the run's 9 changes are not more rows than the tables have
INSERT INTO room.room_participants (room_id, user_id, role, permissions)
  SELECT 1, 100 + g, 'MEMBER', 3 FROM generate_series(1, 20) AS g;
INSERT INTO chat.chat_participants (room_id, user_id, role, permissions, banned)
  SELECT 1, 100 + g, 'MEMBER', 3, false FROM generate_series(1, 20) AS g;
"""
SMALL_COUNTS = {"missing_chat_room": 1, "orphan_chat_room": 1, "room_state_mismatch": 1,
                "missing_participant": 2, "orphan_participant": 2, "role_mismatch": 1,
                "permissions_mismatch": 1, "ban_mismatch": 1}


def test_small_case_every_kind_detected_and_repaired(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    assert found.counts == SMALL_COUNTS
    assert found.rows_to_change == 9  # 3 rooms + 6 participants
    fixed = repair(clean_db, found.run_id)
    assert fixed.by_action == {"insert": 3, "update": 3, "delete": 3}
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    audit = db.execute("SELECT count(*), count(*) FILTER (WHERE action = 'update' AND before IS NOT NULL "
                       "AND after IS NOT NULL) FROM chatsync.repair_audit WHERE run_id = %s",
                       (found.run_id,)).fetchone()
    assert audit == (9, 3)
    statuses = dict(db.execute("SELECT status, count(*) FROM chatsync.inconsistencies WHERE run_id = %s "
                               "GROUP BY status", (found.run_id,)).fetchall())
    assert statuses == {"repaired": sum(SMALL_COUNTS.values())}
    # writes_frozen is chat-owned state: a created chat room starts unfrozen
    assert db.execute(
        "SELECT writes_frozen, archived FROM chat.chat_rooms WHERE room_id = 3"
    ).fetchone() == (False, False)
    assert detect(clean_db).total == 0


@pytest.mark.parametrize("seed", [3, 11])
def test_simulated_drift_counts_match_simulator_exactly(db, clean_db, seed):
    from chatsync_devtools.simulate import simulate

    report = simulate(clean_db, rooms=60, members=30, drift=0.02, seed=seed)
    assert all(report.injected[k] >= 1 for k in KINDS), report.injected
    found = detect(clean_db)
    assert found.counts == report.injected
    repair(clean_db, found.run_id)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert detect(clean_db).total == 0


def test_parallel_ranges_and_batches_find_and_fix_exactly_the_same(db, clean_db, with_settings, caplog):
    from chatsync_devtools.simulate import simulate

    parallel = with_settings(workers=3, detect_parallel_min_rows=0, repair_parallel_min_rows=1)
    report = simulate(parallel, rooms=90, members=20, drift=0.03, seed=5)
    serial = detect(with_settings(workers=1))
    with caplog.at_level("INFO", logger="chatsync.diff"):
        found = detect(parallel)
    assert "participant scanned in 3 parallel ranges" in caplog.text
    assert found.counts == serial.counts == report.injected
    assert found.rows_to_change == serial.rows_to_change == report.changed_keys
    fixed = repair(with_settings(workers=3, repair_parallel_min_rows=1, repair_max_fraction=1.0), found.run_id)
    assert fixed.batches >= 3 and fixed.repaired == report.changed_keys
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit WHERE run_id = %s",
                      (found.run_id,)).fetchone()[0] == report.changed_keys
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert detect(parallel).total == 0


def test_rooms_scope_only_sees_those_rooms(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db, Scope("rooms", rooms=(3,)))
    assert {k: v for k, v in found.counts.items() if v} == {"missing_chat_room": 1, "missing_participant": 1}
    keys = detect(clean_db, Scope("keys", participants=((1, 11),)))
    assert {k: v for k, v in keys.counts.items() if v} == {"role_mismatch": 1, "ban_mismatch": 1}


def test_concurrent_write_between_detect_and_repair_is_not_overwritten(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    # the application changes (1,11) after detection: its write must survive the repair
    db.execute("UPDATE chat.chat_participants SET role = 'MODERATOR', updated_at = now() "
               "WHERE room_id = 1 AND user_id = 11")
    # and fixes (1,14) itself
    db.execute("UPDATE chat.chat_participants SET permissions = 5 WHERE room_id = 1 AND user_id = 14")
    fixed = repair(clean_db, found.run_id)
    assert db.execute("SELECT role, banned FROM chat.chat_participants WHERE room_id = 1 AND user_id = 11"
                      ).fetchone() == ("MODERATOR", False)
    assert fixed.by_action["update"] == 1  # only room 2; both participants were left alone
    skipped = db.execute("SELECT DISTINCT room_id, user_id FROM chatsync.inconsistencies "
                         "WHERE run_id = %s AND status = 'skipped' ORDER BY 1, 2", (found.run_id,)).fetchall()
    assert skipped == [(1, 11), (1, 14)]
    # the next pass sees (1,11) again, from its new state, and repairs it
    again = detect(clean_db)
    assert {k: v for k, v in again.counts.items() if v} == {"role_mismatch": 1, "ban_mismatch": 1}
    repair(clean_db, again.run_id)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    # (1,14)'s old finding was closed by the pass that no longer found it
    assert db.execute("SELECT status FROM chatsync.inconsistencies WHERE run_id = %s AND room_id = 1 "
                      "AND user_id = 14", (found.run_id,)).fetchone()[0] == "resolved"


def test_a_resumed_repair_skips_only_the_rows_it_leaves_alone(db, clean_db):
    """A batch marks its findings repaired as it reads them and marks skipped again those of the
    rows it left alone. Resumed after a failed batch, its rooms may hold findings an earlier
    attempt repaired: those stay repaired."""
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    repair(clean_db, found.run_id)
    # as if (1,14)'s batch had failed and the application had written the row since
    db.execute("UPDATE chatsync.inconsistencies SET status = 'open', resolved_at = NULL, resolved_by_run = NULL "
               "WHERE run_id = %s AND room_id = 1 AND user_id = 14", (found.run_id,))
    db.execute("DELETE FROM chatsync.repair_audit WHERE run_id = %s AND room_id = 1 AND user_id = 14", (found.run_id,))
    db.execute("UPDATE chat.chat_participants SET permissions = 1, updated_at = now() "
               "WHERE room_id = 1 AND user_id = 14")
    db.execute("UPDATE chatsync.runs SET status = 'repairing', settled_at = NULL WHERE run_id = %s", (found.run_id,))
    resumed = repair(clean_db, found.run_id)
    assert resumed.repaired == 0 and resumed.skipped == 1
    statuses = db.execute("SELECT room_id, user_id, status, resolved_by_run FROM chatsync.inconsistencies "
                          "WHERE run_id = %s ORDER BY 1, 2 NULLS FIRST, kind", (found.run_id,)).fetchall()
    assert [(r, u) for r, u, status, _ in statuses if status != "repaired"] == [(1, 14)]
    assert [by for *_, status, by in statuses if status == "repaired"] == [found.run_id] * (len(statuses) - 1)
    assert db.execute("SELECT settled_at FROM chatsync.runs WHERE run_id = %s", (found.run_id,)).fetchone()[0] is None


def waits_on_the_row_lock(db) -> None:
    """Until a repair batch's connection is blocked on a lock (pg_stat_activity says so)."""
    wait_until(lambda: db.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
                                  "application_name = 'chatsync repair' AND wait_event_type = 'Lock'").fetchone(),
               60, "the repair to wait on the row lock")


def test_write_committed_while_repair_waits_on_the_row_lock(db, clean_db):
    """A real concurrent transaction: it holds the row while the repair starts, then commits."""
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    app = psycopg.connect(clean_db.database_url)
    app.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 1 AND user_id = 11")
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=repair(clean_db, found.run_id)))
    worker.start()
    waits_on_the_row_lock(db)
    assert worker.is_alive()
    app.commit()
    app.close()
    worker.join(30)
    assert db.execute("SELECT role FROM chat.chat_participants WHERE room_id = 1 AND user_id = 11"
                      ).fetchone()[0] == "GUEST"
    assert result["r"].by_action["update"] == 2  # room 2 and (1,14); (1,11) skipped


@pytest.mark.parametrize("write", ["role = 'ADMIN'",  # the very value detection saw
                                   "updated_at = '2030-01-01'"])  # a column the rules do not compare
def test_any_write_while_the_repair_waits_leaves_the_row_to_the_next_run(db, clean_db, write):
    """Also a write that rewrites the detected value, or touches only another column: the repair
    sees a row version other than the one it read, and skips it (the next run re-checks it)."""
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    app = psycopg.connect(clean_db.database_url)
    app.execute(f"UPDATE chat.chat_participants SET {write} WHERE room_id = 1 AND user_id = 11")
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=repair(clean_db, found.run_id)))
    worker.start()
    waits_on_the_row_lock(db)
    app.commit()
    app.close()
    worker.join(30)
    row = db.execute(
        "SELECT role, updated_at FROM chat.chat_participants WHERE room_id = 1 AND user_id = 11"
    ).fetchone()
    assert row[0] == "ADMIN" and result["r"].by_action["update"] == 2
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit WHERE run_id = %s AND room_id = 1 AND user_id = 11",
                      (found.run_id,)).fetchone()[0] == 0
    if "updated_at" in write:
        assert row[1].year == 2030


def test_rollback_restores_and_skips_rows_changed_since(db, clean_db):
    db.execute(SMALL_CASE)
    before = db.execute("SELECT * FROM chat.chat_participants ORDER BY 1, 2").fetchall()
    found = detect(clean_db)
    repair(clean_db, found.run_id)
    # a later change to one repaired row: rollback must leave it and report it
    db.execute("UPDATE chat.chat_participants SET permissions = 1023 WHERE room_id = 1 AND user_id = 12")
    result = rollback(clean_db, found.run_id)
    assert result.skipped == [{"entity": "participant", "action": "insert", "room_id": 1, "user_id": 12}]
    assert result.restored == 8
    after = db.execute("SELECT * FROM chat.chat_participants ORDER BY 1, 2").fetchall()
    assert [r for r in after if r[:2] != (1, 12)] == before
    assert db.execute("SELECT permissions FROM chat.chat_participants WHERE room_id = 1 AND user_id = 12"
                      ).fetchone()[0] == 1023
    # the audit rows undone point at the rollback run, which audited its own changes; the skipped one does not
    marks = db.execute("SELECT entity, action, room_id, user_id, rolled_back_by FROM chatsync.repair_audit "
                       "WHERE run_id = %s ORDER BY 1, 2, 3, 4", (found.run_id,)).fetchall()
    assert [m[:4] for m in marks if m[4] is None] == [("participant", "insert", 1, 12)]
    assert {m[4] for m in marks if m[4] is not None} == {result.rollback_run_id} and len(marks) == 9
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit WHERE run_id = %s",
                      (result.rollback_run_id,)).fetchone()[0] == 8
    counts = detect(clean_db).counts
    assert counts == {**SMALL_COUNTS, "missing_participant": 1, "permissions_mismatch": 2}
    with pytest.raises(Exception, match="already rolled back"):
        rollback(clean_db, found.run_id)


@pytest.fixture
def lenient(clean_db, with_settings):
    """The small case is 9 changes on 28 rows: far above 1 %, so lift the fraction limit."""
    return with_settings(repair_max_fraction=1.0)


def test_threshold_stops_repair(db, clean_db, with_settings):
    db.execute(SMALL_CASE)
    strict = with_settings(repair_max_changes=5, repair_max_fraction=1.0)
    summary = check(strict, do_repair=True, do_validate=False)
    assert summary.decision == "major" and summary.status == "major"
    assert "exceed the repair limit 5" in summary.message
    assert not summary.consistent
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit").fetchone()[0] == 0
    assert sides_equal(db)["participants"] > 0
    # fraction limit: 9 changes on 28 room-side rows is far above 1 %
    assert decide(clean_db, detect(clean_db)).path == "major"


def test_incremental_finds_recent_drift_and_full_finds_deletes(db, clean_db, lenient):
    db.execute(SMALL_CASE)
    first = check(lenient, Scope("full"), do_repair=True, do_validate=False,
                  triggered_by="test")
    assert first.remaining == 0
    db.execute("UPDATE chatsync.runs SET detect_started_at = now() - interval '1 hour'")
    # recent drift (updated_at moves) and a silent delete (no trace on either side)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST', updated_at = now() WHERE user_id = 10")
    db.execute("DELETE FROM chat.chat_participants WHERE user_id = 14")
    db.execute("UPDATE room.room_participants SET updated_at = now() - interval '2 hours'")
    db.execute("UPDATE chat.chat_participants SET updated_at = now() - interval '2 hours' WHERE user_id <> 10")
    inc = detect(clean_db, Scope("incremental"))
    assert inc.scope == "incremental"
    assert {k: v for k, v in inc.counts.items() if v} == {"role_mismatch": 1}
    full = detect(clean_db, Scope("full"))
    assert {k: v for k, v in full.counts.items() if v} == {"role_mismatch": 1, "missing_participant": 1}


def test_incremental_without_watermark_falls_back_to_full(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db, Scope("incremental"))
    assert found.scope == "full" and found.counts == SMALL_COUNTS


def test_concurrent_passes_are_refused(db, clean_db, lenient):
    db.execute(SMALL_CASE)
    from chatsync.db.locks import CHECK_LOCK
    from chatsync.errors import ChatsyncError

    holder = psycopg.connect(clean_db.database_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (CHECK_LOCK,))
    try:
        with pytest.raises(ChatsyncError, match="another consistency pass"):
            check(lenient, do_repair=True, do_validate=False)
    finally:  # released at once (a closed session's locks go a moment later, asynchronously)
        holder.execute("SELECT pg_advisory_unlock(%s)", (CHECK_LOCK,))
        holder.close()
    assert check(lenient, do_repair=True, do_validate=False).remaining == 0


def test_repair_rerun_is_idempotent(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    first = repair(clean_db, found.run_id)
    second = repair(clean_db, found.run_id)
    assert first.repaired == 9 and second.repaired == 0
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit").fetchone()[0] == 9


def test_two_repairs_of_one_run_at_once_apply_it_once(db, clean_db):
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    results = []
    threads = [threading.Thread(target=lambda: results.append(repair(clean_db, found.run_id))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.repaired for r in results) == [0, 9]
    assert db.execute("SELECT count(*) FROM chatsync.repair_audit").fetchone()[0] == 9
    assert sides_equal(db) == {"rooms": 0, "participants": 0}


def test_time_to_resolution_spans_runs(db, clean_db, lenient):
    """A finding first seen by one run and repaired by a later one counts from the first sighting."""
    db.execute(SMALL_CASE)
    first = detect(clean_db)
    db.execute("UPDATE chatsync.inconsistencies SET detected_at = detected_at - interval '1 hour' "
               "WHERE run_id = %s", (first.run_id,))
    second = detect(clean_db)
    repair(clean_db, second.run_id)
    from chatsync.ops.metrics import record_run

    ttr = record_run(clean_db, second.run_id)["time_to_resolution_seconds"]
    assert ttr["count"] == sum(SMALL_COUNTS.values())
    assert 3600 <= ttr["p50"] < 3700 and 3600 <= ttr["max"] < 3700
    per_key = db.execute("SELECT count(*) FROM chatsync.resolution_times WHERE resolved_by_run = %s",
                         (second.run_id,)).fetchone()[0]
    assert per_key == sum(SMALL_COUNTS.values())


def test_repair_recognises_rows_whatever_the_sessions_time_zone(db, clean_db, monkeypatch):
    """The digest detect stores hashes values, not their text: a repair connecting with another
    TimeZone (PGTZ) than detect's still finds every row as detection saw it."""
    db.execute(SMALL_CASE)
    monkeypatch.setenv("PGTZ", "UTC")
    found = detect(clean_db)
    monkeypatch.setenv("PGTZ", "Pacific/Chatham")  # +12:45 or +13:45: every timestamptz reads differently
    fixed = repair(clean_db, found.run_id)
    assert fixed.by_action == {"insert": 3, "update": 3, "delete": 3} and fixed.skipped == 0
    assert sides_equal(db) == {"rooms": 0, "participants": 0}


def _repair_wal_bytes(db, settings, seed: int) -> tuple[int, int]:
    """WAL written by the repair of freshly simulated drift, from a checkpoint (full-page images)."""
    from chatsync_devtools.simulate import simulate

    simulate(settings, rooms=400, members=100, drift=0.03, seed=seed)
    found = detect(settings)
    db.execute("CHECKPOINT")
    before = db.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    fixed = repair(settings, found.run_id)
    written = db.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (before,)).fetchone()[0]
    return int(written), fixed.repaired


def test_repair_compresses_its_wal_when_the_role_may(db, clean_db):
    from dataclasses import replace

    from chatsync.consistency.repair import wal_compression

    assert wal_compression(db, clean_db) == "lz4"  # the default, and the tests' role is a superuser
    assert wal_compression(db, replace(clean_db, repair_wal_compression="default")) is None
    role = f"chatsync_nopriv_{os.getpid()}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(clean_db.database_url, user=role) as plain:
            assert wal_compression(plain, clean_db) is None  # may not SET it: the server's stays
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    plain_wal, plain_rows = _repair_wal_bytes(db, replace(clean_db, repair_wal_compression="default"), seed=5)
    lz4_wal, lz4_rows = _repair_wal_bytes(db, clean_db, seed=5)
    assert lz4_rows == plain_rows > 300
    assert lz4_wal < 0.85 * plain_wal, (lz4_wal, plain_wal)


def test_repair_batches_are_even_and_a_multiple_of_the_workers(db, clean_db, with_settings):
    """No worker runs a last batch alone: the ranges come in a multiple of the workers, of even
    size (to within a room: a room is never split), none holding more than repair_batch_rows."""
    from chatsync.consistency.repair import _batches
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=120, members=20, drift=0.05, seed=8)
    found = detect(clean_db)
    per_room = dict(db.execute("SELECT room_id, count(*) FROM chatsync.inconsistencies WHERE run_id = %s "
                               "GROUP BY room_id", (found.run_id,)).fetchall())
    total, biggest = sum(per_room.values()), max(per_room.values())
    for workers, most in ((2, total // 3), (3, total // 2), (2, total), (4, total)):
        settings = with_settings(workers=workers, repair_batch_rows=most, repair_parallel_min_rows=1)
        ranges = _batches(db, settings, found.run_id)
        sizes = [sum(n for room, n in per_room.items() if lo <= room and (hi is None or room < hi))
                 for lo, hi in ranges]  # the last range is open above
        count = workers * -(-total // (workers * most))
        assert len(ranges) == count and sum(sizes) == total, (workers, most, sizes)
        assert max(sizes) <= most and max(sizes) - min(sizes) <= biggest, (workers, most, sizes)


def test_a_run_is_settled_once_none_of_its_findings_is_unresolved(db, clean_db):
    """Whatever looks for unresolved findings reads only unsettled runs (not the whole history):
    a run settles when its repair resolves everything, when a later run closes the last of its
    findings, or at once when it found nothing; until then its findings are still seen."""
    def settled(run_id: int) -> bool:
        return db.execute("SELECT settled_at IS NOT NULL FROM chatsync.runs WHERE run_id = %s",
                          (run_id,)).fetchone()[0]

    db.execute(SMALL_CASE)
    first = detect(clean_db)
    assert not settled(first.run_id)
    db.execute("UPDATE chat.chat_participants SET permissions = 5 WHERE room_id = 1 AND user_id = 14")
    repair(clean_db, first.run_id)  # (1,14) no longer differs: its finding is skipped, so unresolved
    assert not settled(first.run_id)
    from datetime import datetime, timedelta

    from chatsync.ops.health import figures

    def open_now() -> dict:
        now = datetime.now(timezone.utc)
        found = figures(clean_db, now - timedelta(minutes=5), now, with_backlog=False)["open_inconsistencies"]
        return {kind: n for kind, n in found.items() if n}

    assert open_now() == {"permissions_mismatch": 1}  # health still sees it
    second = detect(clean_db)  # finds nothing, closes (1,14)'s finding as vanished
    assert second.total == 0 and settled(second.run_id) and settled(first.run_id)
    assert db.execute("SELECT status FROM chatsync.inconsistencies WHERE run_id = %s AND room_id = 1 "
                      "AND user_id = 14", (first.run_id,)).fetchone()[0] == "resolved"
    assert open_now() == {}
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 1 AND user_id = 10")
    third = detect(clean_db)
    assert not settled(third.run_id)
    repair(clean_db, third.run_id)
    assert settled(third.run_id)


def test_upgrading_to_settled_runs_settles_exactly_the_runs_with_nothing_open(db, clean_db):
    """Migration 015 on a database with history: runs whose findings are all resolved (or that
    found none) settle; a run with an open finding, or still detecting, does not."""

    def run(status: str) -> int:
        return db.execute("INSERT INTO chatsync.runs (scope, status) VALUES ('full', %s) RETURNING run_id",
                          (status,)).fetchone()[0]

    def finding(run_id: int, resolved: bool) -> None:
        db.execute("INSERT INTO chatsync.inconsistencies (run_id, kind, room_id, user_id, status, resolved_at) "
                   "VALUES (%s, 'role_mismatch', 1, %s, %s, %s)",
                   (run_id, run_id, "repaired" if resolved else "skipped", "now" if resolved else None))

    repaired, skipped_one, empty, detecting = run("validated"), run("repaired"), run("consistent"), run("running")
    finding(repaired, True)
    finding(skipped_one, True)
    finding(skipped_one, False)
    db.execute("UPDATE chatsync.runs SET settled_at = NULL")
    migration = (MIGRATIONS / "015_runs_settled.sql").read_text()
    db.execute(sql.SQL(migration).format(ops=sql.Identifier("chatsync")))  # what `chatsync init` runs
    settled = dict(db.execute("SELECT run_id, settled_at IS NOT NULL FROM chatsync.runs").fetchall())
    assert settled == {repaired: True, skipped_one: False, empty: True, detecting: False}
