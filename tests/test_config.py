"""Bad configuration fails at once with a message naming what is wrong; migrations are idempotent;
transient database errors are retried."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from chatsync.config import Settings
from chatsync.consistency.detect import detect
from chatsync.db.migrations import migrate, pending
from chatsync.errors import ConfigError
from chatsync.model.mapping import load_mapping


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
    from chatsync.consistency.repair import repair

    repair(settings, found.run_id)
    assert db.execute(
        "SELECT rid, uid, grade, perms, banned FROM app.members"
    ).fetchall() == [(1, 5, "MEMBER", 3, False)]
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
    from chatsync.db.connection import connect
    from chatsync.errors import TransientError

    with pytest.raises(TransientError, match="cannot connect"):
        connect(replace(clean_db, database_url="postgresql://postgres@127.0.0.1:1/x"))
    with pytest.raises(ConfigError, match="does not exist"):
        connect(replace(clean_db, database_url="postgresql://postgres@127.0.0.1:5432/chatsync_no_such_db"))


def test_an_unknown_chatsync_variable_is_refused_naming_the_closest_setting(monkeypatch):
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_CHANGE", "5")
    with pytest.raises(ConfigError, match=re.escape(
            "unknown environment variable: CHATSYNC_REPAIR_MAX_CHANGE (did you mean CHATSYNC_REPAIR_MAX_CHANGES?)")):
        Settings.from_env()
    monkeypatch.setenv("chatsync_workers", "2")
    monkeypatch.setenv("CHATSYNC_NOTHING_LIKE_IT", "1")
    with pytest.raises(ConfigError, match=re.escape(
            "unknown environment variables: CHATSYNC_NOTHING_LIKE_IT (no chatsync setting has that name), "
            "CHATSYNC_REPAIR_MAX_CHANGE (did you mean CHATSYNC_REPAIR_MAX_CHANGES?), "
            "chatsync_workers (did you mean CHATSYNC_WORKERS?)")):
        Settings.from_env()
    # the Airflow Variable's source is checked by its own code (unknown keys): from_sources stays as it was
    assert Settings.from_sources({"CHATSYNC_REPAIR_MAX_CHANGE": "5"}).repair_max_changes == 1000


TYPOS = {"CHATSYNC_REPAIR_MAX_CHANGE", "CHATSYNC_NOTHING_LIKE_IT"}  # the tests' own, on purpose


def _names_in_the_repository() -> set[str]:
    """Every CHATSYNC_* name the code, configuration and documentation use."""
    skip = {".venv", ".uv", ".git", ".hypothesis", "benchmarks", "reports", ".chatsync", "__pycache__"}
    found = set()
    for folder, dirs, files in os.walk(Path(__file__).resolve().parent.parent):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            if Path(name).suffix in (".py", ".yml", ".yaml", ".sh", ".md", ".cfg", ".toml") or name in (
                    "Makefile", "Dockerfile", ".env.example", "run"):
                text = (Path(folder) / name).read_text(errors="replace")
                found |= set(re.findall(r"(?<![A-Z_])CHATSYNC_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])", text))
    return found - TYPOS



def test_every_chatsync_name_in_use_is_a_setting_or_allowed(monkeypatch):
    names = _names_in_the_repository()
    assert {"CHATSYNC_HOME", "CHATSYNC_FAULT_PAUSE_BEFORE_ACK_MS", "CHATSYNC_DB_PASSWORD",
            "CHATSYNC_TEST_ADMIN_URL"} <= names  # the scan sees them
    settings = {"CHATSYNC_" + f.upper() for f in Settings.__dataclass_fields__}
    for name in names - settings:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("CHATSYNC_ROOM_DATABASE_URL", "postgresql://reserved")
    Settings.from_env()  # none of them is refused


@pytest.mark.parametrize("name, value, message", [
    ("CHATSYNC_WORKERS", "\u0661\u0662", "CHATSYNC_WORKERS='\u0661\u0662' is not a whole number"),
    ("CHATSYNC_WORKERS", "1_2", "CHATSYNC_WORKERS='1_2' is not a whole number"),
    ("CHATSYNC_WORKERS", " 4 ", "CHATSYNC_WORKERS=' 4 ' is not a whole number"),
    ("CHATSYNC_REPAIR_MAX_CHANGES", "99999999999999999999", "is out of range (a 64-bit whole number"),
    ("CHATSYNC_RETRY_BASE_SECONDS", "nan", "CHATSYNC_RETRY_BASE_SECONDS='nan' is not a number"),
    ("CHATSYNC_RETRY_MAX_SECONDS", "inf", "CHATSYNC_RETRY_MAX_SECONDS='inf' is not a number"),
    ("CHATSYNC_RETRY_BASE_SECONDS", "-1", "CHATSYNC_RETRY_BASE_SECONDS=-1.0: must not be negative"),
    ("CHATSYNC_LOCK_TIMEOUT_MS", "2147483648", "must be at most 2147483647 (PostgreSQL's limit)"),
    ("CHATSYNC_DATABASE_URL", "postgresql://u:s3cret@h:notaport/x",
     "port 'notaport' is not a whole number in 1..65535"),
    ("CHATSYNC_DATABASE_URL", "host=h port=5432,0", "port '0' is not a whole number in 1..65535"),
    ("CHATSYNC_REDIS_URL", "redis://:s3cret@h:notaport/0", "CHATSYNC_REDIS_URL is not a valid Redis URL"),
    ("CHATSYNC_REDIS_URL", "redis://h:0/0", "port 0 is not a whole number in 1..65535"),
    ("CHATSYNC_REDIS_URL", "http://h:6379/0", "CHATSYNC_REDIS_URL is not a valid Redis URL"),
])
def test_values_that_would_fail_later_are_refused_at_once(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        Settings.from_sources({name: value})
    assert "s3cret" not in str(refused.value)


def test_urls_refused_even_past_the_settings_check(clean_db):
    """Settings built with replace() skip check(): connecting still fails as configuration, once."""
    from chatsync.db.connection import connect
    from chatsync.events.cache import client_for

    for url in ("postgresql://postgres@127.0.0.1:notaport/x", "postgresql://postgres@127.0.0.1:99999/x"):
        with pytest.raises(ConfigError, match="cannot use the chatsync database"):
            connect(replace(clean_db, database_url=url))
    with pytest.raises(ConfigError, match="CHATSYNC_REDIS_URL is not a valid Redis URL"):
        client_for(replace(clean_db, redis_url="redis://127.0.0.1:notaport/0"))
    Settings.from_sources({"CHATSYNC_DATABASE_URL": clean_db.database_url,
                           "CHATSYNC_REDIS_URL": "redis://127.0.0.1:6379/0"})  # good ones pass
