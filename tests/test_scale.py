"""The scale paths give the same answer as the plain diff: per-room fingerprints with their
adaptive switch, and the simulator's concentrated drift."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from chatsync.diff import Scope, detect
from chatsync.errors import ConfigError
from chatsync.simulate import simulate


def findings(db, run_id: int) -> set[tuple]:
    return set(db.execute("SELECT kind, room_id, user_id FROM chatsync.inconsistencies WHERE run_id = %s",
                          (run_id,)).fetchall())


@pytest.mark.parametrize("drift_rooms, switch, narrowed", [(0.05, 0.25, True), (1.0, 0.25, False), (0.05, 0.01, False)])
def test_fingerprints_find_exactly_what_the_plain_diff_finds(db, clean_db, caplog, drift_rooms, switch, narrowed):
    report = simulate(clean_db, rooms=200, members=20, drift=0.02, seed=41, drift_rooms=drift_rooms)
    plain = detect(replace(clean_db, fingerprint_min_rows=10**12), Scope("full"))
    caplog.set_level(logging.INFO, logger="chatsync.diff")
    fast = detect(replace(clean_db, fingerprint_min_rows=1, fingerprint_max_room_fraction=switch), Scope("full"))
    assert findings(db, fast.run_id) == findings(db, plain.run_id) and fast.counts == plain.counts
    assert {k: v for k, v in fast.counts.items() if v} == {k: v for k, v in report.injected.items() if v}
    line = next(r.getMessage() for r in caplog.records if "participant fingerprints" in r.getMessage())
    assert ("row diff of those rooms" in line) is narrowed, line
    rooms = db.execute("SELECT count(DISTINCT room_id) FROM chatsync.inconsistencies WHERE run_id = %s "
                       "AND user_id IS NOT NULL", (fast.run_id,)).fetchone()[0]
    # concentrated: ~10 drifted rooms and the few of the room-level kinds; spread: 80 rows in ~65 rooms
    assert (rooms <= 40) if drift_rooms < 1 else (rooms > 50)


def test_fingerprints_close_what_vanished_everywhere(db, clean_db):
    simulate(clean_db, rooms=50, members=10, drift=0.04, seed=42, drift_rooms=0.1)
    settings = replace(clean_db, fingerprint_min_rows=1, repair_max_fraction=1.0)
    first = detect(settings, Scope("full"))
    # the application fixes every participant itself: the next full pass finds no differing room
    db.execute("UPDATE chat.chat_participants c SET role = r.role, permissions = r.permissions, "
               "banned = r.banned_at IS NOT NULL FROM room.room_participants r "
               "WHERE r.room_id = c.room_id AND r.user_id = c.user_id")
    second = detect(settings, Scope("full"))
    assert second.counts.get("role_mismatch", 0) == 0
    assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s AND kind = 'role_mismatch' "
                      "AND status = 'resolved'", (first.run_id,)).fetchone()[0] == first.counts["role_mismatch"]


def test_concentrated_drift_is_checked(clean_db):
    with pytest.raises(ConfigError, match="drift_rooms"):
        simulate(clean_db, rooms=5, members=3, drift=0.1, seed=1, drift_rooms=0)
