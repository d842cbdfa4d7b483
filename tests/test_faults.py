"""Fault injection: the repair killed (SIGKILL) before, during and after a batch's commit then
rerun; its database connection cut mid-batch; an application writing 500 changes/s while the
hourly DAG repairs. Each asserts that nothing is lost and nothing is half-written; none depends on
the machine's speed (the applications' write rate is whatever the machine allows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime

import psycopg
import pytest
from conftest import sides_equal, wait_until

from chatsync.consistency.detect import detect
from chatsync.consistency.repair import repair
from chatsync.consistency.scope import Scope
from chatsync_devtools.simulate import ALL_PERMISSIONS, simulate

APP_SCRIPT = """
import json, os, random, signal, sys, time
import psycopg
url, keys, seed, per_second = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4])
stopping = []  # SIGTERM ends the loop between writes: a committed write is always logged
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
rng = random.Random(seed)
PERMISSIONS_MAX = PERMISSIONS_MAX_VALUE
with psycopg.connect(url, autocommit=True, application_name="chat app") as app:
    # the application runs on its own hosts in production; here it shares two cores with Airflow,
    # so it and its server process get the CPU first (root only; the test holds at any rate)
    for pid in (0, app.info.backend_pid):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, -10)
        except PermissionError:
            pass
    started, n = time.monotonic(), 0
    while not stopping:
        key = rng.choice(keys["drifted"]) if rng.random() < 0.5 else rng.choice(keys["everyone"])
        room_value = keys["room"].get(f"{key[0]}/{key[1]}")
        value = rng.randrange(PERMISSIONS_MAX + 1)
        value = (value + 1) % (PERMISSIONS_MAX + 1) if value == room_value else value
        row = app.execute("UPDATE chat.chat_participants SET permissions = %s, updated_at = clock_timestamp() "
                          "WHERE room_id = %s AND user_id = %s RETURNING clock_timestamp()", (value, *key)).fetchone()
        if row:  # else the row was gone (an orphan the repair deleted); autocommit: committed by now
            print(json.dumps([key, value, row[0].isoformat(), time.time()]), flush=True)
        n += 1
        time.sleep(max(0.0, started + n / per_second - time.monotonic()))
""".replace("PERMISSIONS_MAX_VALUE", str(ALL_PERMISSIONS))
REPAIR_SCRIPT = ("import sys; from chatsync.config import Settings; from chatsync.consistency.repair import repair; "
                 "print(repair(Settings.from_env(), int(sys.argv[1])).to_dict())")


def chat_image(db) -> list[tuple]:
    return db.execute("SELECT 'p', room_id, user_id, role, permissions, banned FROM chat.chat_participants "
                      "UNION ALL SELECT 'r', room_id, NULL, status, NULL, archived FROM chat.chat_rooms "
                      "ORDER BY 1, 2, 3").fetchall()


def audit_rows(db, run_id: int) -> list[tuple]:
    return db.execute("SELECT entity, action, room_id, user_id FROM chatsync.repair_audit WHERE run_id = %s "
                      "ORDER BY 1, 3, 4", (run_id,)).fetchall()


def assert_rerun_completes(db, clean_db, found) -> None:
    """Resume the run as Airflow's retry would: everything repaired, every change audited once."""
    result = repair(clean_db, found.run_id)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    audited = audit_rows(db, found.run_id)
    assert len(audited) == len(set(audited)) == found.rows_to_change  # no row changed twice, none missed
    assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s AND status <> 'repaired'",
                      (found.run_id,)).fetchone()[0] == 0
    assert db.execute("SELECT status, repaired FROM chatsync.runs WHERE run_id = %s", (found.run_id,)
                      ).fetchone() == ("repaired", found.rows_to_change)
    assert result.repaired == found.rows_to_change - (len(audited) - result.repaired)


@pytest.mark.parametrize("point", ["repair:before_batches", "repair:in_batch", "repair:after_commit"])
def test_repair_killed_with_sigkill_then_rerun(point, db, clean_db, tmp_path):
    simulate(clean_db, rooms=60, members=20, drift=0.03, seed=31)
    found = detect(clean_db, Scope("full"))
    assert found.rows_to_change > 20
    before = chat_image(db)
    marker = tmp_path / "paused"
    env = {**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url, "CHATSYNC_OPS_SCHEMA": clean_db.ops_schema,
           "CHATSYNC_FAULT_PAUSE_AT": point, "CHATSYNC_FAULT_PAUSE_SECONDS": "60",
           "CHATSYNC_FAULT_MARKER": str(marker),
           # one batch at a time, several batches: the kill lands between committed and pending ones
           "CHATSYNC_WORKERS": "1", "CHATSYNC_REPAIR_BATCH_ROWS": "10"}
    proc = subprocess.Popen([sys.executable, "-c", REPAIR_SCRIPT, str(found.run_id)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the repair never reached the fault point"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
                                      "application_name = 'chatsync repair'").fetchone(),
               60, "the server to end the killed repair's session (its transaction rolled back)")
    audited = audit_rows(db, found.run_id)
    if point == "repair:after_commit":
        # exactly the first batch is in: its chat rows changed, each with one audit row, its findings closed
        assert 0 < len(audited) < found.rows_to_change
        changed = {(r[2], r[3]) for r in audited}
        closed = db.execute("SELECT DISTINCT room_id, user_id FROM chatsync.inconsistencies WHERE run_id = %s "
                            "AND status = 'repaired'", (found.run_id,)).fetchall()
        assert set(closed) == changed
    else:
        # nothing of the killed transaction survived: chat side, audit and findings as before
        assert audited == []
        assert chat_image(db) == before
        assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s AND status <> 'open'",
                          (found.run_id,)).fetchone()[0] == 0
    assert db.execute(
        "SELECT status FROM chatsync.runs WHERE run_id = %s", (found.run_id,)
    ).fetchone()[0] == "repairing"
    assert_rerun_completes(db, clean_db, found)  # the dead session's repair lock is gone too


def test_repair_connection_terminated_mid_batch_is_retried(db, clean_db, tmp_path, monkeypatch, caplog):
    simulate(clean_db, rooms=60, members=20, drift=0.03, seed=32)
    found = detect(clean_db, Scope("full"))
    marker = tmp_path / "paused"
    monkeypatch.setenv("CHATSYNC_FAULT_PAUSE_AT", "repair:in_batch")
    monkeypatch.setenv("CHATSYNC_FAULT_PAUSE_SECONDS", "2")
    monkeypatch.setenv("CHATSYNC_FAULT_MARKER", str(marker))
    import chatsync_faults
    chatsync_faults.rearm("repair:in_batch")
    settings = replace(clean_db, workers=1, repair_batch_rows=10, retry_base_seconds=0.05)
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=repair(settings, found.run_id)))
    worker.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'chatsync repair'").fetchall()
    assert killed == [(True,)]  # the batch's connection, inside its transaction
    worker.join(120)
    assert "result" in outcome, "the repair did not survive the cut connection"
    assert any("transient error" in r.getMessage() and "repair run" in r.getMessage() for r in caplog.records)
    assert_rerun_completes(db, clean_db, found)


def test_application_writing_500_per_second_during_the_hourly_repair_loses_nothing(
        db, clean_db, dagbag, monkeypatch, tmp_path):
    """The chat application keeps writing while chat_consistency_hourly detects and repairs. A write
    committed after detection must survive (the repair skips that row and the next run re-checks
    it); a key whose last write came before detection ends equal to the room side."""
    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_FRACTION", "1.0")
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_CHANGES", "100000")  # the application's writes are drift too
    simulate(clean_db, rooms=100, members=50, drift=0.01, seed=33)
    drifted = db.execute("""SELECT ARRAY[c.room_id, c.user_id] FROM chat.chat_participants c
        JOIN room.room_participants r USING (room_id, user_id)
        WHERE (c.role, c.permissions, c.banned) IS DISTINCT FROM (r.role, r.permissions, r.banned_at IS NOT NULL)
        """).fetchall()
    drifted = [k for (k,) in drifted]
    everyone = [[r, u] for r, u in db.execute(  # rows on both sides: the application edits, never creates
        "SELECT room_id, user_id FROM chat.chat_participants JOIN room.room_participants USING (room_id, user_id)")]
    assert len(drifted) > 20
    # the application: two processes of 250 writes/s each, every write a permissions value the room
    # side never holds, logged with the server time of the write
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"drifted": drifted, "everyone": everyone,
                                "room": {f"{r}/{u}": p for r, u, p in db.execute(
                                    "SELECT room_id, user_id, permissions FROM room.room_participants")}}))
    logs = [tmp_path / f"app{seed}.jsonl" for seed in (1, 2)]
    apps = [subprocess.Popen([sys.executable, "-c", APP_SCRIPT, clean_db.database_url, str(keys), str(seed), "250"],
                             stdout=log.open("w"), stderr=log.with_suffix(".err").open("w"))
            for seed, log in zip((1, 2), logs)]
    stop = threading.Event()

    def writes_logged() -> list[int]:
        return [len(log.read_text().splitlines()) for log in logs]

    def stop_writing_after_the_repair() -> None:
        # the writes matter around detect and repair; GX's validation afterwards only competes for the CPU
        with psycopg.connect(clean_db.database_url, autocommit=True) as watch:
            while not stop.wait(0.05):
                if watch.execute("SELECT 1 FROM chatsync.runs WHERE step_durations ? 'repair'").fetchone():
                    break
        seen = writes_logged()  # and a few more writes of each application after the repair
        wait_until(lambda: all(n >= s + 20 for n, s in zip(writes_logged(), seen)) or stop.is_set(), 120,
                   "writes after the repair")
        for a in apps:
            a.send_signal(signal.SIGTERM)

    wait_until(lambda: min(writes_logged()) >= 50, 120, "both applications to be writing")
    watcher = threading.Thread(target=stop_writing_after_the_repair)
    watcher.start()
    try:
        dag_run = dagbag.get_dag("chat_consistency_hourly").test(run_conf={"scope": "full"})
    finally:
        stop.set()
        watcher.join()
    writes, committed = [], {}
    for a, log in zip(apps, logs):
        a.wait(30)
        out = log.read_text()
        assert out.startswith("["), f"the application failed: {log.with_suffix('.err').read_text()[-2000:]}"
        for key, value, at, acked in map(json.loads, filter(None, out.splitlines())):
            writes.append((tuple(key), value, datetime.fromisoformat(at)))
            committed[tuple(key)] = max(committed.get(tuple(key), 0.0), acked)
    writes.sort(key=lambda w: w[2])
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["repair"] == "success", states
    run_id, detect_started, detect_seconds = db.execute(
        "SELECT run_id, detect_started_at, (step_durations->>'detect')::float FROM chatsync.runs "
        "WHERE triggered_by LIKE 'airflow:chat_consistency_hourly%%' ORDER BY run_id DESC LIMIT 1").fetchone()
    first, last = writes[0][2], writes[-1][2]
    detect_end = detect_started.timestamp() + detect_seconds + 0.05
    last_write: dict[tuple[int, int], tuple[int, object]] = {}
    for key, value, at in writes:
        last_write[key] = (value, at)
    final = dict(((r, u), p) for r, u, p in db.execute(
        "SELECT room_id, user_id, permissions FROM chat.chat_participants"))
    room = dict(((r, u), p) for r, u, p in db.execute(
        "SELECT room_id, user_id, permissions FROM room.room_participants"))
    after = {k: v for k, (v, at) in last_write.items() if at.timestamp() > detect_end}
    lost = {k: (v, final[k]) for k, v in after.items() if final[k] != v}
    assert after, (f"no write landed after detection: {len(writes)} writes {first} .. {last}, "
                   f"detect {detect_started} +{detect_seconds}")
    if lost:
        k = next(iter(lost))
        story = {"writes": [(v, at.isoformat()) for key, v, at in writes if key == k], "room": room[k],
                 "detect": (detect_started.isoformat(), detect_seconds),
                 "audit": db.execute("SELECT run_id, action, before->>'permissions', after->>'permissions', changed_at "
                                     "FROM chatsync.repair_audit WHERE room_id = %s AND user_id = %s", k).fetchall(),
                 "findings": db.execute("SELECT run_id, kind, status, chat_digest, detected_at "
                                        "FROM chatsync.inconsistencies "
                                        "WHERE room_id = %s AND user_id = %s", k).fetchall()}
        pytest.fail(f"{len(lost)} application writes were overwritten: {list(lost.items())[:5]}; {story}")
    # the repair met writes it had to leave alone, and did its job on the rest
    repaired_at = dict(((r, u), at) for r, u, at in db.execute(
        "SELECT room_id, user_id, changed_at FROM chatsync.repair_audit WHERE run_id = %s AND entity = 'participant'",
        (run_id,)))
    repaired_keys = set(repaired_at)
    skipped = db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s AND status = 'skipped'",
                         (run_id,)).fetchone()[0]
    assert skipped > 0 and len(repaired_keys) > 0
    # a key both repaired and written after detection: the repair came first, the write stayed
    assert all(repaired_at[k] < last_write[k][1] for k in repaired_keys & set(after))
    # a key whose last write was seen by detection (never a room value) was repaired to the room side
    before = {k for k in last_write if committed[k] < detect_started.timestamp()}
    assert before and before <= repaired_keys
    assert all(final[k] == room[k] for k in before)
