"""A platform's own schema, unlike the reference one: other schema, table and column names, uuid,
text or integer keys, Postgres enums on the room side with values of the platform's own (HOST ...)
and text on the chat side, permission masks with bit 62 set. Every test runs on a database of its
own kind (keys shape chatsync's ops tables), on the machine's real Postgres and Redis."""

from __future__ import annotations

import json
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import replace

import psycopg
import pytest
from conftest import ADMIN_URL, REPO, TEST_DB, _admin
from psycopg import sql

KINDS = ("uuid", "text", "integer")
BIT_62 = 1 << 62
ROOMS, MEMBERS = 10, 3

ROOM_SCHEMA = """
CREATE SCHEMA venue;
CREATE TYPE venue.event_state AS ENUM ('SCHEDULED', 'ON_AIR', 'WRAPPED', 'CALLED_OFF');
CREATE TYPE venue.attendee_role AS ENUM ('HOST', 'CO_HOST', 'PANELIST', 'VIEWER');
CREATE TABLE venue.events (
    event_key {k} PRIMARY KEY, state venue.event_state NOT NULL, listed boolean NOT NULL,
    chat_on boolean NOT NULL, closed_at timestamptz, modified timestamptz NOT NULL DEFAULT now());
CREATE TABLE venue.attendees (
    event_key {k} NOT NULL REFERENCES venue.events, member_key {k} NOT NULL,
    part venue.attendee_role NOT NULL, grants bigint NOT NULL, blocked_at timestamptz,
    modified timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (event_key, member_key));
"""
CHAT_SCHEMA = """
CREATE SCHEMA messaging;
CREATE TABLE messaging.channels (
    channel_key {k} PRIMARY KEY, state text, listed boolean, chat_on boolean, is_closed boolean,
    frozen boolean NOT NULL DEFAULT false, touched timestamptz NOT NULL DEFAULT now());
CREATE TABLE messaging.members (
    channel_key {k} NOT NULL, member_key {k} NOT NULL, part text, grants bigint, is_blocked boolean,
    touched timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (channel_key, member_key));
"""
SCHEMA = ROOM_SCHEMA + CHAT_SCHEMA

MAPPING = """
room_rooms:
  table: venue.events
  columns: {id: event_key, status: state, is_public: listed, chat_enabled: chat_on,
            archived_at: closed_at, updated_at: modified}
room_participants:
  table: venue.attendees
  columns: {room_id: event_key, user_id: member_key, role: part, permissions: grants,
            banned_at: blocked_at, updated_at: modified}
chat_rooms:
  table: messaging.channels
  columns: {room_id: channel_key, status: state, is_public: listed, chat_enabled: chat_on,
            archived: is_closed, writes_frozen: frozen, updated_at: touched}
chat_participants:
  table: messaging.members
  columns: {room_id: channel_key, user_id: member_key, role: part, permissions: grants,
            banned: is_blocked, updated_at: touched}
domains:
  status: {allowed: [SCHEDULED, ON_AIR, WRAPPED, CALLED_OFF]}
  role: {allowed: [HOST, CO_HOST, PANELIST, VIEWER]}
  permissions: {min: 0}
"""

EXPECTED = {"missing_chat_room": 1, "orphan_chat_room": 1, "room_state_mismatch": 2, "missing_participant": 4,
            "orphan_participant": 3, "role_mismatch": 1, "permissions_mismatch": 1, "ban_mismatch": 1}


def key(kind: str, what: str, n: int):
    """The n-th room or user id of a kind: random-looking uuids, strings in mixed case (their
    order differs between collations and code points), whole numbers spread out."""
    if kind == "uuid":
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{what}/{n}")
    if kind == "text":
        return f"{'Ev' if n % 2 else 'ev'}-{what}-{n:03d}"
    return (n + 1) * 7919 + (1 if what == "user" else 0)


@contextmanager
def scratch_database(suffix: str, *statements: str):
    """A database of this test session's own with the platform's tables (statements), dropped after;
    its URL."""
    from chatsync.model import catalog

    name = f"{TEST_DB}_{suffix}"
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            for statement in statements:
                c.execute(statement)
        catalog.forget()  # another database under a URL seen before would keep the old types
        yield url
    finally:
        catalog.forget()
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def room_key_type(kind: str) -> str:
    """The room side's key type: string keys in another type and collation than the chat side's."""
    return 'character varying(40) COLLATE "C"' if kind == "text" else kind


def chat_key_type(kind: str) -> str:
    return "character varying(40)" if kind == "text" else kind


class Platform:
    """One kind's database: the platform's tables, chatsync's settings for them."""

    def __init__(self, kind: str, settings):
        self.kind, self.settings = kind, settings

    def room(self, i: int):
        return key(self.kind, "room", i)

    def user(self, i: int, j: int):
        return key(self.kind, "user", i * 10 + j)

    def conn(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.database_url, autocommit=True)

    def room_conn(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.room_url(), autocommit=True)

    def fill(self) -> None:
        """ROOMS events of MEMBERS attendees each, the chat side equal to them."""
        states = ("SCHEDULED", "ON_AIR", "WRAPPED", "CALLED_OFF")
        roles = ("HOST", "CO_HOST", "PANELIST", "VIEWER")
        events = [(self.room(i), states[i % 4], i % 2 == 0, "2026-01-01T00:00Z" if i == 5 else None)
                  for i in range(ROOMS)]
        attendees = [(self.room(i), self.user(i, j), roles[(i + j) % 4], BIT_62 | (i * 8 + j),
                      "2026-01-02T00:00Z" if (i, j) == (6, 1) else None) for i in range(ROOMS) for j in range(MEMBERS)]
        with self.room_conn() as c:
            c.execute("TRUNCATE venue.attendees, venue.events")
            c.cursor().executemany("INSERT INTO venue.events VALUES (%s, %s, %s, true, %s)", events)
            c.cursor().executemany("INSERT INTO venue.attendees VALUES (%s, %s, %s, %s, %s)", attendees)
        with self.conn() as c:
            c.execute("TRUNCATE messaging.members, messaging.channels")
            c.cursor().executemany("INSERT INTO messaging.channels (channel_key, state, listed, chat_on, is_closed) "
                                   "VALUES (%s, %s, %s, true, %s)",
                                   [(k, st, p, a is not None) for k, st, p, a in events])
            c.cursor().executemany("INSERT INTO messaging.members (channel_key, member_key, part, grants, is_blocked) "
                                   "VALUES (%s, %s, %s, %s, %s)", [(r, u, part, g, b is not None)
                                                                   for r, u, part, g, b in attendees])

    def drift(self) -> None:
        """One difference or more of every kind: EXPECTED."""
        with self.conn() as c:
            c.execute("DELETE FROM messaging.members WHERE channel_key = %s", (self.room(9),))
            c.execute("DELETE FROM messaging.channels WHERE channel_key = %s", (self.room(9),))  # 1 + 3 missing
            orphan = key(self.kind, "room", 99)
            c.execute("INSERT INTO messaging.channels (channel_key, state, listed, chat_on, is_closed) "
                      "VALUES (%s, 'ON_AIR', true, true, false)", (orphan,))
            c.cursor().executemany("INSERT INTO messaging.members (channel_key, member_key, part, grants, is_blocked) "
                          "VALUES (%s, %s, 'VIEWER', 1, false)",
                          [(orphan, self.user(99, 0)), (orphan, self.user(99, 1)), (self.room(3), self.user(3, 7))])
            c.execute("UPDATE messaging.channels SET state = 'WRAPPED' WHERE channel_key = %s", (self.room(1),))
            c.execute("UPDATE messaging.channels SET is_closed = true WHERE channel_key = %s", (self.room(2),))
            c.execute("UPDATE messaging.members SET part = 'VIEWER' WHERE channel_key = %s AND member_key = %s",
                      (self.room(0), self.user(0, 0)))  # HOST on the room side
            c.execute("UPDATE messaging.members SET grants = grants # %s WHERE channel_key = %s AND member_key = %s",
                      (BIT_62, self.room(0), self.user(0, 1)))  # bit 62 lost
            c.execute("UPDATE messaging.members SET is_blocked = true WHERE channel_key = %s AND member_key = %s",
                      (self.room(1), self.user(1, 0)))
            c.execute("DELETE FROM messaging.members WHERE channel_key = %s AND member_key = %s",
                      (self.room(2), self.user(2, 2)))

    def chat_rows(self) -> tuple[list, list]:
        with self.conn() as c:
            return (c.execute("SELECT channel_key, state, listed, chat_on, is_closed, frozen FROM messaging.channels "
                              "ORDER BY 1").fetchall(),
                    c.execute("SELECT channel_key, member_key, part, grants, is_blocked FROM messaging.members "
                              "ORDER BY 1, 2").fetchall())

    def differences(self) -> int:
        """The rules checked independently of chatsync's SQL (in Python, both sides read whole):
        rows that differ between the sides."""
        with self.room_conn() as c:
            rooms = set(c.execute("SELECT event_key, state::text, listed, chat_on, closed_at IS NOT NULL "
                                  "FROM venue.events").fetchall())
            members = set(c.execute("SELECT event_key, member_key, part::text, grants, blocked_at IS NOT NULL "
                                    "FROM venue.attendees").fetchall())
        with self.conn() as c:
            channels = set(c.execute("SELECT channel_key, state, listed, chat_on, is_closed "
                                     "FROM messaging.channels").fetchall())
            chat_members = set(c.execute("SELECT channel_key, member_key, part, grants, is_blocked "
                                         "FROM messaging.members").fetchall())
        return len(rooms ^ channels) + len(members ^ chat_members)


@pytest.fixture(scope="module", params=KINDS)
def platform(request, tmp_path_factory, settings):
    """A database per key kind with the platform's schema and chatsync initialised on it."""
    from chatsync.db.migrations import migrate

    kind = request.param
    schema = ROOM_SCHEMA.format(k=room_key_type(kind)) + CHAT_SCHEMA.format(k=chat_key_type(kind))
    with scratch_database(f"keys_{kind}", schema) as url:
        folder = tmp_path_factory.mktemp(f"keys_{kind}")
        (folder / "mapping.yaml").write_text(MAPPING)
        s = replace(settings, database_url=url, room_database_url=None, mapping_path=str(folder / "mapping.yaml"),
                    gx_dir=str(folder / "gx"), repair_max_fraction=1.0)  # a small schema: no "major" drift
        migrate(s)
        yield Platform(kind, s)


@pytest.fixture(scope="module", params=("uuid", "text"))
def two_db_platform(request, tmp_path_factory, settings):
    """The platform's room side in a database of its own (read only for chatsync), keyed by kind."""
    from chatsync.db.migrations import migrate

    kind = request.param
    with scratch_database(f"keys2_{kind}_room", ROOM_SCHEMA.format(k=room_key_type(kind))) as room_url, \
            scratch_database(f"keys2_{kind}_chat", CHAT_SCHEMA.format(k=chat_key_type(kind))) as chat_url:
        folder = tmp_path_factory.mktemp(f"keys2_{kind}")
        (folder / "mapping.yaml").write_text(MAPPING)
        s = replace(settings, database_url=chat_url, room_database_url=room_url,
                    mapping_path=str(folder / "mapping.yaml"), gx_dir=str(folder / "gx"), repair_max_fraction=1.0)
        migrate(s)
        yield Platform(kind, s)


def test_two_databases_with_the_key_type(two_db_platform):
    """The room side's copy, its fingerprints and the streamed key sets in the key type."""
    from chatsync.consistency.engine import check
    from chatsync.consistency.rollback import rollback
    from chatsync.consistency.scope import Scope

    p = two_db_platform
    p.fill()
    p.drift()
    drifted = p.chat_rows()
    summary = check(p.settings, Scope("full"), do_repair=True, do_validate=True)
    assert {k: v for k, v in summary.counts.items() if v} == EXPECTED
    assert summary.consistent, summary.to_dict()
    assert p.differences() == 0
    with p.conn() as c:  # the copy holds the room side's enums as text, keyed by the key type
        assert c.execute("SELECT count(*) FROM chatsync.mirror_room_participants").fetchone()[0] == ROOMS * MEMBERS
        assert c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                         "'chatsync.mirror_room_participants'::regclass AND attname = 'part'").fetchone()[0] == "text"
    with p.room_conn() as c:
        c.execute("UPDATE venue.attendees SET part = 'HOST', modified = now() WHERE event_key = %s", (p.room(7),))
    again = check(p.settings, Scope("rooms", rooms=(p.room(7),)), do_repair=True, do_validate=False)
    assert again.counts["role_mismatch"] == sum(1 for j in range(MEMBERS) if (7 + j) % 4 != 0)
    assert rollback(p.settings, again.run_id).skipped == []
    assert rollback(p.settings, summary.run_id).skipped == []
    assert p.chat_rows() == drifted


def test_init_gives_the_ops_tables_the_mapped_key_type(platform):
    from chatsync.model.keys import ops_key_columns

    column = {"uuid": "uuid", "text": "text", "integer": "bigint"}[platform.kind]
    with platform.conn() as c:
        found = ops_key_columns(c, platform.settings)
    tables = {t for t, _, _ in found}
    assert {"inconsistencies", "repair_audit", "sync_log", "freezes", "room_fingerprints", "cache_outbox",
            "fingerprint_changed_keys", "correction_plans"} <= tables
    assert {typ for _, _, typ in found} == {column}


def test_detect_repair_validate_rollback_on_the_platform_schema(platform):
    from chatsync.consistency.engine import check
    from chatsync.consistency.rollback import rollback
    from chatsync.consistency.scope import Scope

    platform.fill()
    clean = check(platform.settings, Scope("full"), do_repair=True, do_validate=True)
    assert clean.consistent and sum(clean.counts.values()) == 0  # enum vs text, bit 62: no false difference
    platform.drift()
    drifted = platform.chat_rows()
    summary = check(platform.settings, Scope("full"), do_repair=True, do_validate=True)
    assert {k: v for k, v in summary.counts.items() if v} == EXPECTED
    assert summary.consistent, summary.to_dict()
    assert summary.validation is not None and summary.validation["passed"], summary.validation
    assert platform.differences() == 0
    members = dict(((r, u), (part, grants)) for r, u, part, grants, _ in platform.chat_rows()[1])
    assert members[(platform.room(0), platform.user(0, 0))] == ("HOST", BIT_62)  # written in the chat type
    assert members[(platform.room(0), platform.user(0, 1))][1] == BIT_62 | 1
    undone = rollback(platform.settings, summary.run_id)
    assert undone.skipped == []
    assert platform.chat_rows() == drifted  # every repaired row back as it was, keys of the mapped type


def test_maintained_fingerprints_with_the_key_type(platform, caplog):
    """Fingerprints kept by triggers, keyed by the key type: the drift written after they were
    installed is found from the fingerprints, exactly."""
    import logging

    from chatsync.consistency import fingerprints
    from chatsync.consistency.engine import check
    from chatsync.consistency.scope import Scope

    platform.fill()
    with platform.conn() as c:
        c.execute("ANALYZE")  # the switch to a table diff weighs the changed keys against the rows
    fingerprints.install(platform.settings)
    try:
        platform.drift()
        small = replace(platform.settings, fingerprint_max_changed_fraction=1.0)  # 14 changed keys of 40 rows
        with caplog.at_level(logging.INFO, logger="chatsync"):
            summary = check(small, Scope("full"), do_repair=True, do_validate=False)
        assert "from maintained fingerprints" in caplog.text
        assert {k: v for k, v in summary.counts.items() if v} == EXPECTED
        assert summary.remaining == 0 and platform.differences() == 0
    finally:
        fingerprints.uninstall(platform.settings)


def test_rooms_scope_and_cli_take_the_key_type(platform):
    platform.fill()
    platform.drift()
    env = {"CHATSYNC_DATABASE_URL": platform.settings.database_url,
           "CHATSYNC_MAPPING_PATH": platform.settings.mapping_path, "CHATSYNC_GX_DIR": platform.settings.gx_dir,
           "CHATSYNC_REPAIR_MAX_FRACTION": "1", "PATH": "/usr/bin:/bin"}
    chatsync = str(REPO / ".venv" / "bin" / "chatsync")
    done = subprocess.run([chatsync, "check", "--repair", "--no-validate", "--json", "--rooms",
                           f"{platform.room(0)},{platform.room(1)}"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    counts = {k: v for k, v in json.loads(done.stdout)["counts"].items() if v}
    assert counts == {"role_mismatch": 1, "permissions_mismatch": 1, "room_state_mismatch": 1, "ban_mismatch": 1}
    bad = "not-a-key" if platform.kind != "text" else "x" * 41
    refused = subprocess.run([chatsync, "check", "--rooms", bad], env=env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2
    assert "--rooms" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    frozen = subprocess.run([chatsync, "freeze", str(platform.room(3)), "--reason", "test", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert frozen.returncode == 0, frozen.stderr
    assert json.loads(frozen.stdout)["frozen"] == [json.loads(json.dumps(platform.room(3), default=str))]
    with platform.conn() as c:
        assert c.execute("SELECT frozen FROM messaging.channels WHERE channel_key = %s",
                         (platform.room(3),)).fetchone()[0] is True
    from chatsync.web.page import page_data, render

    page = page_data(platform.settings)  # the health page names the frozen chat by its id
    assert [f["room_id"] for f in page["frozen_chats"]] == [platform.room(3)]
    assert str(platform.room(3)) in render(page)
    thawed = subprocess.run([chatsync, "unfreeze", str(platform.room(3))], env=env, capture_output=True, text=True,
                            timeout=300)
    assert thawed.returncode == 0, thawed.stderr


def test_shards_cut_the_key_range_of_every_kind(platform, monkeypatch):
    """A full pass cut into room-key ranges (uuids as 128-bit numbers, strings at percentiles)
    finds exactly what one pass finds."""
    from chatsync.consistency import detect as detection
    from chatsync.consistency.scope import Scope
    from chatsync.consistency.steps import plan_step, shard_step

    platform.fill()
    platform.drift()
    s = replace(platform.settings, detect_shard_rows=10, detect_max_shards=3)
    parts = plan_step(s, Scope("full"), triggered_by="test")
    assert len(parts) == 3 and parts[0]["room_range"][0] is None and parts[-1]["room_range"][1] is None
    json.dumps(parts)  # what XCom holds
    for part in parts:
        shard_step(s, part)
    plan = detection.DetectPlan.from_dict(parts[0])
    found = detection.finish(s, plan)
    assert {k: v for k, v in found.counts.items() if v} == EXPECTED


def test_worker_syncs_an_event_with_the_key_type(platform, redis_settings):
    from chatsync.events import cache
    from chatsync.events.envelope import publish
    from chatsync.events.worker import Worker

    platform.fill()
    s = replace(platform.settings, redis_url=redis_settings.redis_url,
                redis_prefix=f"{redis_settings.redis_prefix}keys_{platform.kind}:",
                events_stream=f"{redis_settings.redis_prefix}keys_{platform.kind}:events")
    cache.resync(s)
    room, user = platform.room(4), platform.user(4, 2)
    with platform.room_conn() as c:
        c.execute("UPDATE venue.attendees SET part = 'HOST', grants = grants | %s, modified = now() "
                  "WHERE event_key = %s AND member_key = %s", (BIT_62 | 7, room, user))
    import redis

    client = redis.Redis.from_url(s.redis_url)
    publish(client, s.events_stream, "room.participant.role_changed", room, user)
    client.xadd(s.events_stream, {"event_id": "bad-key", "type": "room.status.changed", "room_id": "%%%",
                                  "occurred_at": "2026-12-01T00:00:00+00:00"})
    client.close()
    worker = Worker(s, "keys-test", block_ms=100)
    try:
        stats = worker.run(until_idle=True, max_seconds=120)
    finally:
        worker.close()
    assert stats.dead_letters == 1  # a key no room has (text) or of another type: dead-lettered
    with platform.conn() as c:
        part, grants = c.execute("SELECT part, grants FROM messaging.members WHERE channel_key = %s "
                                 "AND member_key = %s", (room, user)).fetchone()
    assert part == "HOST" and grants & BIT_62
    assert cache.verify(s).total == 0  # the cache's keys hold the same ids


def test_hourly_dag_end_to_end_on_the_platform_schema(platform, dagbag, monkeypatch):
    platform.fill()
    platform.drift()
    _airflow_env(platform, monkeypatch)
    monkeypatch.setenv("CHATSYNC_DETECT_SHARD_ROWS", "12")  # ~60 rows: parts cut by key range
    dag_run = dagbag.get_dag("chat_consistency_hourly").test(run_conf={"scope": "full"})
    assert dag_run.state == "success"
    assert len([ti for ti in dag_run.get_task_instances() if ti.task_id == "detect_part"]) > 1
    assert platform.differences() == 0
    with platform.conn() as c:
        status, counts = c.execute("SELECT status, counts FROM chatsync.runs WHERE kind = 'check' "
                                   "ORDER BY run_id DESC LIMIT 1").fetchone()
    assert status == "validated" and {k: v for k, v in counts.items() if v} == EXPECTED


def _airflow_env(platform, monkeypatch) -> None:
    """The DAGs' settings for the platform: its database as chatsync_db, its mapping."""
    conn = psycopg.conninfo.conninfo_to_dict(platform.settings.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_DB", json.dumps(
        {"conn_type": "postgres", "host": conn["host"], "port": int(conn["port"]), "login": conn["user"],
         "schema": conn["dbname"]}))
    monkeypatch.setenv("CHATSYNC_MAPPING_PATH", platform.settings.mapping_path)
    monkeypatch.setenv("CHATSYNC_GX_DIR", platform.settings.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_FRACTION", "1")


def test_major_procedure_takes_room_ids_of_the_key_type(platform, dagbag, monkeypatch):
    """chat_major_inconsistency with its rooms param as the UI gives them (text): freeze, analyse,
    repair, validate and resume on the platform's keys."""
    platform.fill()
    with platform.conn() as c:  # drift in the two rooms the procedure treats (it validates the whole tables)
        c.execute("UPDATE messaging.members SET part = 'VIEWER', grants = 0 WHERE channel_key = %s",
                  (platform.room(0),))  # HOST, CO_HOST, PANELIST on the room side
        c.execute("UPDATE messaging.channels SET is_closed = true WHERE channel_key = %s", (platform.room(1),))
    _airflow_env(platform, monkeypatch)
    rooms = [str(platform.room(0)), str(platform.room(1))]
    dag_run = dagbag.get_dag("chat_major_inconsistency").test(run_conf={"rooms": rooms, "lease_seconds": 600})
    assert dag_run.state == "success"
    with platform.conn() as c:
        assert c.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0
        assert c.execute("SELECT bool_or(frozen) FROM messaging.channels").fetchone()[0] is False
        repaired = c.execute("SELECT count(DISTINCT (room_id, user_id)) FROM chatsync.repair_audit WHERE run_id = "
                             "(SELECT max(run_id) FROM chatsync.repair_audit)").fetchone()[0]
    assert repaired == MEMBERS + 1  # room 0's participants, room 1's state
    assert platform.differences() == 0


def test_an_existing_ops_schema_keeps_its_rows_when_its_keys_become_text(settings, tmp_path):
    """Migrating: an ops schema filled with whole-number keys, the mapping now text keys: init
    converts the key columns in place and keeps every row."""
    from chatsync.db.migrations import migrate
    from chatsync.errors import ConfigError
    from chatsync.model import catalog
    from chatsync.roomside.refresh import check_mapping

    with scratch_database("keys_migrate", SCHEMA.format(k="bigint")) as url:
        (tmp_path / "mapping.yaml").write_text(MAPPING)
        s = replace(settings, database_url=url, room_database_url=None, mapping_path=str(tmp_path / "mapping.yaml"))
        migrate(s)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("INSERT INTO chatsync.runs (kind, scope, status) VALUES ('check', 'full', 'validated')")
            c.execute("INSERT INTO chatsync.inconsistencies (run_id, kind, room_id, user_id) "
                      "SELECT max(run_id), 'role_mismatch', 42, 7 FROM chatsync.runs")
            c.execute("INSERT INTO chatsync.freezes (room_id, reason, frozen_by, expires_at) "
                      "VALUES (42, 'test', 'test', now() + interval '1 hour')")
            c.execute("ALTER TABLE venue.attendees DROP CONSTRAINT attendees_event_key_fkey")
            for table, column in (("messaging.members", "member_key"), ("venue.attendees", "member_key"),
                                  ("messaging.members", "channel_key"), ("messaging.channels", "channel_key"),
                                  ("venue.attendees", "event_key"), ("venue.events", "event_key")):
                c.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE text").format(
                    sql.SQL(table), sql.Identifier(column)))
        catalog.forget()
        with psycopg.connect(url) as c, pytest.raises(ConfigError, match="run `chatsync init`"):
            check_mapping(s, c)  # a pass refuses to run on the old key columns
        applied = migrate(s)
        assert any("inconsistencies.room_id: bigint -> text" in a for a in applied), applied
        with psycopg.connect(url, autocommit=True) as c:
            assert c.execute("SELECT room_id, user_id FROM chatsync.inconsistencies").fetchall() == [("42", "7")]
            assert c.execute("SELECT room_id FROM chatsync.freezes").fetchall() == [("42",)]
            check_mapping(s, c)


def test_a_key_pair_that_cannot_be_compared_is_refused(settings, tmp_path):
    """uuid on the room side, whole numbers on the chat side: one line naming both columns."""
    from chatsync.errors import ConfigError
    from chatsync.model.keys import keys

    mixed = ("ALTER TABLE venue.attendees DROP CONSTRAINT attendees_event_key_fkey;"
             "ALTER TABLE venue.attendees ALTER COLUMN event_key TYPE uuid USING NULL")
    with scratch_database("keys_mixed", SCHEMA.format(k="bigint"), mixed) as url:
        (tmp_path / "mapping.yaml").write_text(MAPPING)
        s = replace(settings, database_url=url, room_database_url=None, mapping_path=str(tmp_path / "mapping.yaml"))
        with pytest.raises(ConfigError) as refused:
            keys(s)
        message = str(refused.value)
        assert "venue.attendees.event_key" in message and "uuid" in message and "bigint" in message
        assert "\n" not in message


def test_envelope_parses_ids_as_the_key_type():
    from chatsync.errors import ValidationError
    from chatsync.events.envelope import parse
    from chatsync.model.keys import Keys, KeyType

    uuids = Keys(KeyType("room id", "uuid", "uuid"), KeyType("user id", "uuid", "uuid"))
    room, user = uuid.uuid4(), uuid.uuid4()
    event = parse("1-0", {"event_id": "e", "type": "room.participant.added", "room_id": str(room).upper(),
                          "user_id": str(user), "occurred_at": "2026-12-01T00:00:00Z"}, uuids)
    assert (event.room_id, event.user_id) == (room, user)
    with pytest.raises(ValidationError, match="field 'room_id' is not a uuid"):
        parse("1-0", {"event_id": "e", "type": "room.archived", "room_id": "42",
                      "occurred_at": "2026-12-01T00:00:00Z"}, uuids)
    small = Keys(KeyType("room id", "integer", "integer"), KeyType("user id", "integer", "integer"))
    with pytest.raises(ValidationError, match="out of range for the key column"):
        parse("1-0", {"event_id": "e", "type": "room.archived", "room_id": str(2**31),
                      "occurred_at": "2026-12-01T00:00:00Z"}, small)
    text = Keys(KeyType("room id", "text", "character varying(8)"), KeyType("user id", "text", "text"))
    assert parse("1-0", {"event_id": "e", "type": "room.archived", "room_id": "Ab-1",
                         "occurred_at": "2026-12-01T00:00:00Z"}, text).room_id == "Ab-1"
    with pytest.raises(ValidationError, match="room_id"):
        parse("1-0", {"event_id": "e", "type": "room.archived", "room_id": "much-too-long",
                      "occurred_at": "2026-12-01T00:00:00Z"}, text)

