"""Write freezes: flag in the chat table and the cache, lease extension, expiry after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from chatsync.alerting import alerts
from chatsync.events import cache
from chatsync.ops.freeze import expire, freeze, unfreeze

CHATSYNC = str(Path(sys.executable).with_name("chatsync"))


def _flag(db, room: int) -> bool:
    return db.execute("SELECT writes_frozen FROM chat.chat_rooms WHERE room_id = %s", (room,)).fetchone()[0]


def test_freeze_sets_table_and_cache_and_unfreeze_resumes(db, redis_settings):
    from chatsync_devtools.simulate import simulate

    simulate(redis_settings, rooms=5, members=3, drift=0, seed=1)
    cache.resync(redis_settings)
    client = redis.Redis.from_url(redis_settings.redis_url)
    key = f"{redis_settings.redis_prefix}room:2"
    out = freeze(redis_settings, [2, 999], "major inconsistency on room 2; drop table chat; -- $(rm -rf /)", 600)
    assert out["frozen"] == [2] and out["no_chat_room"] == [999] and out["cache_error"] is None
    assert _flag(db, 2) is True and client.hget(key, "writes_frozen") == b"1"
    reason = db.execute("SELECT reason FROM chatsync.freezes WHERE room_id = 2").fetchone()[0]
    assert reason == "major inconsistency on room 2; drop table chat; -- $(rm -rf /)"  # stored as given
    assert cache.verify(redis_settings).total == 0
    assert unfreeze(redis_settings, [2])["writes_resumed"] == [2]
    assert _flag(db, 2) is False and client.hget(key, "writes_frozen") == b"0"
    client.close()


def test_a_lease_ends_by_itself_after_a_crash_and_says_so(db, clean_db):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=4, members=2, drift=0, seed=2)
    sent = []

    def capture(kind, message, context):
        sent.append((kind, message))

    alerts.register(capture)
    try:
        freeze(clean_db, [1, 3], "procedure started", 3600)
        freeze(clean_db, [3], "procedure renewed", 3600)
        # the procedure "died": its lease on room 1 ran out
        db.execute("UPDATE chatsync.freezes SET expires_at = now() - interval '1 s' WHERE room_id = 1")
        out = expire(clean_db)
        assert out["unfrozen"] == [1] and _flag(db, 1) is False and _flag(db, 3) is True
        assert sent and sent[-1][0] == "freeze_lease_expired" and "[1]" in sent[-1][1]
        assert expire(clean_db)["unfrozen"] == []  # nothing more to lift
    finally:
        alerts.unregister(capture)


def test_freeze_cli_contract(db, clean_db):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=3, members=2, drift=0, seed=3)
    env = {**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url}
    done = subprocess.run([CHATSYNC, "freeze", "2", "--reason", "check", "--ttl", "120", "--json"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frozen"] == [2] and _flag(db, 2) is True
    bad = subprocess.run([CHATSYNC, "freeze", "2", "--reason", " ", "--json"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--reason is required" in bad.stderr
    done = subprocess.run([CHATSYNC, "unfreeze", "2", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["writes_resumed"] == [2] and _flag(db, 2) is False


def test_freeze_cli_refuses_a_room_without_chat_room_and_writes_nothing(db, clean_db):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=3, members=2, drift=0, seed=3)
    env = {**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url}
    refused = subprocess.run([CHATSYNC, "freeze", "99999999", "--reason", "x", "--json"], env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert refused.stderr.strip() == ("chatsync freeze: configuration error: room 99999999 has no chat room "
                                      "(chat.chat_rooms): nothing frozen")
    assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0


def test_a_required_chat_room_missing_rolls_back_the_other_rooms_too(db, clean_db):
    from chatsync.errors import ConfigError
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=3, members=2, drift=0, seed=3)
    with pytest.raises(ConfigError, match=r"^rooms 998, 999 have no chat room \(chat.chat_rooms\): nothing frozen$"):
        freeze(clean_db, [2, 999, 998], "x", 60, require_chat_room=True)
    assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0 and _flag(db, 2) is False
    # the major-inconsistency procedure's call: rooms without a chat room are leased and reported
    assert freeze(clean_db, [2, 999], "x", 60)["no_chat_room"] == [999]


def test_unfreeze_cli_of_a_room_not_frozen_says_so_and_succeeds(db, clean_db):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=3, members=2, drift=0, seed=3)
    env = {**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url}
    done = subprocess.run([CHATSYNC, "unfreeze", "3", "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unfrozen"] == [] and "room 3 has no freeze lease: nothing lifted" in done.stderr
    assert _flag(db, 3) is False
