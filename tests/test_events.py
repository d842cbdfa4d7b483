"""Event sync against the real Redis and Postgres: every event type, duplicates and reordering,
dead letters, Redis going down mid-batch, a worker killed mid-batch, and the cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import sides_equal
from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.db.statements import bytea_array_text, sql_file
from chatsync.errors import ValidationError
from chatsync.events import cache
from chatsync.events.envelope import (
    EVENT_TYPES,
    PARTICIPANT_EVENTS,
    display_fields,
    event_fields,
    parse,
    publish,
    raw_entry,
)
from chatsync.events.worker import GROUP, Worker
from chatsync_devtools.embedded import RedisServer
from chatsync_devtools.room_service import RoomService, emit

PAUSE_ENV = "CHATSYNC_FAULT_PAUSE_BEFORE_ACK_MS"  # the fault hook: a pause between commit and XACK

CHATSYNC = str(Path(sys.executable).with_name("chatsync"))


def cli_env(settings, **extra) -> dict[str, str]:
    """The environment of a `chatsync` process working on this test's database, Redis and stream."""
    return {**os.environ, "CHATSYNC_DATABASE_URL": settings.database_url, "CHATSYNC_REDIS_URL": settings.redis_url,
            "CHATSYNC_EVENTS_STREAM": settings.events_stream, "CHATSYNC_REDIS_PREFIX": settings.redis_prefix, **extra}


def drain(settings, name="w1", **kwargs) -> Worker:
    worker = Worker(settings, name, block_ms=100, **kwargs)
    worker.run(until_idle=True, max_seconds=60)
    return worker


def sync_log(db) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in db.execute("SELECT event_id, outcome, attempts FROM chatsync.sync_log")}


def assert_all_synced(db, settings):
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert cache.verify(settings).total == 0


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, message", [
    ({"type": "room.archived", "room_id": "1", "occurred_at": "2026-01-01T00:00:00Z"}, "missing field 'event_id'"),
    ({"event_id": "e", "type": "room.exploded", "room_id": "1", "occurred_at": "2026-01-01T00:00:00Z"},
     "unknown event type 'room.exploded'"),
    ({"event_id": "e", "type": "room.participant.added", "room_id": "1", "occurred_at": "2026-01-01T00:00:00Z"},
     "missing field 'user_id'"),
    ({"event_id": "e", "type": "room.archived", "room_id": "-4", "occurred_at": "2026-01-01T00:00:00Z"},
     "field 'room_id' is out of range: -4"),
    ({"event_id": "e", "type": "room.archived", "room_id": "x1", "occurred_at": "2026-01-01T00:00:00Z"},
     "field 'room_id' is not a whole number: 'x1'"),
    ({"event_id": "e", "type": "room.archived", "room_id": "1", "occurred_at": "yesterday"},
     "field 'occurred_at' is not an ISO-8601 time: 'yesterday'"),
    ({"event_id": "e", "type": "room.archived", "room_id": "1", "occurred_at": "2026-01-01T00:00:00"},
     "has no time zone"),
])
def test_malformed_events_are_named_precisely(fields, message):
    with pytest.raises(ValidationError, match=message):
        parse("1-0", {k.encode(): v.encode() for k, v in fields.items()})


GOOD = {"event_id": "e", "type": "room.archived", "room_id": "1", "occurred_at": "2026-01-01T00:00:00Z"}


def entry(**changes) -> dict[bytes, bytes]:
    """A good stream entry with some fields changed, as Redis returns it (bytes to bytes)."""
    fields = {**GOOD, **changes}
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


@pytest.mark.parametrize("fields, message", [
    (entry(type="room.archived\x00"), "field 'type' holds a NUL byte: 'room.archived\\x00'"),
    (entry(event_id="abc\x00def"), "field 'event_id' holds a NUL byte: 'abc\\x00def'"),
    ({**entry(), b"ty\x00pe": b"x"}, "field name holds a NUL byte: 'ty\\x00pe'"),
    (entry(type=b"room.\xffarchived"), "field 'type' is not UTF-8: b'room.\\xffarchived'"),
    ({**entry(), b"\xfe": b"x"}, "field name is not UTF-8: b'\\xfe'"),
    (entry(room_id="\u0661\u0662"), "field 'room_id' is not a whole number: '\u0661\u0662'"),
    (entry(room_id="1_2"), "field 'room_id' is not a whole number: '1_2'"),
    (entry(room_id=" 12 "), "field 'room_id' is not a whole number: ' 12 '"),
    (entry(room_id="+12"), "field 'room_id' is not a whole number: '+12'"),
    (entry(room_id="0"), "field 'room_id' is out of range: 0"),
    (entry(room_id=str(2**63)), "field 'room_id' is out of range: 9223372036854775808"),
    (entry(type="room.participant.added", user_id="1\u0662"), "field 'user_id' is not a whole number: '1\u0662'"),
    (entry(occurred_at="2026-12-02T00:00:00+20:00"), "field 'occurred_at' has a time zone offset out of range"),
    (entry(occurred_at="9999-12-31T23:59:59-23:59"), "field 'occurred_at' has a time zone offset out of range"),
    (entry(occurred_at="2026-12-02T00:00:00+16:00"), "field 'occurred_at' has a time zone offset out of range"),
    (entry(occurred_at="9999-12-31T23:59:59-15:00"), "field 'occurred_at' is out of range once in UTC"),
    (entry(occurred_at="0001-01-01T00:00:00+01:00"), "field 'occurred_at' is out of range once in UTC"),
    (entry(event_id="e" * 201), "field 'event_id' is longer than 200 characters"),
])
def test_fields_no_column_could_store_are_named_precisely(fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)) as refused:
        parse("1-0", fields)
    assert "\x00" not in str(refused.value)


@pytest.mark.parametrize("name, size", [("event_id", 1_000_000), ("type", 1_000_000), ("room_id", 1_000_000),
                                        ("occurred_at", 1_000_000)])
def test_a_huge_field_makes_a_short_reason(name, size):
    with pytest.raises(ValidationError) as refused:
        parse("1-0", entry(**{name: "9" * size}))
    reason = str(refused.value)
    assert len(reason) < 200 and reason.endswith(f"…({size} bytes)"), reason


@pytest.mark.parametrize("raw, utc", [
    ("2026-01-01T15:59:00+15:59", datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)),
    ("2026-01-01T00:00:00-15:59", datetime(2026, 1, 1, 15, 59, tzinfo=timezone.utc)),
    ("9999-12-31T23:59:59+15:59", datetime(9999, 12, 31, 8, 0, 59, tzinfo=timezone.utc)),
    ("0001-01-01T00:00:00-01:00", datetime(1, 1, 1, 1, 0, tzinfo=timezone.utc)),
    ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=timezone.utc)),
])
def test_accepted_events_are_in_utc_and_postgres_stores_them(db, raw, utc):
    event = parse("1-0", entry(type="room.participant.added", room_id=str(2**63 - 1), user_id="0042",
                               occurred_at=raw))
    assert event.occurred_at == utc and event.occurred_at.utcoffset() == timedelta(0)
    assert (event.room_id, event.user_id) == (2**63 - 1, 42)
    stored = db.execute("SELECT %s::timestamptz, %s::bigint, %s::bigint, %s::text",
                        (event.occurred_at, event.room_id, event.user_id, event.event_id)).fetchone()
    assert stored == (utc, 2**63 - 1, 42, "e")


def test_raw_entry_is_exactly_what_was_read_and_display_fields_is_json_safe(db):
    fields = {b"event_id": b"a\x00b", b"type": b"room.\xffx", "room_id": "\u0661", b"big": b"x" * 5000,
              "n": 7}
    assert raw_entry(fields) == [b"event_id", b"a\x00b", b"type", b"room.\xffx", b"room_id", "\u0661".encode(),
                                 b"big", b"x" * 5000, b"n", b"7"]
    shown = display_fields(fields)
    assert shown["event_id"] == "a\\x00b" and shown["type"] == "room.\\xffx" and shown["room_id"] == "\u0661"
    assert shown["big"] == "x" * 2000 + "…(5000 bytes)" and shown["n"] == "7"
    assert display_fields({b"k": b"a\x00b", b"name" * 9: b""}, max_chars=3) == {"k": "a\\x…(3 bytes)",
                                                                                "nam…(36 bytes)": ""}
    stored = db.execute("SELECT %s::jsonb", (Jsonb(shown),)).fetchone()[0]  # jsonb takes it (no U+0000)
    assert stored == shown


def test_a_dead_letter_keeps_its_raw_entry_losslessly(db, redis_settings):
    """The dead-letter statement as the worker binds it: raw_entries hold each entry as the text
    of its bytea[]; the stored entry put back on the stream (XADD) reads back identical."""
    bad = [entry(type="room.archived\x00"), entry(event_id=b"\xff\xfe"), entry()]
    reasons = []
    for fields in bad[:2]:
        with pytest.raises(ValidationError) as refused:
            parse("1-0", fields)
        reasons.append(str(refused.value))
    raws = [display_fields(f) for f in bad]
    ops = sql.Identifier(redis_settings.ops_schema)
    db.execute(sql_file(redis_settings, "events_record_dead_letters", ops=ops), {
        "stream_ids": ["1-1", "1-2", "1-3"], "event_ids": [r.get("event_id") for r in raws],
        "types": [r.get("type") for r in raws], "reasons": [*reasons, "no raw entry (recorded before 017)"],
        "raws": [Jsonb(r) for r in raws], "raw_entries": [bytea_array_text(raw_entry(f)) for f in bad[:2]] + [None],
        "worker": "w-test"})
    rows = db.execute("SELECT stream_id, event_id, reason, raw, raw_entry FROM chatsync.dead_letters "
                      "ORDER BY stream_id").fetchall()
    assert [r[1] for r in rows] == ["e", "\\xff\\xfe", "e"] and rows[0][3]["type"] == "room.archived\\x00"
    assert rows[0][2] == "field 'type' holds a NUL byte: 'room.archived\\x00'"
    assert rows[2][4] is None
    client = redis.Redis.from_url(redis_settings.redis_url)
    for (_, _, reason, _, stored), fields in zip(rows[:2], bad):
        assert stored == raw_entry(fields)
        replayed = client.xadd(redis_settings.events_stream, dict(zip(stored[::2], stored[1::2])))
        [(_, back)] = client.xrange(redis_settings.events_stream, replayed, replayed)
        assert back == fields
        with pytest.raises(ValidationError, match=re.escape(reason)):
            parse(replayed.decode(), back)
    client.close()


def test_bytea_array_text_round_trips_through_postgres(db):
    parts = [b"", b"\x00", b"\xff\xfe", b'"{}\\,', bytes(range(256))]
    assert db.execute("SELECT %s::bytea[]", (bytea_array_text(parts),)).fetchone()[0] == parts
    assert db.execute("SELECT %s::bytea[]", (bytea_array_text([]),)).fetchone()[0] == []
    assert bytea_array_text(None) is None


def test_the_publisher_refuses_what_the_worker_would_refuse():
    with pytest.raises(ValidationError, match="has no time zone"):
        event_fields("room.archived", 1, occurred_at=datetime(2026, 1, 1))
    fields = event_fields("room.participant.banned", 7, 9)
    assert parse("1-0", fields).user_id == 9


# -- applying ----------------------------------------------------------------------------------

# The state both sides start from so that each toggle goes the way its type names (the room
# service bans a participant that is not banned and unbans one that is; likewise archiving).
TOGGLE_START = {
    "room.participant.banned": ("UPDATE room.room_participants SET banned_at = NULL",
                                "UPDATE chat.chat_participants SET banned = false"),
    "room.participant.unbanned": ("UPDATE room.room_participants SET banned_at = now()",
                                  "UPDATE chat.chat_participants SET banned = true"),
    "room.archived": ("UPDATE room.rooms SET archived_at = NULL", "UPDATE chat.chat_rooms SET archived = false"),
    "room.unarchived": ("UPDATE room.rooms SET archived_at = now()", "UPDATE chat.chat_rooms SET archived = true"),
}


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_each_event_type_reaches_chat_tables_sync_log_and_cache(db, world, type_):
    client = redis.Redis.from_url(world.redis_url)
    for statement in TOGGLE_START.get(type_, ()):
        db.execute(statement)
    cache.resync(world)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    service = RoomService(world, client, seed=EVENT_TYPES.index(type_))
    [(done, room, user)] = service.emit_types([type_])
    assert done == type_  # this very type was made and published
    assert sides_equal(db) != {"rooms": 0, "participants": 0}  # the chat side is behind
    worker = drain(world)
    assert worker.stats.events == 1 and worker.stats.dead_letters == 0
    assert_all_synced(db, world)
    row = db.execute("SELECT type, room_id, user_id, outcome, processed_at >= occurred_at "
                     "FROM chatsync.sync_log").fetchone()
    assert row[:3] == (type_, room, user if type_ in PARTICIPANT_EVENTS else None)
    assert row[3] == "applied" and row[4] is True
    assert worker.backlog()["pending"] == 0
    client.close()


def test_duplicates_and_reordering_are_harmless(db, world):
    client = redis.Redis.from_url(world.redis_url)
    service = RoomService(world, client, seed=3)
    conn = psycopg.connect(world.database_url, autocommit=True)
    # two changes of one participant, published newest first, then the first one again
    room, user = conn.execute("SELECT room_id, user_id FROM room.room_participants ORDER BY 1, 2 LIMIT 1").fetchone()
    older = event_fields("room.participant.role_changed", room, user,
                         occurred_at=datetime.now(timezone.utc) - timedelta(seconds=5))
    conn.execute("UPDATE room.room_participants SET role = 'MODERATOR', permissions = 5 WHERE room_id = %s "
                 "AND user_id = %s", (room, user))
    newer = event_fields("room.participant.permissions_updated", room, user)
    for fields in (newer, older, older):
        client.xadd(world.events_stream, fields)
    service.emit_types(["room.participant.banned", "room.status.changed"])
    worker = drain(world, batch_size=3)
    assert worker.stats.events == 5 and worker.stats.duplicates == 1
    assert_all_synced(db, world)
    log = sync_log(db)
    assert len(log) == 4 and log[older["event_id"]][1] == 1
    # the same events delivered again (another consumer group replays the stream): same result
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = %s AND user_id = %s", (room, user))
    client.xgroup_setid(world.events_stream, GROUP, id="0")
    worker = drain(world, name="w2")
    assert worker.stats.events == 5 and worker.stats.applied == 2  # the two events of the key changed since
    assert_all_synced(db, world)
    assert sync_log(db)[older["event_id"]][1] == 2  # one more attempt, first outcome kept
    conn.close()
    client.close()


def test_malformed_events_go_to_dead_letters_and_the_rest_applies(db, world):
    client = redis.Redis.from_url(world.redis_url)
    service = RoomService(world, client, seed=5)
    service.emit_types(["room.participant.added", "room.settings.changed"])
    now = datetime.now(timezone.utc).isoformat()
    bad = [
        {"event_id": "b1", "type": "room.exploded", "room_id": "1", "occurred_at": now},
        {"event_id": "b2", "type": "room.participant.banned", "room_id": "1", "occurred_at": now},
        {"event_id": "b3", "type": "room.archived", "room_id": "1", "occurred_at": "not a time"},
        {"event_id": "b4", "type": "room.archived", "room_id": "999999", "occurred_at": now},
        {"garbage": "\xff"},
    ]
    for fields in bad:
        client.xadd(world.events_stream, fields)
    service.emit_types(["room.participant.removed"])
    worker = drain(world, batch_size=100)
    assert worker.stats.events == 8 and worker.stats.dead_letters == 5
    reasons = dict(db.execute("SELECT coalesce(event_id, '-'), reason FROM chatsync.dead_letters").fetchall())
    assert reasons == {
        "b1": "unknown event type 'room.exploded'",
        "b2": "missing field 'user_id'",
        "b3": "field 'occurred_at' is not an ISO-8601 time: 'not a time'",
        "b4": "room 999999 does not exist on the room side",
        "-": "missing field 'event_id'",
    }
    assert db.execute(
        "SELECT raw->>'type' FROM chatsync.dead_letters WHERE event_id = 'b1'"
    ).fetchone()[0] == "room.exploded"
    assert len(sync_log(db)) == 3
    assert_all_synced(db, world)
    assert worker.backlog()["pending"] == 0
    client.close()


def test_entries_the_database_would_refuse_are_dead_letters_kept_as_read(db, world):
    """Each of these passed validation and then failed the worker's SQL (the whole batch, at each
    delivery) or named another room (room '١٢' as 12): each is a dead letter now, its raw_entry the
    entry exactly as read, and the rest of the batch applies."""
    client = redis.Redis.from_url(world.redis_url)
    RoomService(world, client, seed=11).emit_types(["room.settings.changed", "room.participant.added"])
    bad = {
        "n1": (entry(event_id="n1", type="room.archived\x00"), "field 'type' holds a NUL byte"),
        "n2\\x00x": (entry(event_id="n2\x00x"), "field 'event_id' holds a NUL byte: 'n2\\x00x'"),
        "t1": (entry(event_id="t1", occurred_at="2026-12-02T00:00:00+20:00"), "time zone offset out of range"),
        "t2": (entry(event_id="t2", occurred_at="9999-12-31T23:59:59-23:59"), "time zone offset out of range"),
        "d1": (entry(event_id="d1", room_id="\u0661\u0662"), "field 'room_id' is not a whole number"),
        "d2": (entry(event_id="d2", room_id="1_2"), "field 'room_id' is not a whole number: '1_2'"),
        "d3": (entry(event_id="d3", room_id=" 12 "), "field 'room_id' is not a whole number: ' 12 '"),
    }
    for fields, _ in bad.values():
        client.xadd(world.events_stream, fields)
    worker = drain(world, batch_size=100)
    assert worker.stats.failed_batches == 0 and worker.stats.dead_letters == len(bad)
    rows = {r[0]: r[1:] for r in db.execute("SELECT event_id, reason, raw_entry FROM chatsync.dead_letters")}
    assert rows.keys() == bad.keys()
    for event_id, (fields, reason) in bad.items():
        assert reason in rows[event_id][0] and "\x00" not in rows[event_id][0]
        assert rows[event_id][1] == raw_entry(fields)
    assert len(sync_log(db)) == 2
    assert_all_synced(db, world)
    client.close()


# -- faults ------------------------------------------------------------------------------------


class OwnRedis(RedisServer):
    """A real redis-server of this test's own (chatsync.embedded.RedisServer), that can go away
    in the middle of a worker's batch."""

    def outage_after_first_commit(self, down_seconds: float):
        """A worker's after_commit hook: at its first call Redis dies, and comes back down_seconds
        later; the event is set once it is back."""
        back = threading.Event()

        def hook():
            if back.is_set() or self.proc.poll() is not None:
                return
            self.kill()
            threading.Timer(down_seconds, lambda: (self.start(), back.set())).start()
        return hook, back


def test_redis_down_mid_batch_then_back_loses_nothing(db, world, tmp_path):
    own = OwnRedis(tmp_path)
    own.start()
    settings = replace(world, redis_url=f"redis://127.0.0.1:{own.port}/0", retry_attempts=30,
                       retry_base_seconds=0.05, retry_max_seconds=0.3)
    try:
        cache.resync(settings)
        client = redis.Redis(port=own.port)
        emit(settings, client, 120, seed=8, batch=40)
        client.close()
        outage, restarted = own.outage_after_first_commit(1.5)
        worker = Worker(settings, "w1", block_ms=100, batch_size=50, after_commit=outage)
        worker.run(until_idle=True, max_seconds=60)
        assert restarted.is_set()
        assert worker.stats.failed_batches == 0 and worker.stats.events == 120
        log = sync_log(db)
        assert len(log) == 120 and {attempts for _, attempts in log.values()} == {1}
        assert worker.backlog()["pending"] == 0
        assert sides_equal(db) == {"rooms": 0, "participants": 0}
        assert cache.verify(settings).total == 0
        worker.close()
    finally:
        own.kill()


def test_worker_killed_mid_batch_another_finishes(db, world):
    client = redis.Redis.from_url(world.redis_url)
    emit(world, client, 300, seed=9, batch=100)
    env = cli_env(world, **{PAUSE_ENV: "30000"})
    proc = subprocess.Popen([CHATSYNC, "worker", "--name", "doomed", "--batch", "100"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not db.execute("SELECT count(*) FROM chatsync.sync_log").fetchone()[0]:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the worker never committed its first batch"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    pending = client.xpending(world.events_stream, GROUP)
    assert pending["pending"] == 100 and {c["name"] for c in pending["consumers"]} == {b"doomed"}
    worker = drain(world, name="rescuer", claim_idle_ms=100)
    assert worker.stats.claimed == 100 and worker.stats.events == 300
    log = sync_log(db)
    assert len(log) == 300
    assert sorted(a for _, a in log.values()).count(2) == 100  # the killed batch: delivered twice
    assert worker.backlog()["pending"] == 0
    assert_all_synced(db, world)
    client.close()


def test_sigterm_finishes_the_batch_in_hand(db, world):
    client = redis.Redis.from_url(world.redis_url)
    emit(world, client, 50, seed=10)
    env = cli_env(world, **{PAUSE_ENV: "1500"})
    proc = subprocess.Popen([CHATSYNC, "worker", "--name", "polite", "--batch", "50", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not db.execute("SELECT count(*) FROM chatsync.sync_log").fetchone()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # during the pause between commit and ack
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert '"events": 50' in out
    assert client.xpending(world.events_stream, GROUP)["pending"] == 0
    client.close()


# -- the cache -----------------------------------------------------------------------------------

def test_cache_verify_counts_injected_drift_and_resync_fixes_it(db, world):
    client = redis.Redis.from_url(world.redis_url)
    rooms = [r[0] for r in db.execute("SELECT room_id FROM chat.chat_rooms ORDER BY 1 LIMIT 4")]
    users = [str(r[0]) for r in db.execute(
        "SELECT user_id FROM chat.chat_participants WHERE room_id = %s ORDER BY 1 LIMIT 3", (rooms[1],))]
    assert len(users) == 3
    p = world.redis_prefix
    client.delete(f"{p}room:{rooms[0]}")                                    # missing room
    client.hset(f"{p}room:{rooms[1]}", "status", "LIVE?")                    # room state
    client.hset(f"{p}room:{rooms[1]}:participants", users[0], "GUEST|0|0")   # participant mismatch
    client.hdel(f"{p}room:{rooms[1]}:participants", users[1])                # missing participant
    client.hset(f"{p}room:{rooms[2]}:participants", "424242", "MEMBER|1|0")  # orphan participant
    client.hset(f"{p}room:777777", mapping={"status": "LIVE"})               # orphan room
    client.sadd(f"{p}rooms", 777777)
    found = cache.verify(world)
    assert {k: v for k, v in found.counts.items() if v} == {
        "cache_missing_room": 1, "cache_room_state_mismatch": 1, "cache_participant_mismatch": 1,
        "cache_missing_participant": 1, "cache_orphan_participant": 1, "cache_orphan_room": 1}
    assert {"kind": "cache_orphan_room", "room_id": 777777, "user_id": None} in found.examples
    code = subprocess.run([CHATSYNC, "cache", "verify", "--json"], capture_output=True, text=True,
                          env=cli_env(world)).returncode
    assert code == 1
    fixed = cache.resync(world)
    assert fixed.removed == 1 and fixed.rooms == len(db.execute("SELECT 1 FROM chat.chat_rooms").fetchall())
    assert cache.verify(world).total == 0
    assert not client.exists(f"{p}room:777777")
    assert not list(client.scan_iter(match=f"{p}tmp:*"))  # no temporary key left behind
    client.close()


def test_resync_of_some_rooms_never_shows_a_half_built_room(db, world):
    """A reader polling a room while it is rebuilt sees the old hash or the new one, whole."""
    client = redis.Redis.from_url(world.redis_url)
    room = db.execute(
        "SELECT room_id FROM chat.chat_participants GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]
    key = f"{world.redis_prefix}room:{room}:participants"
    full = client.hlen(key)
    seen, stop = set(), threading.Event()

    def reader():
        r = redis.Redis.from_url(world.redis_url)
        while not stop.is_set():
            seen.add(r.hlen(key))
        r.close()

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(30):
        cache.resync(world, [room])
    stop.set()
    t.join()
    assert seen == {full}
    client.close()


def test_publish_cli_and_api_refuse_bad_events(world):
    client = redis.Redis.from_url(world.redis_url)
    with pytest.raises(ValidationError, match="missing field 'user_id'"):
        publish(client, world.events_stream, "room.participant.added", 1)
    proc = subprocess.run([CHATSYNC, "publish", "room.nope", "1", "--json"], capture_output=True, text=True,
                          env=cli_env(world))
    assert proc.returncode == 2 and "unknown event type 'room.nope'" in proc.stderr
    assert client.xlen(world.events_stream) == 0
    client.close()
