"""Value domains (the mapping's domains: section): parsed from the mapping, checked by validation on
chat values that differ from the room side's only, and room values outside them held back by the
repair and reported, never copied to the chat side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import REPO

from chatsync.config import DEFAULT_MAPPING
from chatsync.errors import ConfigError
from chatsync.model.mapping import Domain, load_mapping

CHATSYNC = str(Path(sys.executable).with_name("chatsync"))
BIT_62 = 1 << 62
REFERENCE_TEXT = DEFAULT_MAPPING.read_text()
TABLES_TEXT = REFERENCE_TEXT[:REFERENCE_TEXT.index("\ndomains:")] + "\n"  # the reference tables, no domain


def _mapping_file(tmp_path: Path, text: str, name: str = "mapping.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _own_gx_dir(tmp_path: Path) -> str:
    """A GX context of the test's own: another mapping's suites never replace the session's."""
    gx_dir = tmp_path / "gx"
    shutil.copytree(REPO / "chatsync" / "validation" / "great_expectations", gx_dir,
                    ignore=shutil.ignore_patterns("uncommitted", "validation_results", "data_docs"))
    return str(gx_dir)


def test_the_reference_mapping_has_the_reference_schemas_domains():
    domains = load_mapping(str(DEFAULT_MAPPING)).domains
    assert domains == {
        "status": Domain(allowed=("DRAFT", "UPCOMING", "LIVE", "ENDED", "CANCELLED")),
        "role": Domain(allowed=("OWNER", "ADMIN", "EVENT_ADMIN", "MODERATOR", "SPEAKER", "MEMBER", "GUEST")),
        "permissions": Domain(min=0),  # no bit named, no maximum: any non-negative bigint
    }


def test_a_mapping_without_domains_has_none(tmp_path):
    assert load_mapping(_mapping_file(tmp_path, TABLES_TEXT)).domains == {}


def test_every_domain_part_parses(tmp_path):
    path = _mapping_file(tmp_path, TABLES_TEXT + "domains:\n  role: {allowed: [HOST, GUEST, HOST]}\n"
                                                "  permissions: {min: 0, max: 4095, mask: 0xfff}\n")
    assert load_mapping(path).domains == {"role": Domain(allowed=("HOST", "GUEST")),
                                          "permissions": Domain(min=0, max=4095, mask=4095)}


@pytest.mark.parametrize("section, message", [
    ("domains: [role]", "domains must map field names (status, is_public, "),
    ("domains:\n  colour: {allowed: [red]}", "domains.colour: unknown field; the fields are status, "),
    ("domains:\n  role: {values: [OWNER]}", "domains.role: unknown key values (expected allowed, min, max, mask)"),
    ("domains:\n  role: OWNER", "domains.role must be a mapping with any of allowed, min, max, mask"),
    ("domains:\n  role: {}", "domains.role must be a mapping with any of allowed, min, max, mask"),
    ("domains:\n  role: {allowed: OWNER}", "domains.role.allowed must be a list of strings or numbers, got 'OWNER'"),
    ("domains:\n  role: {allowed: [OWNER, yes]}", "domains.role.allowed must hold strings or numbers only, got True"),
    ("domains:\n  role: {allowed: []}", "domains.role.allowed is empty: no value would be allowed"),
    ("domains:\n  permissions: {min: '0'}", "domains.permissions.min must be a whole number, got '0'"),
    ("domains:\n  permissions: {max: 1.5}", "domains.permissions.max must be a whole number, got 1.5"),
    ("domains:\n  permissions: {mask: -1}", "domains.permissions.mask must be from 0 to 9223372036854775807"),
    ("domains:\n  permissions: {min: 10, max: 5}", "domains.permissions: min 10 is greater than max 5"),
])
def test_a_bad_domain_is_refused_in_one_line_naming_the_file_and_the_entry(tmp_path, section, message):
    path = _mapping_file(tmp_path, TABLES_TEXT + section + "\n")
    with pytest.raises(ConfigError) as refused:
        load_mapping(path)
    text = str(refused.value)
    assert text.startswith(f"mapping file {path}: ") and message in text and "\n" not in text


# -- the reference tables ------------------------------------------------------------------------


def test_permissions_with_bit_62_on_both_sides_validate_with_the_reference_mapping(db, clean_db):
    """The reported bug: permission masks using high bits failed validation on every participant."""
    from chatsync.validation.gx import validate

    db.execute("INSERT INTO room.rooms (id, name, status) VALUES (1, 'one', 'LIVE')")
    db.execute("INSERT INTO chat.chat_rooms (room_id, status, is_public, chat_enabled) VALUES (1, 'LIVE', true, true)")
    for table, banned in (("room.room_participants (room_id, user_id, role, permissions, banned_at)", "NULL"),
                          ("chat.chat_participants (room_id, user_id, role, permissions, banned)", "false")):
        db.execute(f"INSERT INTO {table} SELECT 1, g, 'MEMBER', %s + g, {banned} FROM generate_series(1, 20) AS g",
                   (BIT_62,))
    outcome = validate(clean_db)
    assert outcome.passed, outcome.failed
    assert outcome.evaluated == 10  # keys, status, role, permissions >= 0, and no remaining difference


def test_a_mapping_without_domains_validates_keys_and_remaining_differences_only(db, clean_db, tmp_path):
    from chatsync.validation.gx import build, validate

    settings = replace(clean_db, mapping_path=_mapping_file(tmp_path, TABLES_TEXT), gx_dir=_own_gx_dir(tmp_path))
    db.execute("INSERT INTO room.rooms (id, name, status) VALUES (1, 'one', 'LIVE')")
    db.execute("INSERT INTO chat.chat_rooms (room_id, status, is_public, chat_enabled) VALUES (1, 'whatever', "
               "true, true)")  # no domain: any status, but the room says LIVE
    outcome = validate(settings)
    assert not outcome.passed
    assert [(f["expectation"], f["table"]) for f in outcome.failed] == [
        ("expect_table_row_count_to_equal", "room_residual_differences")]
    context, _ = build(settings)
    suites = {name: [e.expectation_type for e in context.suites.get(name).expectations]
              for name in ("room_chat_table", "participant_chat_table",
                           "room_residual_differences", "participant_residual_differences")}
    assert suites == {
        "room_chat_table": ["expect_column_values_to_not_be_null", "expect_column_values_to_be_unique"],
        "participant_chat_table": ["expect_column_values_to_not_be_null", "expect_column_values_to_not_be_null",
                                   "expect_compound_columns_to_be_unique"],
        "room_residual_differences": ["expect_table_row_count_to_equal"],
        "participant_residual_differences": ["expect_table_row_count_to_equal"]}
    view = db.execute("SELECT pg_get_viewdef('chatsync.gx_participant_chat_table'::regclass)").fetchone()[0]
    assert "room" not in view.replace("room_id", "")  # the chat table alone: nothing to compare with


# -- room tables without the reference schema's CHECKs (a room side holding 'HOST') --------------

DOMAINS = """domains:
  status: {allowed: [DRAFT, UPCOMING, LIVE, ENDED, CANCELLED]}
  role: {allowed: [OWNER, ADMIN, MODERATOR, MEMBER, GUEST]}
  permissions: {min: 0, mask: 4095}
"""


@pytest.fixture
def unchecked(db, clean_db, tmp_path):
    """Copies of the reference tables without their CHECKs (schemas dom_room and dom_chat), a
    mapping onto them with DOMAINS, and its settings (their own GX context)."""
    db.execute("DROP SCHEMA IF EXISTS dom_room CASCADE; DROP SCHEMA IF EXISTS dom_chat CASCADE; "
               "CREATE SCHEMA dom_room; CREATE SCHEMA dom_chat")
    for copy, source in (("dom_room.rooms", "room.rooms"), ("dom_room.room_participants", "room.room_participants"),
                         ("dom_chat.chat_rooms", "chat.chat_rooms"),
                         ("dom_chat.chat_participants", "chat.chat_participants")):
        db.execute(f"CREATE TABLE {copy} (LIKE {source} INCLUDING DEFAULTS INCLUDING INDEXES)")
    text = TABLES_TEXT.replace("table: room.", "table: dom_room.").replace("table: chat.", "table: dom_chat.")
    settings = replace(clean_db, mapping_path=_mapping_file(tmp_path, text + DOMAINS), gx_dir=_own_gx_dir(tmp_path),
                       repair_max_fraction=1.0, repair_max_changes=100)
    yield settings
    db.execute("DROP SCHEMA dom_room CASCADE; DROP SCHEMA dom_chat CASCADE")


def _fill(db, participants: list[tuple], chat_participants: list[tuple]) -> None:
    db.execute("INSERT INTO dom_room.rooms (id, name, status) VALUES (1, 'one', 'LIVE'), (2, 'two', 'PAUSED')")
    db.execute("INSERT INTO dom_chat.chat_rooms (room_id, status, is_public, chat_enabled) VALUES "
               "(1, 'LIVE', true, true)")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO dom_room.room_participants (room_id, user_id, role, permissions) "
                        "VALUES (%s, %s, %s, %s)", participants)
        cur.executemany("INSERT INTO dom_chat.chat_participants (room_id, user_id, role, permissions) "
                        "VALUES (%s, %s, %s, %s)", chat_participants)


def test_a_chat_value_equal_to_its_room_value_never_fails_validation_whatever_the_domain(db, unchecked):
    from chatsync.validation.gx import validate

    rows = [(1, 10, "HOST", BIT_62 + 5), (1, 11, "MEMBER", 3)]  # HOST and bit 62: outside the domains
    _fill(db, rows, rows)
    db.execute("INSERT INTO dom_chat.chat_rooms (room_id, status, is_public, chat_enabled) VALUES "
               "(2, 'PAUSED', true, true)")  # as the room side says, outside the status domain
    outcome = validate(unchecked)
    assert outcome.passed, outcome.failed
    assert outcome.evaluated == 11  # keys, status, role, permissions' range and mask, remaining differences

    # a chat value of its own outside the domain fails, and says which value
    db.execute("UPDATE dom_chat.chat_participants SET role = 'HOST', permissions = %s WHERE user_id = 11",
               (BIT_62 + 3,))
    outcome = validate(unchecked)
    failed = {(f["expectation"], f["column"]): f["details"] for f in outcome.failed}
    assert failed[("expect_column_values_to_be_in_set", "role")]["partial_unexpected_list"] == ["HOST"]
    assert failed[("expect_column_values_to_be_null", "permissions_outside_mask")]["partial_unexpected_list"] == [
        BIT_62 + 3]
    assert failed[("expect_column_values_to_be_null", "permissions_outside_mask")]["unexpected_count"] == 1
    assert ("expect_table_row_count_to_equal", None) in failed  # and (1, 11) differs from the room side


def test_room_values_outside_their_domain_are_held_back_and_reported(db, unchecked, caplog):
    from chatsync.consistency.engine import check
    from chatsync.ops import maintenance
    from chatsync.ops.maintenance_reports import daily_markdown

    _fill(db, [(1, 10, "HOST", 7),             # role_mismatch, the room's role outside the domain
               (1, 11, "MEMBER", BIT_62 + 1),  # permissions_mismatch, a bit outside the mask
               (1, 12, "ADMIN", 7),            # role_mismatch, in the domain: repaired
               (1, 13, "HOST", 3),             # missing_participant, outside the domain: not inserted
               (1, 14, "GUEST", 1)],           # missing_participant, in the domain: inserted
          [(1, 10, "MEMBER", 7), (1, 11, "MEMBER", 1), (1, 12, "MEMBER", 7), (1, 15, "GUEST", 1)])  # (1,15): orphan
    # room 2 ('PAUSED', outside the status domain) has no chat room: held back too

    env = {**os.environ, "CHATSYNC_DATABASE_URL": unchecked.database_url, "CHATSYNC_GX_DIR": unchecked.gx_dir,
           "CHATSYNC_MAPPING_PATH": unchecked.mapping_path, "CHATSYNC_REPAIR_MAX_FRACTION": "1.0"}
    if unchecked.room_database_url:
        env["CHATSYNC_ROOM_DATABASE_URL"] = unchecked.room_database_url
    proc = subprocess.run([CHATSYNC, "check", "--repair", "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr  # inconsistencies remain: the held-back keys
    summary = json.loads(proc.stdout)
    assert summary["repaired"] == 3  # (1,12) updated, (1,14) inserted, (1,15) deleted
    assert summary["held_back"] == 4
    assert summary["room_domain_violations"] == {"status": 1, "role": 2, "permissions": 1}
    assert summary["remaining"] == 4 and summary["consistent"] is False
    assert summary["validation"]["passed"] is True, summary["validation"]  # the chat side is as it should be
    assert "held back room 1 user 10: its role 'HOST' is outside the mapping's domain (one of OWNER" in proc.stderr
    assert "its permissions '4611686018427387905' is outside the mapping's domain (at least 0; no bit " \
           "outside 0xfff)" in proc.stderr

    # the chat side kept its own values for the held-back keys, took the room's for the others
    assert db.execute("SELECT user_id, role, permissions FROM dom_chat.chat_participants ORDER BY 1").fetchall() == [
        (10, "MEMBER", 7), (11, "MEMBER", 1), (12, "ADMIN", 7), (14, "GUEST", 1)]
    assert db.execute("SELECT room_id FROM dom_chat.chat_rooms").fetchall() == [(1,)]
    run_id = summary["run_id"]
    recorded = db.execute("SELECT entity, room_id, user_id, field, value FROM chatsync.room_domain_violations "
                          "WHERE run_id = %s ORDER BY room_id, user_id NULLS FIRST", (run_id,)).fetchall()
    assert recorded == [("participant", 1, 10, "role", "HOST"),
                        ("participant", 1, 11, "permissions", str(BIT_62 + 1)),
                        ("participant", 1, 13, "role", "HOST"),
                        ("room", 2, None, "status", "PAUSED")]
    # their findings stay open (the run is not settled); the others are repaired
    findings = db.execute("SELECT room_id, user_id, kind, status FROM chatsync.inconsistencies WHERE run_id = %s "
                          "ORDER BY 1, 2 NULLS FIRST, 3", (run_id,)).fetchall()
    assert findings == [(1, 10, "role_mismatch", "open"), (1, 11, "permissions_mismatch", "open"),
                        (1, 12, "role_mismatch", "repaired"), (1, 13, "missing_participant", "open"),
                        (1, 14, "missing_participant", "repaired"), (1, 15, "orphan_participant", "repaired"),
                        (2, None, "missing_chat_room", "open")]
    assert db.execute("SELECT settled_at FROM chatsync.runs WHERE run_id = %s", (run_id,)).fetchone()[0] is None
    # detection still counts the differences; "no remaining difference" leaves these keys out
    assert db.execute("SELECT count(*) FROM chatsync.gx_participant_residual_differences").fetchone()[0] == 0

    # the next pass holds the same keys back again, changing nothing
    with caplog.at_level("WARNING", logger="chatsync.repair"):
        again = check(unchecked, do_repair=True, do_validate=False)
    assert (again.repaired, again.held_back, again.remaining) == (0, 4, 4)
    assert "4 keys held back" in caplog.text

    # the daily report counts them over its interval
    now = datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    review = maintenance.daily_review(unchecked, start, start + timedelta(days=1))
    by_field = {x["field"]: x for x in review["room_domain_violations"]["by_field"]}
    assert review["room_domain_violations"]["keys"] == 4
    assert {f: (x["keys"], x["recorded"], x["runs"]) for f, x in by_field.items()} == {
        "status": (1, 2, 2), "role": (2, 4, 2), "permissions": (1, 2, 2)}
    assert by_field["status"]["latest"] == {"value": "PAUSED", "room_id": 2, "user_id": None}
    markdown = daily_markdown({"interval": [start.isoformat(), (start + timedelta(days=1)).isoformat()], **review,
                               "resolution": {"open_keys": 0, "still_differing": 0, "repaired": 0,
                                              "rechecked_run": None, "recurring": []}})
    assert "## Room values outside their domain\n- **held back** 4 keys" in markdown
    assert "| participant | role | 2 | 4 | 2 | `HOST` (room 1 user 1" in markdown  # user 10 or 13, the latest
    assert "| room | status | 1 | 2 | 2 | `PAUSED` (room 2) |" in markdown
    empty = maintenance.daily_review(unchecked, start - timedelta(days=1), start)["room_domain_violations"]
    assert empty == {"keys": 0, "by_field": []}

    # once the room data is fixed, the next pass repairs them
    db.execute("UPDATE dom_room.room_participants SET role = 'GUEST' WHERE role = 'HOST'")
    db.execute("UPDATE dom_room.room_participants SET permissions = 3 WHERE user_id = 11")
    db.execute("UPDATE dom_room.rooms SET status = 'ENDED' WHERE id = 2")
    fixed = check(unchecked, do_repair=True, do_validate=True)
    assert (fixed.repaired, fixed.held_back, fixed.remaining) == (4, 0, 0) and fixed.consistent
