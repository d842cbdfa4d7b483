"""The event worker when an entry cannot be applied or Redis loses the stream's data: the entry is
isolated and dead-lettered, the rest applied; a Redis that comes back empty (or older, or
trimmed) is noticed and healed by the worker itself, without a restart, and the changes whose
events were lost reach the chat side and the cache. Real Redis servers of the tests' own."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import replace

import psycopg
import pytest
import redis
from conftest import sides_equal, wait_until
from test_events import CHATSYNC, OwnRedis, cli_env, drain, sync_log

from chatsync.events import cache, stream_recovery
from chatsync.events.envelope import event_fields
from chatsync.events.worker import GROUP, Worker
from chatsync_devtools.room_service import emit


def stream_row(db, settings) -> dict:
    cur = db.execute("SELECT epoch, losses, heal_pending_since, heal_reason, healed_at, heal_run_id "
                     "FROM chatsync.event_streams WHERE stream = %s", (settings.events_stream,))
    row = cur.fetchone()
    return dict(zip([d.name for d in cur.description], row)) if row else {}


def quick_env(settings, **extra) -> dict[str, str]:
    """The environment of a `chatsync worker` process with the empty_on_restart settings."""
    return cli_env(settings, CHATSYNC_STREAM_CHECK_SECONDS="0.5", CHATSYNC_RETRY_ATTEMPTS="3",
                   CHATSYNC_RETRY_BASE_SECONDS="0.05", CHATSYNC_RETRY_MAX_SECONDS="0.2",
                   CHATSYNC_REDIS_RECONNECT_MAX_SECONDS="0.5", CHATSYNC_REPAIR_MAX_FRACTION="0.5", **extra)


def all_acknowledged(client, settings) -> bool:
    group = next(g for g in client.xinfo_groups(settings.events_stream) if g["name"] in (GROUP, GROUP.encode()))
    return group["pending"] == 0 and group["lag"] == 0


def logged(db) -> int:
    return db.execute("SELECT count(*) FROM chatsync.sync_log").fetchone()[0]


@pytest.fixture
def empty_on_restart(world, tmp_path):
    """A Redis of this test's own that keeps nothing across a restart, the cache built in it, and
    settings that notice a loss quickly. The world is small: 1 % of its 270 rows would let a heal
    repair 2 rows it cannot tie to the lost events (removals), hence a higher fraction."""
    own = OwnRedis(tmp_path, persistent=False)
    own.start()
    settings = replace(world, redis_url=own.url, stream_check_seconds=0.5, retry_attempts=3,
                       retry_base_seconds=0.05, retry_max_seconds=0.2, redis_reconnect_max_seconds=0.5,
                       repair_max_fraction=0.5)
    cache.resync(settings)
    yield own, settings
    own.kill()


def test_an_entry_that_fails_alone_is_dead_lettered_and_the_rest_applies(db, world):
    """A chat-side constraint refuses one key's room value: that event's batch fails; the worker
    applies the batch in halves, dead-letters the one event with the error, applies, records and
    acknowledges the others."""
    client = redis.Redis.from_url(world.redis_url)
    keys = db.execute("SELECT room_id, user_id FROM room.room_participants ORDER BY 1, 2 LIMIT 41").fetchall()
    poison, others = keys[20], keys[:20] + keys[21:]
    db.execute("ALTER TABLE chat.chat_participants ADD CONSTRAINT test_refuses_666 CHECK (permissions <> 666)")
    try:
        db.execute("UPDATE room.room_participants SET permissions = 666 WHERE (room_id, user_id) = (%s, %s)", poison)
        db.execute("UPDATE room.room_participants SET role = 'GUEST', permissions = 3 "
                   "WHERE (room_id, user_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                   ([k[0] for k in others], [k[1] for k in others]))
        sent = {}
        for key in keys:
            fields = event_fields("room.participant.permissions_updated", *key)
            client.xadd(world.events_stream, fields)
            sent[fields["event_id"]] = key
        worker = drain(world, batch_size=100)
        assert worker.stats.failed_batches == 0 and worker.stats.events == 41 and worker.stats.dead_letters == 1
        [(event_id, reason)] = db.execute("SELECT event_id, reason FROM chatsync.dead_letters").fetchall()
        assert sent[event_id] == poison
        assert reason.startswith("cannot be applied: CheckViolation") and "test_refuses_666" in reason
        assert sorted(sent[e] for e in sync_log(db)) == sorted(others)
        assert worker.backlog()["pending"] == 0
        assert sides_equal(db) == {"rooms": 0, "participants": 2}  # the refused key alone (its two sides)
        assert db.execute("SELECT count(*) FROM chatsync.runs WHERE finished_at IS NULL").fetchone()[0] == 0
        assert cache.verify(world).total == 0
    finally:
        db.execute("ALTER TABLE chat.chat_participants DROP CONSTRAINT test_refuses_666")
        client.close()


def test_a_broken_setup_leaves_the_batch_pending_instead_of_dead_letters(db, world):
    """A failure that is the deployment's (here the chat table renamed away under the worker) is
    no entry's fault: nothing is dead-lettered, the batch stays pending, and once the table is
    back every event applies."""
    client = redis.Redis.from_url(world.redis_url)
    emit(world, client, 20, seed=30, batch=20)
    worker = Worker(world, "w-setup", block_ms=50)
    db.execute("ALTER TABLE chat.chat_participants RENAME TO chat_participants_away")
    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            worker.step(block=False)
    finally:
        db.execute("ALTER TABLE chat.chat_participants_away RENAME TO chat_participants")
    assert db.execute("SELECT count(*) FROM chatsync.dead_letters").fetchone()[0] == 0
    assert client.xpending(world.events_stream, GROUP)["pending"] == 20
    worker.run(until_idle=True, max_seconds=60)
    assert worker.stats.events == 20 and worker.stats.dead_letters == 0 and worker.stats.failed_batches == 1
    assert sides_equal(db) == {"rooms": 0, "participants": 0} and logged(db) == 20
    worker.close()
    client.close()


def test_a_running_worker_heals_a_redis_that_came_back_empty(db, empty_on_restart, tmp_path):
    """Redis restarts without its data while the worker runs and events wait in the stream: the
    worker notices, recreates its group, records and closes the outage, repairs the changes whose
    events were lost, rebuilds and verifies the cache, and goes on with the new events."""
    own, settings = empty_on_restart
    env = quick_env(settings)
    log_path = tmp_path / "worker.log"  # a pipe nobody reads would fill and block the worker
    proc = subprocess.Popen([CHATSYNC, "worker", "--name", "survivor", "--block-ms", "100"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        first = emit(settings, client, 40, seed=31, batch=20)
        wait_until(lambda: logged(db) == first.events, 60, "the first events to be synced")
        os.kill(proc.pid, signal.SIGSTOP)  # the worker falls behind ...
        lost = emit(settings, client, 60, seed=32, batch=20)  # ... these wait in the stream
        assert sides_equal(db) != {"rooms": 0, "participants": 0}
        own.kill()
        own.start()  # back, empty: the stream, the group and the cache are gone
        os.kill(proc.pid, signal.SIGCONT)
        wait_until(lambda: stream_row(db, settings).get("healed_at"), 120, "the worker to heal the stream")
        row = stream_row(db, settings)
        assert row["losses"] == 1 and row["heal_pending_since"] is None and row["heal_run_id"]
        outage = db.execute("SELECT ended_at, data_lost, resync_scope, verified->>'total' "
                            "FROM chatsync.redis_outages").fetchall()
        assert len(outage) == 1 and outage[0][0] is not None and outage[0][1] and outage[0][2:] == ("all", "0")
        assert sides_equal(db) == {"rooms": 0, "participants": 0}  # the lost events' changes are on the chat side
        heal = db.execute(
            "SELECT status, repaired FROM chatsync.runs WHERE run_id = %s", (row["heal_run_id"],)
        ).fetchone()
        assert heal[0] == "consistent" and heal[1] > 0
        assert cache.verify(settings).total == 0 and client.scard(cache.index_key(settings)) == 30
        # the worker goes on with what is published now, on the new stream
        before = logged(db)  # the first events, and any of the others already delivered when Redis died
        more = emit(settings, client, 30, seed=33, batch=10)
        wait_until(lambda: logged(db) == before + more.events, 60, "the new events to be synced")
        # the worker acknowledges a batch after its cache update: wait for every entry's
        wait_until(lambda: all_acknowledged(client, settings), 60, "the new events to be acknowledged")
        assert proc.poll() is None and lost.events > 0
        assert sides_equal(db) == {"rooms": 0, "participants": 0} and cache.verify(settings).total == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        client.close()


def test_a_worker_started_after_the_loss_heals_before_it_reads(db, empty_on_restart):
    own, settings = empty_on_restart
    client = redis.Redis.from_url(settings.redis_url)
    first = emit(settings, client, 30, seed=34, batch=15)
    drain(settings)
    emit(settings, client, 40, seed=35, batch=20)  # never read: no worker runs
    client.close()
    own.kill()
    own.start()
    worker = drain(settings, name="w-after")
    row = stream_row(db, settings)
    assert row["losses"] == 1 and row["healed_at"] is not None and row["heal_pending_since"] is None
    assert "Redis restarted or failed over" in db.execute("SELECT data_lost FROM chatsync.redis_outages").fetchone()[0]
    assert worker.stats.events == 0 and logged(db) == first.events
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert cache.verify(settings).total == 0
    worker.close()


def test_a_stream_restored_older_is_a_loss_a_replay_is_not(db, world):
    client = redis.Redis.from_url(world.redis_url)
    emit(world, client, 10, seed=38, batch=10)
    worker = drain(world)
    client.xgroup_setid(world.events_stream, GROUP, id="0")  # a replay on purpose: the entries are still there
    assert stream_recovery.check(world, client, GROUP).loss is None
    client.delete(world.events_stream)  # restored from an old copy: ids behind what was committed
    client.xadd(world.events_stream, event_fields("room.archived", 1), id="1-1")
    client.xgroup_create(world.events_stream, GROUP, id="0")
    state = stream_recovery.check(world, client, GROUP)
    assert state.heal_pending and "went back from" in state.loss and "to 1-1" in state.loss
    assert stream_recovery.heal(world, client, GROUP, worker.name)["decision"] in ("nothing", "repair")
    assert not stream_row(db, world)["heal_pending_since"]
    client.close()


def test_a_heal_interrupted_by_a_kill_is_finished_by_the_next_worker(db, empty_on_restart, tmp_path):
    own, settings = empty_on_restart
    client = redis.Redis.from_url(settings.redis_url)
    emit(settings, client, 20, seed=39, batch=10)
    drain(settings)
    emit(settings, client, 30, seed=40, batch=10)
    client.close()
    own.kill()
    own.start()
    marker = tmp_path / "healing"
    env = quick_env(settings, CHATSYNC_FAULT_PAUSE_AT="stream:before_heal", CHATSYNC_FAULT_PAUSE_SECONDS="120",
                    CHATSYNC_FAULT_MARKER=str(marker))
    proc = subprocess.Popen([CHATSYNC, "worker", "--name", "doomed-healer"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(marker.exists, 60, "the worker to start healing")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert stream_row(db, settings)["heal_pending_since"] is not None  # recorded before the heal began
    drain(settings, name="finisher")
    row = stream_row(db, settings)
    assert row["heal_pending_since"] is None and row["heal_run_id"] and row["losses"] == 1
    assert sides_equal(db) == {"rooms": 0, "participants": 0} and cache.verify(settings).total == 0
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM chatsync.redis_outages WHERE ended_at IS NULL").fetchone()[0] == 0


def test_the_worker_refuses_to_start_on_a_wrong_mapping(world, tmp_path):
    wrong = tmp_path / "mapping.yaml"
    wrong.write_text(open(world.mapping_path).read().replace("role: role", "role: grade"))
    proc = subprocess.run([CHATSYNC, "worker", "--until-idle"], env=cli_env(world, CHATSYNC_MAPPING_PATH=str(wrong)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "grade" in proc.stderr and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
