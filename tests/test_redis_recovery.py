"""Redis connection loss: local cache and durable outbox while Redis is away, reconnection with
backoff, resync of what the outage touched (or everything), verification, the recovery DAG."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from conftest import free_port, sides_equal
from test_events import OwnRedis

from chatsync.alerting import alerts
from chatsync.events import cache, redis_recovery
from chatsync.events.worker import Worker
from chatsync.ops import freeze
from chatsync_devtools.room_service import emit


@pytest.fixture
def heard():
    got: list[tuple[str, str, dict]] = []

    def notifier(kind, message, context):
        got.append((kind, message, context))
    alerts.register(notifier)
    yield got
    alerts.unregister(notifier)


def outbox(db) -> list[tuple]:
    return db.execute("SELECT room_id, user_id, source FROM chatsync.cache_outbox ORDER BY id").fetchall()


def test_while_redis_is_away_keys_go_to_the_local_cache_and_the_outbox(db, world, heard):
    away = replace(world, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    client = cache.client_for(away)
    db.execute("UPDATE chat.chat_participants SET role = 'MODERATOR' WHERE room_id = 4 AND user_id = "
               "(SELECT min(user_id) FROM chat.chat_participants WHERE room_id = 4)")
    user = db.execute("SELECT min(user_id) FROM chat.chat_participants WHERE room_id = 4").fetchone()[0]
    assert redis_recovery.update_cache(away, client, [4], [(4, user)], source="test") == "queued"
    assert freeze.freeze(away, [5], "maintenance", 60)["cache_error"].startswith("Redis unreachable: queued")
    assert outbox(db) == [(4, None, "test"), (4, user, "test"), (5, None, "freeze")]
    outages = db.execute("SELECT queued, overflowed, ended_at FROM chatsync.redis_outages").fetchall()
    assert outages == [(3, False, None)]  # one outage, opened once
    assert [k for k, _, c in heard if c.get("event") == "firing"] == ["redis_unreachable"]
    # readers in this process see the fallback: the state the chat tables hold
    seen = redis_recovery.read_room(away, client, 4)
    assert seen["source"] == "local" and seen["participants"][str(user)].startswith("MODERATOR")
    assert redis_recovery.read_room(away, client, 5)["room"]["writes_frozen"] == "1"
    assert redis_recovery.read_room(away, client, 9) == {"room": None, "participants": None, "source": "local"}
    # back: the rooms named by the outbox (and changed since) are resynced, verified, and closed
    back = redis_recovery.recover(world, scope="auto", max_wait_seconds=5)
    assert back["scope"] == "rooms" and back["outbox_cleared"] == 3 and back["verified"]["total"] == 0
    assert outbox(db) == []
    assert db.execute(
        "SELECT ended_at IS NOT NULL, resync_scope FROM chatsync.redis_outages"
    ).fetchone() == (True, "rooms")
    assert cache.verify(world).total == 0
    assert any(c.get("event") == "resolved" and k == "redis_unreachable" for k, _, c in heard)
    client.close()


def test_an_outage_that_outlived_the_outbox_resyncs_everything(db, world):
    away = replace(world, redis_url=f"redis://127.0.0.1:{free_port()}/0", cache_outbox_max_rows=2)
    client = cache.client_for(away)
    db.execute("UPDATE chat.chat_rooms SET status = 'ENDED' WHERE room_id IN (1, 2, 3)")
    for room in (1, 2, 3):
        redis_recovery.update_cache(away, client, [room], [], source="test")
    assert db.execute("SELECT queued, overflowed FROM chatsync.redis_outages").fetchone() == (2, True)
    planned = redis_recovery.plan(world, cache.client_for(world))
    assert planned["scope"] == "all" and "overflowed" in planned["why_all"]
    back = redis_recovery.recover(world, max_wait_seconds=5)
    assert back["scope"] == "all" and back["resynced"]["rooms"] == 30 and back["verified"]["total"] == 0
    client.close()


def test_reconnect_backs_off_then_gives_up_as_a_transient_error(world, caplog):
    from chatsync.errors import TransientError

    away = replace(world, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_reconnect_max_seconds=0.2)
    with pytest.raises(TransientError, match="Redis still unreachable after"):
        redis_recovery.reconnect(away, cache.client_for(away), max_seconds=1.0)
    waits = [r.getMessage() for r in caplog.records if "Redis unreachable (try" in r.getMessage()]
    assert len(waits) >= 3


def test_the_recovery_dag_resyncs_a_redis_that_came_back_empty(db, world, dagbag, monkeypatch, tmp_path):
    own = OwnRedis(tmp_path)
    own.start()
    settings = replace(world, redis_url=f"redis://127.0.0.1:{own.port}/0")
    try:
        cache.resync(settings)
        own.kill()  # lost with its data: no AOF file was written for the cache keys we check
        for f in tmp_path.glob("appendonly*"):
            f.unlink() if f.is_file() else None
        import shutil
        for d in tmp_path.glob("appendonlydir*"):
            shutil.rmtree(d)
        db.execute("UPDATE chat.chat_participants SET permissions = 1 WHERE room_id = 7")
        client = cache.client_for(settings)
        assert redis_recovery.update_cache(settings, client, [], [(7, u) for (u,) in db.execute(
            "SELECT user_id FROM chat.chat_participants WHERE room_id = 7")], source="test") == "queued"
        own.start()
        monkeypatch.setenv("CHATSYNC_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("CHATSYNC_REDIS_PREFIX", settings.redis_prefix)
        dag_run = dagbag.get_dag("chat_redis_recovery").test(run_conf={"scope": "auto", "max_wait_seconds": 30})
        states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
        assert dag_run.state == "success", states
        scope, resynced = db.execute("SELECT resync_scope, resynced FROM chatsync.redis_outages").fetchone()
        assert scope == "all" and resynced["rooms"] == 30  # Redis came back without the cache
        assert cache.verify(settings).total == 0 and outbox(db) == []
        client.close()
    finally:
        own.kill()


def test_the_worker_queues_during_an_outage_and_recovers_by_itself(db, world, tmp_path):
    own = OwnRedis(tmp_path)
    own.start()
    settings = replace(world, redis_url=f"redis://127.0.0.1:{own.port}/0", retry_attempts=2,
                       retry_base_seconds=0.05, retry_max_seconds=0.1, redis_reconnect_max_seconds=0.5)
    try:
        cache.resync(settings)
        client = redis.Redis(port=own.port)
        emit(settings, client, 60, seed=9, batch=30)
        client.close()
        outage, back = own.outage_after_first_commit(2.0)  # Redis dies before the cache update
        worker = Worker(settings, "w-outage", block_ms=100, batch_size=30, after_commit=outage)
        worker.run(until_idle=True, max_seconds=60, failure_pause=0.2)
        assert back.is_set() and worker.stats.events >= 60
        queued, ended, scope = db.execute("SELECT queued, ended_at IS NOT NULL, resync_scope "
                                          "FROM chatsync.redis_outages").fetchone()
        assert queued > 0 and ended and scope in ("rooms", "all")
        assert outbox(db) == []
        assert sides_equal(db) == {"rooms": 0, "participants": 0}
        assert cache.verify(settings).total == 0
        worker.close()
    finally:
        own.kill()


def test_the_hourly_repair_and_a_rollback_keep_the_cache_in_line(db, world):
    from chatsync.consistency.detect import detect
    from chatsync.consistency.engine import cache_follows
    from chatsync.consistency.rollback import rollback
    from chatsync.consistency.scope import Scope
    from chatsync.consistency.steps import repair_step

    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 8")
    db.execute("UPDATE chat.chat_rooms SET status = 'CANCELLED' WHERE room_id = 9")
    cache.resync(world)  # the cache holds the drifted state, as the chat gateway saw it
    found = detect(replace(world, repair_max_fraction=1.0), Scope("full"))
    out = repair_step(world, found.run_id)
    assert out["repaired"] > 0 and out["cache"] == "applied"
    assert cache.verify(world).total == 0 and sides_equal(db) == {"rooms": 0, "participants": 0}
    undone = rollback(world, found.run_id)
    assert cache_follows(world, undone.rollback_run_id) == "applied" and cache.verify(world).total == 0
