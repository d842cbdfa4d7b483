"""Security: text and names holding SQL and shell metacharacters go through every path unharmed
(property-based, Hypothesis), and chatsync runs under a role that can touch nothing but the chat
tables (read the room tables) and its own schema."""

from __future__ import annotations

import html
import itertools
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone

import psycopg
import pytest
import redis
import yaml
from conftest import sides_equal
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chatsync.consistency.detect import detect
from chatsync.consistency.engine import check
from chatsync.consistency.repair import repair, wal_compression
from chatsync.consistency.rollback import rollback
from chatsync.consistency.scope import Scope
from chatsync.db.statements import read_sql
from chatsync.events.worker import Worker
from chatsync.ops import deploy, freeze

META = "'\";\\$`|&<>(){}[]%*?!#~^=\n\t -"
PAYLOADS = ["'; DROP TABLE chat.chat_participants; --", "$(touch /tmp/chatsync_pwned)", "`id`; rm -rf ~",
            "<script>alert(1)</script>", "%(run_id)s %s {ops} {}", "\\' OR 1=1 --", "Robert'); DROP TABLE rooms;--"]
nasty = st.one_of(st.sampled_from(PAYLOADS),
                  st.text(st.one_of(st.sampled_from(list(META)), st.characters(exclude_characters="\x00",
                                                                              exclude_categories=("Cs",))),
                          min_size=1, max_size=60))
FEW = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@hyp_settings(max_examples=30, **FEW)
# a blank reason is refused (test_freeze): the reason here always has something to show
@given(reason=nasty.filter(str.strip), by=nasty, event_id=nasty, type_=nasty, version=nasty)
@example(reason=PAYLOADS[0], by=PAYLOADS[1], event_id=PAYLOADS[3], type_=PAYLOADS[4], version=PAYLOADS[2])
# shrunk by Hypothesis once
@example(reason=PAYLOADS[0], by=PAYLOADS[0], event_id="'", type_=PAYLOADS[0], version=PAYLOADS[0])
def test_free_text_is_stored_shown_and_escaped_verbatim(db, world, reason, by, event_id, type_, version):
    from fastapi.testclient import TestClient

    from chatsync.web.app import create_app

    # freeze reason and author: stored as given, lifted again
    assert freeze.freeze(world, [3], reason, 600, by=by)["frozen"] == [3]
    assert db.execute("SELECT reason, frozen_by FROM chatsync.freezes WHERE room_id = 3").fetchone() == (reason, by)
    assert freeze.unfreeze(world, [3])["writes_resumed"] == [3]
    # an event whose fields are text: dead-lettered with its raw entry kept, the reason naming it
    client = redis.Redis.from_url(world.redis_url)
    now = datetime.now(timezone.utc).isoformat()
    client.xadd(world.events_stream, {"event_id": event_id, "type": type_, "room_id": "2", "occurred_at": now})
    client.close()
    worker = Worker(world, "w-security", block_ms=50)
    worker.run(until_idle=True, max_seconds=30)
    assert worker.stats.dead_letters == 1
    row = db.execute(
        "SELECT event_id, raw->>'type', reason FROM chatsync.dead_letters ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row[0] == event_id and row[1] == type_ and row[2] == f"unknown event type {type_!r}"
    # the health page shows them escaped: the markup is text, never markup
    page = TestClient(create_app(lambda: world)).get("/health").text
    assert f"<td>{html.escape(event_id)}</td>" in page
    if any(c in event_id for c in "<>&\"'"):  # the cell holds it escaped, never as written
        assert f"<td>{event_id}</td>" not in page
    # a deployed version as the post-deploy check records it
    report = deploy.record(world, version, datetime.now(timezone.utc), {"pending_migrations": []},
                           {"rows_to_change": 0, "counts": {}, "validation": {"passed": True}})
    assert db.execute("SELECT version, report->>'version' FROM chatsync.deploy_checks ORDER BY id DESC LIMIT 1"
                      ).fetchone() == (version, version) == (report["version"], version)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}  # nothing was executed from any of it


def test_cli_arguments_are_never_run_by_a_shell(db, clean_db, tmp_path):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=5, members=3, drift=0, seed=2)
    target = tmp_path / "pwned"
    reason = f"$(touch {target}); `touch {target}`; DROP TABLE chat.chat_rooms; --"
    env = {**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url}
    done = subprocess.run([sys.executable, "-m", "chatsync.cli", "freeze", "2", "--reason", reason, "--ttl", "60"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert db.execute("SELECT reason FROM chatsync.freezes WHERE room_id = 2").fetchone()[0] == reason
    assert not target.exists() and db.execute("SELECT count(*) FROM chat.chat_rooms").fetchone()[0] == 5


# -- table and column names from the mapping -------------------------------------------------------

def _ident_ok(s: str) -> bool:
    return 0 < len(s.encode()) <= 40 and s == s.strip() and "\x00" not in s and "%" not in s


ident = st.one_of(st.sampled_from(['x"; DROP TABLE room.rooms; --', "a b", "$HOME", "`id`", "O'Brien", "{ops}",
                                   "(run_id)s", "Ünïcødé"]),
                  st.text(st.one_of(st.sampled_from(list(META.replace("\n", "").replace("\t", "").replace("%", ""))),
                                    st.characters(exclude_characters="\x00", exclude_categories=("Cs", "Cc"))),
                          min_size=1, max_size=12)).filter(_ident_ok)
_serial = itertools.count()


def _reference_schema_named(conn, names: dict) -> None:
    I = sql.Identifier  # noqa: E741
    rs, cs = names["room_schema"], names["chat_schema"]
    c = names["columns"]
    conn.execute(sql.SQL("CREATE SCHEMA {}; CREATE SCHEMA {}").format(I(rs), I(cs)))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigint PRIMARY KEY, status text, is_public boolean, chat_enabled boolean, "
        "archived_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now())").format(I(rs, names["room_rooms"])))
    conn.execute(sql.SQL(
        "CREATE TABLE {} ({} bigint, user_id bigint, {} text, {} bigint, banned_at timestamptz, "
        "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({}, user_id))").format(
        I(rs, names["room_participants"]), I(c["room_id"]), I(c["role"]), I(c["permissions"]), I(c["room_id"])))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (room_id bigint PRIMARY KEY, status text, is_public boolean, chat_enabled boolean, "
        "archived boolean NOT NULL DEFAULT false, writes_frozen boolean NOT NULL DEFAULT false, "
        "updated_at timestamptz NOT NULL DEFAULT now())").format(I(cs, names["chat_rooms"])))
    conn.execute(sql.SQL(
        "CREATE TABLE {} ({} bigint, user_id bigint, {} text, {} bigint, banned boolean NOT NULL DEFAULT false, "
        "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({}, user_id))").format(
        I(cs, names["chat_participants"]), I(c["room_id"]), I(c["role"]), I(c["permissions"]), I(c["room_id"])))
    conn.execute(sql.SQL(
        "INSERT INTO {rr} VALUES (1, 'LIVE', true, true, NULL), (2, 'ENDED', false, true, now());"
        "INSERT INTO {rp} ({rid}, user_id, {role}, {perm}) "
        "VALUES (1, 10, 'OWNER', 7), (1, 11, 'MEMBER', 3), (2, 20, 'GUEST', 1);"
        "INSERT INTO {cr} (room_id, status, is_public, chat_enabled, archived) "
        "VALUES (1, 'LIVE', true, true, false), (3, 'LIVE', true, true, false);"
        "INSERT INTO {cp} ({rid}, user_id, {role}, {perm}) "
        "VALUES (1, 10, 'ADMIN', 7), (1, 12, 'MEMBER', 3), (2, 20, 'GUEST', 1)"
    ).format(rr=I(rs, names["room_rooms"]), rp=I(rs, names["room_participants"]), cr=I(cs, names["chat_rooms"]),
             cp=I(cs, names["chat_participants"]), rid=I(c["room_id"]), role=I(c["role"]), perm=I(c["permissions"])))


def _mapping_for(names: dict) -> dict:
    c = names["columns"]
    room_cols = {"id": "id", "status": "status", "is_public": "is_public", "chat_enabled": "chat_enabled",
                 "archived_at": "archived_at", "updated_at": "updated_at"}
    part = {"room_id": c["room_id"], "user_id": "user_id", "role": c["role"], "permissions": c["permissions"],
            "updated_at": "updated_at"}
    return {
        "room_rooms": {"schema": names["room_schema"], "name": names["room_rooms"], "columns": room_cols},
        "room_participants": {"schema": names["room_schema"], "name": names["room_participants"],
                              "columns": {**part, "banned_at": "banned_at"}},
        "chat_rooms": {"schema": names["chat_schema"], "name": names["chat_rooms"],
                       "columns": {"room_id": "room_id", "status": "status", "is_public": "is_public",
                                   "chat_enabled": "chat_enabled", "archived": "archived",
                                   "writes_frozen": "writes_frozen", "updated_at": "updated_at"}},
        "chat_participants": {"schema": names["chat_schema"], "name": names["chat_participants"],
                              "columns": {**part, "banned": "banned"}},
    }


@hyp_settings(max_examples=12, **FEW)
@given(st.lists(ident, min_size=9, max_size=9))
@example(['room"; DROP SCHEMA chat CASCADE; --', "chat $(id)", "rooms;", "people`", "c.rooms", "c'parts",
          "room id", "ro{le}", "perm$1"])
def test_mapped_names_with_metacharacters_are_always_quoted(db, clean_db, tmp_path, names):
    n = next(_serial)
    names = [f"{x}{n}_{i}" for i, x in enumerate(names)]  # distinct, and new for each example
    layout = {"room_schema": names[0], "chat_schema": names[1], "room_rooms": names[2],
              "room_participants": names[3], "chat_rooms": names[4], "chat_participants": names[5],
              "columns": {"room_id": names[6], "role": names[7], "permissions": names[8]}}
    mapping = tmp_path / f"mapping{n}.yaml"
    mapping.write_text(yaml.safe_dump(_mapping_for(layout), allow_unicode=True))
    settings = replace(clean_db, mapping_path=str(mapping), repair_max_fraction=1.0, repair_max_changes=100)
    _reference_schema_named(db, layout)
    try:
        found = detect(settings, Scope("full"))
        assert {k: v for k, v in found.counts.items() if v} == {
            "missing_chat_room": 1, "orphan_chat_room": 1, "missing_participant": 1, "orphan_participant": 1,
            "role_mismatch": 1}
        fixed = repair(settings, found.run_id)
        assert fixed.repaired == 5 and detect(settings, Scope("full")).total == 0
        assert rollback(settings, found.run_id).restored == 5
        assert detect(settings, Scope("full")).counts == found.counts
        # the reference tables nobody mapped were never touched
        assert sides_equal(db) == {"rooms": 0, "participants": 0}
    finally:
        db.execute(sql.SQL("DROP SCHEMA {} CASCADE; DROP SCHEMA {} CASCADE").format(
            sql.Identifier(layout["room_schema"]), sql.Identifier(layout["chat_schema"])))


def test_validation_quotes_mapped_names_too(db, clean_db, tmp_path):
    layout = {"room_schema": 'r"; --', "chat_schema": "c $(id)", "room_rooms": "rooms;", "room_participants": "p`",
              "chat_rooms": "c'rooms", "chat_participants": "c.parts",
              "columns": {"room_id": "room id", "role": "ro{le}", "permissions": "perm$1"}}
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(_mapping_for(layout)))
    settings = replace(clean_db, mapping_path=str(mapping), repair_max_fraction=1.0, repair_max_changes=100)
    _reference_schema_named(db, layout)
    try:
        summary = check(settings, Scope("full"), do_repair=True, do_validate=True)
        assert summary.repaired == 5 and summary.validation["passed"] is True, summary.validation
    finally:
        db.execute(sql.SQL("DROP SCHEMA {} CASCADE; DROP SCHEMA {} CASCADE").format(
            sql.Identifier(layout["room_schema"]), sql.Identifier(layout["chat_schema"])))


def test_a_mapped_name_holding_a_percent_sign_is_refused_clearly(tmp_path):
    from chatsync.errors import ConfigError
    from chatsync.model.mapping import load_mapping

    layout = {"room_schema": "room", "chat_schema": "chat", "room_rooms": "rooms",
              "room_participants": "room_participants", "chat_rooms": "chat_rooms",
              "chat_participants": "chat_participants",
              "columns": {"room_id": "room_id", "role": "role", "permissions": "perm%s"}}
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(_mapping_for(layout)))
    with pytest.raises(ConfigError, match=r"room_participants column permissions 'perm%s': .* holds '%'"):
        load_mapping(str(mapping))


# -- a role with the least privileges ---------------------------------------------------------------

@pytest.fixture
def restricted(settings):
    """A database with the application's tables (created by an administrator) and a login role
    holding only what `chatsync grants` gives."""
    from chatsync.ops import grants

    role, name = f"chatsync_role_{os.getpid()}", f"chatsync_test_{os.getpid()}_role"
    server = make_conninfo(settings.database_url, dbname="postgres")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(settings.database_url, dbname=name)
    # (two-database runs of the suite: the room side read through its own connection, here too)
    admin_settings = replace(settings, database_url=url, room_database_url=make_conninfo(
        url, application_name="chatsync room side") if settings.two_databases else None)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(read_sql("reference_schema_room"))
        admin.execute(read_sql("reference_schema_chat"))
        admin.execute("CREATE SCHEMA secret; CREATE TABLE secret.payroll (who text, amount int); "
                      "INSERT INTO secret.payroll VALUES ('ceo', 1)")
    applied = grants.apply(admin_settings, role)
    as_role = replace(admin_settings, database_url=make_conninfo(url, user=role), repair_max_fraction=1.0,
                      room_database_url=make_conninfo(admin_settings.room_database_url, user=role)
                      if admin_settings.room_database_url else None)
    try:
        yield admin_settings, as_role, role, applied
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))  # its parameter grant
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_chatsync_runs_under_a_role_that_can_touch_only_its_tables(restricted):
    from chatsync.db.migrations import migrate
    from chatsync_devtools.simulate import simulate

    admin, as_role, role, applied = restricted
    assert conninfo_to_dict(as_role.database_url)["user"] == role
    assert any("GRANT SELECT ON" in s and '"room"."rooms"' in s for s in applied)
    migrate(as_role)  # the role owns its schema: it runs the migrations itself
    with psycopg.connect(as_role.database_url) as conn:  # granted: its repairs compress their WAL
        assert wal_compression(conn, as_role) == "lz4"
    simulate(admin, rooms=20, members=6, drift=0.05, seed=12)  # the application writes both sides
    summary = check(as_role, Scope("full"), do_repair=True, do_validate=True)
    assert summary.repaired > 0 and summary.validation["passed"] and summary.remaining == 0
    assert rollback(as_role, summary.run_id).restored == summary.repaired
    assert freeze.freeze(as_role, [4], "role test", 60, by="test")["frozen"] == [4]
    assert freeze.unfreeze(as_role, [4])["writes_resumed"] == [4]
    denied = {
        "write the room side": "UPDATE room.room_participants SET role = 'OWNER'",
        "delete room rows": "DELETE FROM room.rooms",
        "drop a chat table": "DROP TABLE chat.chat_participants",
        "alter a chat table": "ALTER TABLE chat.chat_rooms ADD COLUMN x int",
        "read another schema": "SELECT * FROM secret.payroll",
        "create a schema": "CREATE SCHEMA evil",
        "create in the app schemas": "CREATE TABLE chat.evil (x int)",
        "create in public": "CREATE TABLE public.evil (x int)",
        "read the role catalog": "SELECT rolpassword FROM pg_authid",
    }
    with psycopg.connect(as_role.database_url, autocommit=True) as conn:
        for what, statement in denied.items():
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
                pytest.fail(f"the role could {what}")
        assert conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"
                            ).fetchone() == (role, False)
