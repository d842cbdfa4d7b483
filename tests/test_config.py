"""Bad configuration fails at once with a message naming what is wrong; migrations are idempotent;
transient database errors are retried."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest

from chatsync.config import Settings
from chatsync.diff import detect
from chatsync.errors import ConfigError
from chatsync.mapping import load_mapping
from chatsync.migrations import migrate, pending


def test_bad_settings_name_the_variable():
    with pytest.raises(ConfigError, match="CHATSYNC_REPAIR_MAX_FRACTION='x' is not a number"):
        Settings.from_sources({"CHATSYNC_REPAIR_MAX_FRACTION": "x"})
    with pytest.raises(ConfigError, match="CHATSYNC_REPAIR_MAX_CHANGES=0: must be a positive"):
        Settings.from_sources({"CHATSYNC_REPAIR_MAX_CHANGES": "0"})
    with pytest.raises(ConfigError, match="CHATSYNC_REPAIR_WAL_COMPRESSION='gzip': must be one of default, "):
        Settings.from_sources({"CHATSYNC_REPAIR_WAL_COMPRESSION": "gzip"})
    with pytest.raises(ConfigError, match="no database configured"):
        Settings().require_database()


def test_mapping_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "mapping.yaml"
    bad.write_text("room_rooms:\n  table: rooms\n")
    with pytest.raises(ConfigError, match="room_rooms.table='rooms' must be schema.table"):
        load_mapping(str(bad))
    default = (Settings().mapping_path)
    text = open(default).read().replace("banned: banned,", "")
    bad.write_text(text)
    with pytest.raises(ConfigError, match="chat_participants.columns lacks banned"):
        load_mapping(str(bad))


def test_mapping_checked_against_the_database(clean_db, tmp_path):
    text = open(clean_db.mapping_path).read().replace("permissions: permissions,\n            banned: banned",
                                                      "permissions: perms,\n            banned: banned")
    wrong = tmp_path / "mapping.yaml"
    wrong.write_text(text)
    with pytest.raises(ConfigError, match=r"column chat.chat_participants.perms \(chat_participants.permissions\) "
                                          r"does not exist"):
        detect(replace(clean_db, mapping_path=str(wrong)))


def test_mapping_points_at_other_tables(db, clean_db, tmp_path):
    """A user's own tables with other names work by changing the mapping only."""
    db.execute("CREATE SCHEMA IF NOT EXISTS app")
    db.execute("CREATE TABLE IF NOT EXISTS app.members (rid bigint, uid bigint, grade text, perms bigint, "
               "banned boolean NOT NULL DEFAULT false, changed timestamptz NOT NULL DEFAULT now(), "
               "PRIMARY KEY (rid, uid))")
    db.execute("TRUNCATE app.members")
    db.execute("INSERT INTO room.rooms (id, name, status) VALUES (1, 'x', 'LIVE')")
    db.execute("INSERT INTO chat.chat_rooms (room_id, status, is_public, chat_enabled) VALUES (1, 'LIVE', true, true)")
    db.execute("INSERT INTO room.room_participants (room_id, user_id, role, permissions) VALUES (1, 5, 'MEMBER', 3)")
    text = open(clean_db.mapping_path).read().replace(
        "table: chat.chat_participants\n  columns: {room_id: room_id, user_id: user_id, role: role, "
        "permissions: permissions,\n            banned: banned, updated_at: updated_at}",
        "table: app.members\n  columns: {room_id: rid, user_id: uid, role: grade, permissions: perms,\n"
        "            banned: banned, updated_at: changed}")
    assert "app.members" in text
    own = tmp_path / "own.yaml"
    own.write_text(text)
    settings = replace(clean_db, mapping_path=str(own))
    found = detect(settings)
    assert found.counts["missing_participant"] == 1
    from chatsync.repair import repair

    repair(settings, found.run_id)
    assert db.execute("SELECT rid, uid, grade, perms, banned FROM app.members").fetchall() == [(1, 5, "MEMBER", 3, False)]
    db.execute("DROP SCHEMA app CASCADE")


def test_migrations_are_versioned_and_idempotent(settings):
    assert migrate(settings, reference_schema=True) == []
    assert pending(settings) == []
    with psycopg.connect(settings.database_url) as conn:
        versions = conn.execute("SELECT version, name FROM chatsync.schema_migrations ORDER BY 1").fetchall()
    assert versions[0] == (1, "ops_core")


def test_lock_timeout_is_retried_with_backoff(db, clean_db, caplog):
    """A real transient error: another session holds the chat table; detect waits it out."""
    db.execute("INSERT INTO room.rooms (id, name, status) VALUES (1, 'x', 'LIVE')")
    settings = replace(clean_db, lock_timeout_ms=200, retry_base_seconds=0.3, retry_attempts=8)
    holder = psycopg.connect(clean_db.database_url)
    holder.execute("LOCK TABLE chat.chat_rooms IN ACCESS EXCLUSIVE MODE")
    releaser = threading.Timer(1.5, holder.commit)
    releaser.start()
    t0 = time.perf_counter()
    with caplog.at_level("WARNING", logger="chatsync.db"):
        found = detect(settings)
    releaser.join()
    holder.close()
    assert found.counts["missing_chat_room"] == 1
    assert time.perf_counter() - t0 >= 1.0
    assert "transient error" in caplog.text


def test_unreachable_database_is_transient_and_missing_database_is_config(clean_db):
    from chatsync.db import connect
    from chatsync.errors import TransientError

    with pytest.raises(TransientError, match="cannot connect"):
        connect(replace(clean_db, database_url="postgresql://postgres@127.0.0.1:1/x"))
    with pytest.raises(ConfigError, match="does not exist"):
        connect(replace(clean_db, database_url="postgresql://postgres@127.0.0.1:5432/chatsync_no_such_db"))
