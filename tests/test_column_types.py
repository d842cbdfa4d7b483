"""Column types that differ between the two sides: compared by value in the chat column's type.

Each test maps tables of its own (schemas and tables unlike the reference schema's) whose compared
columns have other types on one side: an enum against text (both ways, and two enums), integer
against bigint, varchar(n) against text, timestamp against timestamptz for updated_at (under a
session TimeZone far from UTC), different collations. Equal data gives no finding; known
differences give exact counts by kind; the repair makes the chat values equal and a second detect
finds nothing; the validation passes. Pairs chatsync cannot compare are refused before anything
runs, and a room value the chat type cannot hold is said in one line naming the columns.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from chatsync.config import Settings
from chatsync.consistency import fingerprints
from chatsync.consistency.detect import detect
from chatsync.consistency.engine import check
from chatsync.consistency.repair import repair
from chatsync.consistency.scope import Scope
from chatsync.errors import ConfigError
from chatsync.model import catalog
from chatsync.model.rules import KINDS
from chatsync.roomside import refresh

_serial = itertools.count()

# logical column -> the column's definition, by logical table (the reference schema's types)
COLUMNS = {
    "room_rooms": {"id": "bigint PRIMARY KEY", "status": "text", "is_public": "boolean",
                   "chat_enabled": "boolean", "archived_at": "timestamptz", "updated_at": "timestamptz"},
    "room_participants": {"room_id": "bigint", "user_id": "bigint", "role": "text", "permissions": "bigint",
                          "banned_at": "timestamptz", "updated_at": "timestamptz"},
    "chat_rooms": {"room_id": "bigint PRIMARY KEY", "status": "text", "is_public": "boolean",
                   "chat_enabled": "boolean", "archived": "boolean NOT NULL DEFAULT false",
                   "writes_frozen": "boolean NOT NULL DEFAULT false", "updated_at": "timestamptz"},
    "chat_participants": {"room_id": "bigint", "user_id": "bigint", "role": "text", "permissions": "bigint",
                          "banned": "boolean NOT NULL DEFAULT false", "updated_at": "timestamptz"},
}
TABLE_NAMES = {"room_rooms": "salles", "room_participants": "membres", "chat_rooms": "fils",
               "chat_participants": "abonnes"}
ROOM_SIDE = ("room_rooms", "room_participants")

# equal data on both sides
ROOMS = [(1, "LIVE", True, True, None), (2, "UPCOMING", False, True, None),
         (3, "ENDED", True, False, "2024-01-01 10:00:00+00"), (4, "DRAFT", True, True, None)]
PARTICIPANTS = [(1, 11, "MEMBER", 3, None), (1, 12, "OWNER", 4095, None), (2, 21, "GUEST", 1, None),
                (3, 31, "MODERATOR", 7, "2024-01-02 10:00:00+00"), (3, 32, "SPEAKER", 3, None)]
# one difference of each kind, written on the chat side
INJECTED = {kind: 1 for kind in KINDS}


@dataclass
class Sides:
    settings: Settings
    room_schema: str
    chat_schema: str
    types: dict[str, dict[str, str]]

    def room(self, statement: str, params=None) -> list[tuple]:
        return self._run(self.settings.room_url(), statement, params)

    def chat(self, statement: str, params=None) -> list[tuple]:
        return self._run(self.settings.require_database(), statement, params)

    @staticmethod
    def _run(url: str, statement: str, params) -> list[tuple]:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def t(self, key: str) -> str:
        schema = self.room_schema if key in ROOM_SIDE else self.chat_schema
        return f"{schema}.{TABLE_NAMES[key]}"

    # -- data ---------------------------------------------------------------------------------
    def fill(self) -> None:
        """The same rooms and participants on both sides."""
        for row in ROOMS:
            self.room(f"INSERT INTO {self.t('room_rooms')} (id, status, is_public, chat_enabled, archived_at) "
                      "VALUES (%s, %s, %s, %s, %s)", row)
            self.chat(f"INSERT INTO {self.t('chat_rooms')} (room_id, status, is_public, chat_enabled, archived) "
                      "VALUES (%s, %s, %s, %s, %s)", (*row[:4], row[4] is not None))
        for row in PARTICIPANTS:
            self.room(f"INSERT INTO {self.t('room_participants')} (room_id, user_id, role, permissions, banned_at) "
                      "VALUES (%s, %s, %s, %s, %s)", row)
            self.chat(f"INSERT INTO {self.t('chat_participants')} (room_id, user_id, role, permissions, banned) "
                      "VALUES (%s, %s, %s, %s, %s)", (*row[:4], row[4] is not None))

    def inject(self) -> None:
        """One difference of each kind on the chat side."""
        rooms, parts = self.t("chat_rooms"), self.t("chat_participants")
        self.chat(f"UPDATE {rooms} SET status = 'ENDED' WHERE room_id = 1")  # room_state_mismatch
        self.chat(f"DELETE FROM {rooms} WHERE room_id = 2")  # missing_chat_room
        self.chat(f"INSERT INTO {rooms} (room_id, status, is_public, chat_enabled) VALUES (99, 'LIVE', true, true)")
        self.chat(f"UPDATE {parts} SET role = 'GUEST' WHERE room_id = 1 AND user_id = 11")  # role_mismatch
        self.chat(f"UPDATE {parts} SET permissions = 1 WHERE room_id = 1 AND user_id = 12")  # permissions_mismatch
        self.chat(f"DELETE FROM {parts} WHERE room_id = 3 AND user_id = 32")  # missing_participant
        self.chat(f"INSERT INTO {parts} (room_id, user_id, role, permissions) VALUES (3, 39, 'MEMBER', 3)")
        self.chat(f"UPDATE {parts} SET banned = true WHERE room_id = 2 AND user_id = 21")  # ban_mismatch

    def differences(self) -> dict[str, int]:
        """Rows that differ, compared in Python (not chatsync's SQL), values as Python reads them."""
        def norm(rows):
            return {tuple(str(v) if isinstance(v, str) else v for v in row) for row in rows}
        out = {}
        for name, room_sql, chat_sql in (
            ("rooms", f"SELECT id, status::text, is_public, chat_enabled, archived_at IS NOT NULL "
                      f"FROM {self.t('room_rooms')}",
             f"SELECT room_id, status::text, is_public, chat_enabled, archived FROM {self.t('chat_rooms')}"),
            ("participants", f"SELECT room_id, user_id, role::text, permissions::bigint, banned_at IS NOT NULL "
                             f"FROM {self.t('room_participants')}",
             f"SELECT room_id, user_id, role::text, permissions::bigint, banned FROM {self.t('chat_participants')}"),
        ):
            out[name] = len(norm(self.room(room_sql)) ^ norm(self.chat(chat_sql)))
        return out


def _mapping(base: Settings, path: Path, sides: Sides) -> None:
    """The reference mapping file with this test's tables (whatever else it holds is kept)."""
    doc = yaml.safe_load(Path(base.mapping_path).read_text())
    for key in COLUMNS:
        entry = doc[key]
        entry.pop("schema", None)
        entry.pop("name", None)
        entry["table"] = sides.t(key)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _ddl(sides: Sides, key: str) -> str:
    cols = []
    for logical, definition in sides.types[key].items():
        if logical == "updated_at":
            naive = "without time zone" in definition or definition.strip() == "timestamp"
            definition += " NOT NULL DEFAULT " + ("(now() AT TIME ZONE 'UTC')" if naive else "now()")
        cols.append(f"{logical} {definition}")
    if key.endswith("participants"):
        cols.append("PRIMARY KEY (room_id, user_id)")
    return f"CREATE TABLE {sides.t(key)} ({', '.join(cols)})"


@pytest.fixture(params=["one-database", "two-databases"])
def topology(request):
    """The settings of a topology, every table emptied first."""
    return request.getfixturevalue("clean_db" if request.param == "one-database" else "two_db")


@pytest.fixture
def sides_of(tmp_path):
    """make(settings, room={logical: type}, chat=..., room_setup=..., chat_setup=...): tables of the
    test's own in fresh schemas ({room} and {chat} in the setup statements and types name them),
    the reference types but for the ones given, and settings mapping them. Dropped afterwards."""
    made: list[Sides] = []

    def make(base: Settings, room: dict | None = None, chat: dict | None = None, room_setup: str = "",
             chat_setup: str = "", **changes) -> Sides:
        n = next(_serial)
        rs, cs = f"ct_room_{n}", f"ct_chat_{n}"

        def named(text: str) -> str:
            return text.replace("{room}", rs).replace("{chat}", cs)
        types = {key: dict(cols) for key, cols in COLUMNS.items()}
        for key in ROOM_SIDE:
            types[key].update({k: named(v) for k, v in (room or {}).items() if k in types[key]})
        for key in ("chat_rooms", "chat_participants"):
            types[key].update({k: named(v) for k, v in (chat or {}).items() if k in types[key]})
        path = tmp_path / f"mapping_{n}.yaml"
        settings = replace(base, mapping_path=str(path), repair_max_fraction=1.0, repair_max_changes=100, **changes)
        sides = Sides(settings, rs, cs, types)
        made.append(sides)
        sides.room(f"CREATE SCHEMA {rs}")
        sides.chat(f"CREATE SCHEMA {cs}")
        for statement in filter(None, (s.strip() for s in named(room_setup).split(";"))):
            sides.room(statement)
        for statement in filter(None, (s.strip() for s in named(chat_setup).split(";"))):
            sides.chat(statement)
        for key in COLUMNS:
            (sides.room if key in ROOM_SIDE else sides.chat)(_ddl(sides, key))
        _mapping(base, path, sides)
        return sides

    yield make
    for sides in made:
        with psycopg.connect(sides.settings.require_database(), autocommit=True) as conn:
            fingerprints.remove_if_installed(conn, sides.settings)
        sides.room(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(sides.room_schema)).as_string())
        sides.chat(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(sides.chat_schema)).as_string())
    # the copies of the room tables (two databases) took this test's shape: re-made at next use
    refresh.forget_shapes()
    catalog.forget()


def found(settings: Settings, scope: Scope = Scope("full")) -> dict[str, int]:
    return {k: v for k, v in detect(settings, scope).counts.items() if v}


def full_round(sides: Sides) -> None:
    """Equal data: nothing; known differences: exact counts; repair, re-detect, validation."""
    s = sides.settings
    sides.fill()
    assert found(s) == {}
    sides.inject()
    assert sides.differences() == {"rooms": 4, "participants": 8}  # a changed row counts on both sides
    assert found(s) == INJECTED
    summary = check(s, Scope("full"), do_repair=True, do_validate=True)
    assert summary.repaired == len(KINDS), summary
    assert summary.remaining == 0 and summary.validation and summary.validation["passed"], summary.validation
    assert sides.differences() == {"rooms": 0, "participants": 0}
    assert found(s) == {}


# the reference mapping's domains of role and status, as enum labels
ROLE_LABELS = "'OWNER', 'ADMIN', 'EVENT_ADMIN', 'MODERATOR', 'SPEAKER', 'MEMBER', 'GUEST'"
STATUS_LABELS = "'DRAFT', 'UPCOMING', 'LIVE', 'ENDED', 'CANCELLED'"


# -- pairs that compare -------------------------------------------------------------------------

def test_room_enums_against_chat_text_and_another_enum(topology, sides_of):
    """status: an enum on the room side, text on the chat side; role: two enums of their own."""
    sides = sides_of(topology, room={"status": "{room}.state", "role": "{room}.grade"},
                     chat={"role": "{chat}.grade"},
                     room_setup=f"CREATE TYPE {{room}}.state AS ENUM ({STATUS_LABELS}); "
                                f"CREATE TYPE {{room}}.grade AS ENUM ({ROLE_LABELS})",
                     chat_setup=f"CREATE TYPE {{chat}}.grade AS ENUM ({ROLE_LABELS}, 'RETIRED')")
    full_round(sides)


def test_room_text_against_a_chat_enum_with_maintained_fingerprints(topology, sides_of):
    """role: text on the room side, an enum on the chat side; the fingerprints kept by triggers
    hash both sides alike, and a full detect starts from them."""
    sides = sides_of(topology, chat={"role": "{chat}.grade", "status": "{chat}.state"},
                     chat_setup=f"CREATE TYPE {{chat}}.grade AS ENUM ({ROLE_LABELS}); "
                                f"CREATE TYPE {{chat}}.state AS ENUM ({STATUS_LABELS})")
    sides.fill()
    s = sides.settings
    assert found(s) == {}  # (two databases: the copy is taken before the triggers go on it)
    fingerprints.install(s)
    sides.inject()
    assert found(s) == INJECTED
    with psycopg.connect(s.require_database()) as conn:
        state = fingerprints.state(conn, s, fingerprints.per_room_entities(s)[0])[0]
    assert state == "current"
    summary = check(s, Scope("full"), do_repair=True, do_validate=True)
    assert summary.repaired == len(KINDS) and summary.validation["passed"], summary.validation
    assert sides.differences() == {"rooms": 0, "participants": 0}
    assert found(s) == {}


def test_integer_against_bigint_both_ways(topology, sides_of):
    """permissions: integer on the room side and bigint on the chat side (with fingerprints hashed
    from the tables narrowing the diff), then bigint against integer."""
    sides = sides_of(topology, room={"permissions": "integer"}, fingerprint_min_rows=1)
    full_round(sides)
    other = sides_of(topology, room={"permissions": "bigint"}, chat={"permissions": "integer"})
    full_round(other)


def test_varchar_against_text_both_ways(topology, sides_of):
    full_round(sides_of(topology, room={"role": "varchar(20)", "status": "character varying(12)"}))
    full_round(sides_of(topology, chat={"role": "varchar(20)", "status": "char(12)"}))


def test_different_collations(topology, sides_of):
    """Text columns of other collations on each side: comparing them as they are raises "could
    not determine which collation to use"; chatsync compares in the chat column's collation."""
    with psycopg.connect(topology.require_database()) as conn:
        if not conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").fetchone():
            pytest.skip("no ICU collation on this server")
    full_round(sides_of(topology, room={"status": 'text COLLATE "C"', "role": 'text COLLATE "C"'},
                        chat={"status": 'text COLLATE "und-x-icu"', "role": 'varchar(20) COLLATE "und-x-icu"'}))


@pytest.mark.parametrize("naive_side", ["room", "chat"])
def test_timestamp_against_timestamptz_under_a_far_session_timezone(topology, sides_of, monkeypatch, naive_side):
    """updated_at a timestamp without time zone on one side, read as UTC: the incremental scope
    finds what changed after the watermark, and a repair writes UTC, whatever the session's
    TimeZone (Tokyo: a naive time read as local time would lie 9 hours in the past)."""
    sides = sides_of(topology, **{naive_side: {"updated_at": "timestamp(3) without time zone"}})
    s = sides.settings
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # every connection of this process from here on
    with psycopg.connect(s.require_database()) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
    sides.fill()
    for key in COLUMNS:  # written long before the watermark (not within its overlap)
        (sides.room if key in ROOM_SIDE else sides.chat)(
            f"UPDATE {sides.t(key)} SET updated_at = updated_at - interval '1 day'")
    assert check(s, Scope("full"), do_validate=False).status == "consistent"  # the watermark
    # the application changes a row on each side, writing UTC into the naive column
    utc = "(now() AT TIME ZONE 'UTC')"
    room_now = utc if naive_side == "room" else "now()"
    chat_now = utc if naive_side == "chat" else "now()"
    sides.room(f"UPDATE {sides.t('room_participants')} SET role = 'ADMIN', updated_at = {room_now} "
               "WHERE room_id = 1 AND user_id = 11")
    sides.chat(f"UPDATE {sides.t('chat_rooms')} SET is_public = NOT is_public, updated_at = {chat_now} "
               "WHERE room_id = 2")
    incremental = detect(s, Scope("incremental"))
    assert incremental.scope == "incremental"
    assert {k: v for k, v in incremental.counts.items() if v} == {"role_mismatch": 1, "room_state_mismatch": 1}
    fixed = repair(s, incremental.run_id)
    assert fixed.repaired == 2
    # the repair's updated_at: now, in UTC for a naive column (not 9 hours ahead)
    for key, where in (("chat_participants", "room_id = 1 AND user_id = 11"), ("chat_rooms", "room_id = 2")):
        seconds = sides.chat(f"SELECT extract(epoch FROM {utc if naive_side == 'chat' else 'now()'} - updated_at) "
                             f"FROM {sides.t(key)} WHERE {where}")[0][0]
        assert abs(float(seconds)) < 300, (key, seconds)
    assert sides.differences() == {"rooms": 0, "participants": 0}
    assert found(s) == {}
    # and a pass of every kind of difference, under that TimeZone
    sides.inject()
    assert found(s) == INJECTED
    summary = check(s, Scope("full"), do_repair=True, do_validate=True)
    assert summary.remaining == 0 and summary.validation["passed"], summary.validation


# -- what cannot be compared, or held ---------------------------------------------------------

@pytest.mark.parametrize(("room", "chat", "said"), [
    ({"is_public": "boolean"}, {"is_public": "integer"}, r"is_public \(room_rooms.is_public\) is boolean and "
                                                         r".*is_public \(chat_rooms.is_public\) is integer"),
    ({"permissions": "uuid"}, {}, r"permissions \(room_participants.permissions\) is uuid and "
                                  r".*permissions \(chat_participants.permissions\) is bigint"),
    ({"status": "text"}, {"status": "integer"}, r"is text and .* is integer"),
    ({}, {"archived": "integer NOT NULL DEFAULT 0"},
     r"archived \(chat_rooms.archived\) is integer: .* must be boolean"),
    ({"updated_at": "date"}, {}, r"updated_at \(room_rooms.updated_at\) is date: .* timestamp"),
])
def test_pairs_that_cannot_be_compared_are_refused_up_front(clean_db, sides_of, room, chat, said):
    sides = sides_of(clean_db, room=room, chat=chat)
    with pytest.raises(ConfigError, match=r"mapping .*mapping_\d+\.yaml: column types chatsync cannot compare: .*"
                                          + said):
        detect(sides.settings, Scope("full"))
    with psycopg.connect(clean_db.database_url) as conn:  # refused before any run began
        assert conn.execute("SELECT count(*) FROM chatsync.runs").fetchone()[0] == 0


def _cli_check(settings: Settings) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHATSYNC_DATABASE_URL": settings.require_database(), "CHATSYNC_GX_DIR": settings.gx_dir,
           "CHATSYNC_MAPPING_PATH": settings.mapping_path}
    if settings.room_database_url:
        env["CHATSYNC_ROOM_DATABASE_URL"] = settings.room_database_url
    return subprocess.run([str(Path(sys.executable).with_name("chatsync")), "check", "--scope", "full"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_a_room_label_the_chat_enum_lacks_is_said_in_one_line(topology, sides_of):
    sides = sides_of(topology, chat={"role": "{chat}.grade"},
                     chat_setup=f"CREATE TYPE {{chat}}.grade AS ENUM ({ROLE_LABELS})")
    sides.fill()
    fingerprints.install(sides.settings)
    # the room side's trigger (one database) never refuses the application's write
    sides.room(f"UPDATE {sides.t('room_participants')} SET role = 'RETIRED' WHERE room_id = 1 AND user_id = 11")
    with pytest.raises(ConfigError, match=r"a room value does not fit the chat column's type \("
                                          r".*role \(text\) -> .*abonnes.role \(ct_chat_\d+.grade\); mapping .*\): "
                                          r'invalid input value for enum ct_chat_\d+.grade: "RETIRED"'):
        detect(sides.settings, Scope("full"))
    proc = _cli_check(sides.settings)
    assert proc.returncode == 2, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("chatsync check:")]
    assert len(said) == 1 and "configuration error: a room value does not fit" in said[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_number_out_of_the_chat_range_is_said(clean_db, sides_of):
    sides = sides_of(clean_db, chat={"permissions": "integer"})
    sides.fill()
    sides.room(f"UPDATE {sides.t('room_participants')} SET permissions = 2^40 WHERE room_id = 1 AND user_id = 11")
    with pytest.raises(ConfigError, match=r"permissions \(bigint\) -> .*permissions \(integer\).*integer out of range"):
        detect(sides.settings, Scope("full"))


def test_a_text_too_long_for_the_chat_varchar_is_found_then_its_repair_said(clean_db, sides_of):
    """The room value is compared uncut (a CAST to varchar(n) would cut it and find it equal): it
    is a difference, and the repair that cannot write it says so."""
    sides = sides_of(clean_db, chat={"role": "varchar(9)"})
    sides.fill()  # every role fits in 9 characters
    sides.room(f"UPDATE {sides.t('room_participants')} SET role = 'EVENT_ADMIN' WHERE room_id = 3 AND user_id = 31")
    run = detect(sides.settings, Scope("full"))
    assert {k: v for k, v in run.counts.items() if v} == {"role_mismatch": 1}
    with pytest.raises(ConfigError, match=r"role \(text\) -> .*role \(character varying\(9\)\).*"
                                          r"value too long for type character varying\(9\)"):
        repair(sides.settings, run.run_id)
