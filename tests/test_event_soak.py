"""Soaks of the event worker, run for real: a steady stream of room changes while the worker is
SIGKILLed three times and Redis is restarted empty once; and 10,000 malformed entries of many
shapes among valid ones. Each ends with the chat side equal to the room side, the cache equal to
the chat side, nothing pending and the worker alive."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import redis
from conftest import sides_equal, wait_until
from test_events import CHATSYNC, OwnRedis
from test_stream_loss import logged, quick_env

from chatsync.events import cache
from chatsync.events.worker import GROUP
from chatsync_devtools.room_service import RoomService
from chatsync_devtools.simulate import simulate

pytestmark = pytest.mark.slow

# The application: real changes of the room tables at a steady rate, each tick's events published
# after its commit; while Redis is away the changes stay committed and their events are lost (a
# fire-and-forget publisher does not retry).
PUBLISHER = """
import json, sys, time
import redis
from chatsync.config import Settings
from chatsync_devtools.room_service import emit
settings = Settings.from_env()
client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
emit(settings, client, int(sys.argv[2]), seed=int(sys.argv[1]), rate=float(sys.argv[3]), through_outages=True,
     progress=lambda made, published: print(json.dumps({"made": made, "published": published, "at": time.time()}),
                                            flush=True))
"""


def worker_process(settings, log_file, name: str = "soak") -> subprocess.Popen:
    return subprocess.Popen([CHATSYNC, "worker", "--name", name, "--block-ms", "100"], env=quick_env(settings),
                            stdout=subprocess.DEVNULL, stderr=log_file)


def test_steady_changes_through_three_worker_kills_and_redis_restarted_empty(db, redis_settings, tmp_path):
    own = OwnRedis(tmp_path, persistent=False)
    own.start()
    settings = replace(redis_settings, redis_url=own.url, redis_prefix="soak:", events_stream="soak:events",
                       retry_base_seconds=0.05, repair_max_fraction=0.5)
    simulate(settings, rooms=200, members=20, drift=0, seed=51)
    cache.resync(settings)
    log_file = (tmp_path / "workers.log").open("w")
    worker = worker_process(settings, log_file)
    app_out = tmp_path / "app.jsonl"
    app = subprocess.Popen([sys.executable, "-c", PUBLISHER, "52", "20000", "400"], env=quick_env(settings),
                           stdout=app_out.open("w"), stderr=(tmp_path / "app.err").open("w"))
    faults = []
    try:
        # three SIGKILLs of the worker and one empty restart of Redis, spread over the run
        def made() -> int:
            assert app.poll() in (None, 0), (tmp_path / "app.err").read_text()[-2000:]
            lines = app_out.read_text().splitlines()
            return json.loads(lines[-1])["made"] if lines else 0

        for at_made, fault in ((3000, "kill"), (7000, "kill"), (10000, "redis"), (14000, "kill")):
            wait_until(lambda at_made=at_made: made() >= at_made, 600, f"the application to make {at_made} changes")
            if fault == "kill":
                worker.send_signal(signal.SIGKILL)
                worker.wait(30)
                worker = worker_process(settings, log_file)
            else:  # the worker falls behind, then Redis dies with that backlog and stays away a moment
                worker.send_signal(signal.SIGSTOP)
                wait_until(lambda at_made=at_made: made() >= at_made + 400, 600, "a backlog in the stream")
                own.kill()
                wait_until(lambda at_made=at_made: made() >= at_made + 800, 600,
                           "publishes to fail while Redis is away")
                own.start()
                worker.send_signal(signal.SIGCONT)
            faults.append((fault, logged(db)))
        assert app.wait(600) == 0, (tmp_path / "app.err").read_text()[-2000:]
        last = json.loads(app_out.read_text().splitlines()[-1])
        assert last["made"] == 20000 and last["published"] < 20000  # events were lost with Redis
        client = redis.Redis.from_url(settings.redis_url)

        def settled():
            assert worker.poll() is None, "the worker died"
            backlog = next((g for g in client.xinfo_groups(settings.events_stream)
                            if g["name"] in (GROUP, GROUP.encode())), {})
            return (backlog.get("pending") == 0 and backlog.get("lag") == 0
                    and sides_equal(db) == {"rooms": 0, "participants": 0} and cache.verify(settings).total == 0)
        # within 60 s of the last event: the chat side equals the room side, the cache the chat side
        wait_until(settled, max(1.0, last["at"] + 60 - time.time()), "the chat side and the cache to catch up")
        verify = subprocess.run([CHATSYNC, "cache", "verify", "--json"], env=quick_env(settings),
                                capture_output=True, text=True, timeout=300)
        assert verify.returncode == 0 and json.loads(verify.stdout)["total"] == 0, verify.stderr
        row = db.execute("SELECT losses, heal_pending_since, healed_at FROM chatsync.event_streams "
                         "WHERE stream = %s", (settings.events_stream,)).fetchone()
        assert row[0] >= 1 and row[1] is None and row[2] is not None
        assert db.execute("SELECT count(*) FROM chatsync.redis_outages WHERE ended_at IS NULL").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM chatsync.runs WHERE status = 'abandoned'").fetchone()[0] <= 3
        assert db.execute("SELECT count(*) FROM chatsync.dead_letters").fetchone()[0] == 0
        client.close()
    finally:
        for proc in (app, worker):
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        log_file.close()
        own.kill()


def malformed_shapes(now: str) -> dict[str, object]:
    """shape -> a function of an event id giving an entry that is wrong in that way."""
    def good(eid: str, **change) -> dict:
        return {"event_id": eid, "type": "room.archived", "room_id": "1", "occurred_at": now, **change}

    big = "9" * 1_000_000
    return {
        "nul-in-type": lambda e: good(e, type="room.archived\x00"),
        "nul-in-id": lambda e: good("abc\x00" + e),
        "nul-in-field-name": lambda e: {**good(e), "bad\x00name": "x"},
        "invalid-utf8-type": lambda e: good(e, type=b"room.\xff\xfe"),
        "invalid-utf8-room-id": lambda e: good(e, room_id=b"\xc3\x28"),
        "huge-room-id": lambda e: good(e, room_id="99999999999999999999"),
        "negative-room-id": lambda e: good(e, room_id="-5"),
        "zero-room-id": lambda e: good(e, room_id="0"),
        "arabic-digits": lambda e: good(e, room_id="\u0661\u0662"),
        "underscore-digits": lambda e: good(e, room_id="1_2"),
        "spaced-digits": lambda e: good(e, room_id=" 12 "),
        "offset-too-far": lambda e: good(e, occurred_at="2026-12-02T00:00:00+20:00"),
        "year-overflow": lambda e: good(e, occurred_at="9999-12-31T23:59:59-23:59"),
        "no-time-zone": lambda e: good(e, occurred_at="2026-12-02T00:00:00"),
        "shell-in-time": lambda e: good(e, occurred_at="yesterday; rm -rf /"),
        "unknown-type": lambda e: good(e, type="room.exploded"),
        "shell-in-type": lambda e: good(e, type="$(reboot)`id`"),
        "sql-in-room-id": lambda e: good(e, room_id="1; DROP TABLE chat.chat_rooms; --"),
        "missing-room-id": lambda e: {k: v for k, v in good(e).items() if k != "room_id"},
        "missing-user-id": lambda e: good(e, type="room.participant.added"),
        "missing-type": lambda e: {k: v for k, v in good(e).items() if k != "type"},
        "no-such-room": lambda e: good(e, room_id="987654321"),
        "megabyte-room-id": lambda e: good(e, room_id=big),
        "megabyte-time": lambda e: good(e, occurred_at=big),
        "megabyte-id": lambda e: good(e + big),
    }


def test_ten_thousand_malformed_entries_among_valid_ones(db, redis_settings, tmp_path):
    own = OwnRedis(tmp_path, persistent=False)
    own.start()
    settings = replace(redis_settings, redis_url=own.url, redis_prefix="bad:", events_stream="bad:events")
    simulate(settings, rooms=50, members=10, drift=0, seed=53)
    cache.resync(settings)
    client = redis.Redis.from_url(settings.redis_url)
    now = datetime.now(timezone.utc).isoformat()
    shapes = malformed_shapes(now)
    small = [name for name in shapes if not name.startswith("megabyte")]
    service = RoomService(settings, client, seed=54)
    valid, sent = 0, {}
    for i in range(10_000):
        if i % 100 == 0:  # valid changes (published by the room service) between runs of bad entries
            valid += len(service.emit_types(["room.participant.role_changed", "room.status.changed",
                                             "room.participant.added"] * 3))
        shape = list(shapes)[i] if i < len(shapes) else small[i % len(small)]  # each megabyte shape once
        client.xadd(settings.events_stream, shapes[shape](f"bad-{shape}-{i}"))
        sent[shape] = sent.get(shape, 0) + 1
    # an event id full of SQL and shell metacharacters is still a valid id: applied like any other
    room = db.execute("SELECT min(id) FROM room.rooms").fetchone()[0]
    db.execute("UPDATE room.rooms SET status = 'ENDED', updated_at = now() WHERE id = %s", (room,))
    client.xadd(settings.events_stream, {"event_id": "x'); DROP TABLE chatsync.sync_log; -- $(id)",
                                         "type": "room.status.changed", "room_id": str(room), "occurred_at": now})
    valid += 1
    log_file = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([CHATSYNC, "worker", "--name", "sieve"], env=quick_env(settings),
                              stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        def drained():
            assert worker.poll() is None, "the worker died"
            group = next((g for g in client.xinfo_groups(settings.events_stream)
                          if g["name"] in (GROUP, GROUP.encode())), None)  # None until the worker made it
            return group is not None and group["pending"] == 0 and group["lag"] == 0
        wait_until(drained, 600, "the worker to read every entry")
        assert logged(db) == valid
        assert db.execute(
            "SELECT count(*) FROM chatsync.sync_log WHERE event_id LIKE 'x''); DROP%%'"
        ).fetchone()[0] == 1
        assert sides_equal(db) == {"rooms": 0, "participants": 0} and cache.verify(settings).total == 0
        # every bad entry dead-lettered once, with a reason of its own shape, the raw entry kept
        by_shape = dict(((shape, (n, reasons, longest)) for shape, n, reasons, longest in db.execute(
            "SELECT substring(raw->>'event_id' from 'bad-(.*)-[0-9]+'), count(*), count(DISTINCT reason), "
            "max(length(reason)) FROM chatsync.dead_letters GROUP BY 1").fetchall()))
        assert len(sent) >= 15 and {s: v[0] for s, v in by_shape.items()} == sent
        assert all(longest < 2000 for _, _, longest in by_shape.values())  # a megabyte never makes a megabyte reason
        reason_of = dict(db.execute("SELECT DISTINCT ON (1) substring(raw->>'event_id' from 'bad-(.*)-[0-9]+'), reason "
                                    "FROM chatsync.dead_letters ORDER BY 1").fetchall())
        assert "offset" in reason_of["offset-too-far"] and "NUL" in reason_of["nul-in-type"]
        assert "does not exist on the room side" in reason_of["no-such-room"]
        kept = db.execute("SELECT raw_entry FROM chatsync.dead_letters WHERE raw->>'event_id' LIKE "
                          "'bad-invalid-utf8-type-%%'").fetchone()[0]
        assert b"room.\xff\xfe" in [bytes(x) for x in kept]
        assert client.xpending(settings.events_stream, GROUP)["pending"] == 0 and worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        log_file.close()
        client.close()
        own.kill()
