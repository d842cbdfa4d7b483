"""The scale paths give the same answer as the plain diff: per-room fingerprints with their
adaptive switch, and the simulator's concentrated drift."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from chatsync.consistency.detect import detect
from chatsync.consistency.scope import Scope
from chatsync.errors import ConfigError
from chatsync_devtools.simulate import simulate

EVERY_ROOM = Scope("range", room_range=(-2**63, 2**63 - 1))  # the plain row diff, whatever is maintained


def findings(db, run_id: int) -> set[tuple]:
    return set(db.execute("SELECT kind, room_id, user_id FROM chatsync.inconsistencies WHERE run_id = %s",
                          (run_id,)).fetchall())


@pytest.mark.parametrize("drift_rooms, switch, narrowed", [(0.05, 0.25, True), (1.0, 0.25, False), (0.05, 0.01, False)])
def test_fingerprints_find_exactly_what_the_plain_diff_finds(db, clean_db, caplog, drift_rooms, switch, narrowed):
    report = simulate(clean_db, rooms=200, members=20, drift=0.02, seed=41, drift_rooms=drift_rooms)
    plain = detect(replace(clean_db, fingerprint_min_rows=10**12), Scope("full"))
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    fast = detect(replace(clean_db, fingerprint_min_rows=1, fingerprint_max_room_fraction=switch), Scope("full"))
    assert findings(db, fast.run_id) == findings(db, plain.run_id) and fast.counts == plain.counts
    assert {k: v for k, v in fast.counts.items() if v} == {k: v for k, v in report.injected.items() if v}
    line = next(r.getMessage() for r in caplog.records if "participant fingerprints" in r.getMessage())
    assert ("row diff of those rooms" in line) is narrowed, line
    rooms = db.execute("SELECT count(DISTINCT room_id) FROM chatsync.inconsistencies WHERE run_id = %s "
                       "AND user_id IS NOT NULL", (fast.run_id,)).fetchone()[0]
    # concentrated: ~10 drifted rooms and the few of the room-level kinds; spread: 80 rows in ~65 rooms
    assert (rooms <= 40) if drift_rooms < 1 else (rooms > 50)


def test_fingerprints_close_what_vanished_everywhere(db, clean_db):
    simulate(clean_db, rooms=50, members=10, drift=0.04, seed=42, drift_rooms=0.1)
    settings = replace(clean_db, fingerprint_min_rows=1, repair_max_fraction=1.0)
    first = detect(settings, Scope("full"))
    # the application fixes every participant itself: the next full pass finds no differing room
    db.execute("UPDATE chat.chat_participants c SET role = r.role, permissions = r.permissions, "
               "banned = r.banned_at IS NOT NULL FROM room.room_participants r "
               "WHERE r.room_id = c.room_id AND r.user_id = c.user_id")
    second = detect(settings, Scope("full"))
    assert second.counts.get("role_mismatch", 0) == 0
    assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s AND kind = 'role_mismatch' "
                      "AND status = 'resolved'", (first.run_id,)).fetchone()[0] == first.counts["role_mismatch"]


def test_concentrated_drift_is_checked(clean_db):
    with pytest.raises(ConfigError, match="drift_rooms"):
        simulate(clean_db, rooms=5, members=3, drift=0.1, seed=1, drift_rooms=0)


# the rooms that differ on one connection, or split over two (from detect_parallel_min_keys keys)
KEYED_CONNECTIONS = pytest.mark.parametrize("connections", [1, 2])


def keyed(settings, connections: int):
    return replace(settings, fingerprint_max_changed_fraction=1.0, workers=2,
                   detect_parallel_min_keys=1 if connections == 2 else 10**9)


@KEYED_CONNECTIONS
def test_maintained_fingerprints_find_what_the_plain_diff_finds_reading_only_the_changes(db, clean_db, caplog,
                                                                                         connections):
    """Triggers keep the fingerprints current through every kind of write on both sides; the full
    pass diffs only the logged keys of the differing rooms and proves the rest of those rooms."""
    report = simulate(clean_db, rooms=120, members=20, drift=0.03, seed=43, maintain_fingerprints=True)
    assert db.execute("SELECT count(*) FROM chatsync.room_fingerprint_deltas").fetchone()[0] > 0
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    settings = keyed(clean_db, connections)  # 3 % drift: above the default switch
    fast = detect(settings, Scope("full"))
    line = next(r.getMessage() for r in caplog.records if "from maintained fingerprints" in r.getMessage())
    assert " 0 rooms row-diffed" in line, line  # the drift went through the triggers: the log explains it all
    assert f"on {connections} connections" in line, line
    assert {k: v for k, v in fast.counts.items() if v} == {k: v for k, v in report.injected.items() if v}
    assert db.execute("SELECT count(*) FROM chatsync.room_fingerprint_deltas").fetchone()[0] == 0  # folded
    # application writes of every shape, on both sides, after the fold
    db.execute("UPDATE chat.chat_participants SET permissions = permissions # 1 WHERE user_id % 7 = 0")
    db.execute("UPDATE chat.chat_participants SET updated_at = now() WHERE user_id % 5 = 0")  # nothing compared
    db.execute("DELETE FROM chat.chat_participants WHERE user_id % 11 = 1")
    db.execute("INSERT INTO chat.chat_participants (room_id, user_id, role, permissions, banned) "
               "SELECT room_id, user_id + 10000000, role, permissions, banned FROM chat.chat_participants "
               "WHERE user_id % 13 = 2")
    db.execute("UPDATE room.room_participants SET banned_at = CASE WHEN banned_at IS NULL THEN now() END "
               "WHERE user_id % 17 = 3")
    db.execute("UPDATE chat.chat_participants SET room_id = room_id + 1 WHERE user_id % 19 = 4 AND room_id < 100 "
               "AND NOT EXISTS (SELECT 1 FROM chat.chat_participants o WHERE o.room_id = chat_participants.room_id + 1 "
               "AND o.user_id = chat_participants.user_id)")
    caplog.clear()
    again = detect(settings, Scope("full"))
    plain = detect(clean_db, EVERY_ROOM)
    assert findings(db, again.run_id) == findings(db, plain.run_id)
    assert again.counts["permissions_mismatch"] > fast.counts["permissions_mismatch"]
    line = next(r.getMessage() for r in caplog.records if "from maintained fingerprints" in r.getMessage())
    assert " 0 rooms row-diffed" in line, line


@KEYED_CONNECTIONS
def test_drift_older_than_the_log_and_writes_that_skip_the_triggers_are_not_missed(db, clean_db, caplog, connections):
    from chatsync.consistency import fingerprints
    from chatsync.model.sqlgen import entity_sql

    es = next(e for e in entity_sql(clean_db) if e.entity.has_user)
    settings = keyed(clean_db, connections)
    # installed after the drift: the log names none of it, the proof fails, those rooms get a row diff
    report = simulate(clean_db, rooms=60, members=10, drift=0.02, seed=44)
    fingerprints.install(clean_db)
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    first = detect(settings, Scope("full"))
    assert {k: v for k, v in first.counts.items() if v} == {k: v for k, v in report.injected.items() if v}
    assert any("rooms differ beyond their logged changes" in r.getMessage() for r in caplog.records)
    assert findings(db, first.run_id) == findings(db, detect(clean_db, EVERY_ROOM).run_id)
    # a trigger disabled is noticed and remembered: writes made meanwhile are not in the log, so
    # detect diffs the tables until the fingerprints are rebuilt, even after the trigger is back
    db.execute("ALTER TABLE chat.chat_participants DISABLE TRIGGER chatsync_fingerprint_update")
    assert fingerprints.state(db, clean_db, es)[0] == "stale"
    db.execute("UPDATE chat.chat_participants SET permissions = permissions # 2 WHERE user_id % 9 = 0")
    db.execute("ALTER TABLE chat.chat_participants ENABLE TRIGGER chatsync_fingerprint_update")
    caplog.clear()
    run = detect(settings, Scope("full"))
    assert any("fingerprints are stale" in r.getMessage() and "triggers enabled" in r.getMessage()
               for r in caplog.records)
    assert findings(db, run.run_id) == findings(db, detect(clean_db, EVERY_ROOM).run_id)
    fingerprints.install(clean_db)  # the rebuild: current again, from the tables as they are
    assert fingerprints.state(db, clean_db, es)[0] == "current"
    # TRUNCATE skips row triggers: the fingerprints are marked stale and detect diffs the tables
    db.execute("TRUNCATE chat.chat_participants")
    assert fingerprints.state(db, clean_db, es)[0] == "stale"
    caplog.clear()
    after = detect(settings, Scope("full"))
    assert any("fingerprints are stale" in r.getMessage() and "TRUNCATE of chat.chat_participants" in r.getMessage()
               for r in caplog.records)
    assert after.counts["missing_participant"] == db.execute(
        "SELECT count(*) FROM room.room_participants").fetchone()[0]


def test_above_the_changed_keys_switch_the_tables_are_diffed_and_the_log_still_folded(db, clean_db, caplog):
    report = simulate(clean_db, rooms=80, members=20, drift=0.03, seed=45, maintain_fingerprints=True)
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    run = detect(replace(clean_db, fingerprint_max_changed_fraction=0.005), Scope("full"))
    assert any("above the switch" in r.getMessage() and "keys changed" in r.getMessage() for r in caplog.records)
    assert {k: v for k, v in run.counts.items() if v} == {k: v for k, v in report.injected.items() if v}
    assert db.execute("SELECT count(*) FROM chatsync.room_fingerprint_deltas").fetchone()[0] == 0
    # the folded fingerprints still tell the truth: the next pass diffs nothing new and proves the rest
    caplog.clear()
    again = detect(replace(clean_db, fingerprint_max_changed_fraction=1.0), Scope("full"))
    assert findings(db, again.run_id) == findings(db, run.run_id)
    line = next(r.getMessage() for r in caplog.records if "from maintained fingerprints" in r.getMessage())
    assert " 0 rooms row-diffed" in line, line


def test_sharded_detect_finds_what_one_pass_finds_and_a_shard_retry_replaces_its_findings(db, clean_db):
    """The hourly DAG's mapped detect: plan → one part per room-id shard → finish."""
    from chatsync.consistency import steps

    report = simulate(clean_db, rooms=120, members=25, drift=0.02, seed=43)
    whole = detect(clean_db, Scope("full"))
    sharded = replace(clean_db, detect_shard_rows=1_000)
    parts = steps.plan_step(sharded, Scope("full"), "test")
    rows = db.execute("SELECT (SELECT count(*) FROM room.rooms) + (SELECT count(*) FROM room.room_participants)"
                      ).fetchone()[0]
    assert len(parts) == -(-rows // 1_000) >= 3 and [p["part"] for p in parts] == list(range(1, len(parts) + 1))
    ranges = [tuple(p["room_range"]) for p in parts]
    assert ranges[0][0] is None and ranges[-1][1] is None  # open at both ends: every room id
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no gap, no overlap
    done = [steps.shard_step(sharded, p) for p in parts]
    again = steps.shard_step(sharded, parts[1])  # a retried part replaces its own findings only
    assert again["part"] == 2
    found = steps.finish_step(sharded, parts, done)
    run_id = found["run_id"]
    assert findings(db, run_id) == findings(db, whole.run_id)
    assert {k: v for k, v in found["counts"].items() if v} == {k: v for k, v in report.injected.items() if v}
    assert found["decision"] in ("repair", "major") and found["scope"] == "full"
    status, detect_started_at = db.execute("SELECT status, detect_started_at FROM chatsync.runs WHERE run_id = %s",
                                           (run_id,)).fetchone()
    assert status == "detected" and detect_started_at is not None
    with pytest.raises(Exception, match=f"{len(parts) - 1} of {len(parts)} detect parts finished"):
        steps.finish_step(sharded, parts, done[:-1])


def test_a_failed_shard_leaves_no_partial_findings(db, clean_db):
    from chatsync.consistency import steps

    simulate(clean_db, rooms=60, members=25, drift=0.03, seed=44)
    sharded = replace(clean_db, detect_shard_rows=600)
    parts = steps.plan_step(sharded, Scope("full"), "test")
    for p in parts[:2]:
        steps.shard_step(sharded, p)
    run_id = parts[0]["run_id"]
    assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s", (run_id,)).fetchone()[0] > 0
    steps.discard_step(sharded, parts)  # what discard_partial_detect does when a part failed for good
    status, error = db.execute("SELECT status, error FROM chatsync.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert status == "failed" and "a part failed" in error
    assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s", (run_id,)).fetchone()[0] == 0


def test_only_a_big_full_scope_is_sharded(db, clean_db):
    from chatsync.consistency import fingerprints, steps
    from chatsync.db.connection import connection

    simulate(clean_db, rooms=40, members=25, drift=0.02, seed=45)
    small = replace(clean_db, detect_shard_rows=10**9)
    assert [p["room_range"] for p in steps.plan_step(small, Scope("full"), "test")] == [None]
    sharded = replace(clean_db, detect_shard_rows=100, detect_max_shards=3)
    assert len(steps.plan_step(sharded, Scope("full"), "test")) == 3  # capped
    assert [p["room_range"] for p in steps.plan_step(sharded, Scope("rooms", rooms=(1, 2)), "test")] == [None]
    with connection(clean_db) as conn:
        fingerprints.install_on(conn, clean_db)  # current fingerprints: the cost follows the changes
    assert [p["room_range"] for p in steps.plan_step(sharded, Scope("full"), "test")] == [None]


def test_the_plan_crosses_xcom_intact_for_every_scope(db, clean_db):
    """The mapped tasks rebuild the plan from its XCom dict: scope, keys, watermark unchanged."""
    import json

    from chatsync.consistency import steps
    from chatsync.consistency.detect import DetectPlan, begin

    simulate(clean_db, rooms=10, members=5, drift=0.1, seed=46)
    first = detect(clean_db, Scope("full"))
    db.execute("UPDATE chatsync.runs SET status = 'validated' WHERE run_id = %s", (first.run_id,))
    for scope in (Scope("incremental"), Scope("rooms", rooms=(1, 2)),
                  Scope("keys", rooms=(3,), participants=((1, 11),)), Scope("range", room_range=(2, 5))):
        plan = begin(clean_db, scope, triggered_by="test")
        assert DetectPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
        [part] = steps.plan_step(clean_db, scope, "test")
        assert part["room_range"] is None and DetectPlan.from_dict(part).scope == scope
    incremental = DetectPlan.from_dict(steps.plan_step(clean_db, Scope("incremental"), "test")[0])
    assert incremental.since is not None and incremental.scope.kind == "incremental"


def test_folding_between_runs_leaves_the_detect_only_the_diff(db, clean_db, caplog):
    """chat_sync_health folds the log every 5 minutes; the changed keys wait for the next full
    detect, which diffs them and clears them, finding what the plain diff finds."""
    from chatsync.consistency import fingerprints

    report = simulate(clean_db, rooms=80, members=20, drift=0.03, seed=47, maintain_fingerprints=True)
    settings = replace(clean_db, fingerprint_max_changed_fraction=1.0)
    pending = fingerprints.fold_pending(settings)
    assert pending["participant"] > 0
    assert db.execute("SELECT count(*) FROM chatsync.room_fingerprint_deltas").fetchone()[0] == 0
    waiting = db.execute("SELECT count(*) FROM chatsync.fingerprint_changed_keys").fetchone()[0]
    assert waiting == pending["participant"]
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE user_id % 23 = 5 AND role <> 'GUEST'")
    assert fingerprints.fold_pending(settings)["participant"] > waiting  # the new keys join the waiting ones
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    fast = detect(settings, Scope("full"))
    line = next(r.getMessage() for r in caplog.records if "from maintained fingerprints" in r.getMessage())
    assert " 0 rooms row-diffed" in line, line  # the waiting keys explain every differing room
    plain = detect(clean_db, EVERY_ROOM)
    assert findings(db, fast.run_id) == findings(db, plain.run_id)
    assert fast.counts["role_mismatch"] > report.injected["role_mismatch"]
    assert db.execute("SELECT count(*) FROM chatsync.fingerprint_changed_keys").fetchone()[0] == 0
    fingerprints.uninstall(settings)
    assert fingerprints.fold_pending(settings) == {}  # nothing maintained, nothing folded


def test_each_bench_detect_repetition_meets_the_changed_keys_the_first_met(db, clean_db, caplog):
    """The bench times a detect from maintained fingerprints several times: each repetition must
    diff the same waiting keys (put back after the one before removed them), not row-diff rooms."""
    import re

    from chatsync.consistency import fingerprints
    from chatsync_devtools.bench import consistency

    report = simulate(clean_db, rooms=60, members=20, drift=0.03, seed=48, maintain_fingerprints=True)
    settings = replace(clean_db, fingerprint_max_changed_fraction=1.0)
    waiting = fingerprints.fold_pending(settings)["participant"]
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    out = consistency._step_detect(settings, repeat=3)
    lines = [r.getMessage() for r in caplog.records if "from maintained fingerprints" in r.getMessage()]
    assert len(lines) == 3
    assert [int(re.search(r"(\d+) keys diffed", line).group(1)) for line in lines] == [waiting] * 3, lines
    assert all(" 0 rooms row-diffed" in line for line in lines), lines
    assert out["counts"] == report.injected
    # only the last repetition's run and findings stay, for the repair step
    assert db.execute(
        "SELECT array_agg(DISTINCT run_id) FROM chatsync.inconsistencies"
    ).fetchone()[0] == [out["run_id"]]
    assert db.execute("SELECT count(*) FROM chatsync.runs").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM chatsync.fingerprint_changed_keys").fetchone()[0] == 0
