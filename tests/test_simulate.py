"""The simulator (chatsync_devtools.simulate): deterministic, realistic, atomic, and its drift counts exact.

Every expected count here comes from SQL written for the test (EXCEPT / NOT EXISTS / plain
comparisons over the reference schema), not from chatsync's rules-driven SQL, so the simulator
and the detector are each checked against an independent reading of the rules (README, *The reference schema*).
"""

from __future__ import annotations

import math

import pytest
from conftest import sides_equal

from chatsync.config import DEFAULT_MAPPING
from chatsync.errors import ConfigError
from chatsync.model.mapping import load_mapping
from chatsync.model.rules import KINDS
from chatsync_devtools.simulate import ALL_PERMISSIONS

# the reference schema's roles and statuses: its mapping's domains
ROLES = load_mapping(str(DEFAULT_MAPPING)).domains["role"].allowed
ROOM_STATUSES = load_mapping(str(DEFAULT_MAPPING)).domains["status"].allowed

# md5 over every generated value (timestamps by their null-ness: their clock is now()).
CHECKSUM = """
SELECT md5(concat_ws('|',
  (SELECT string_agg(concat_ws(',', id, name, status, is_public, chat_enabled, archived_at IS NULL), ';' ORDER BY id)
   FROM room.rooms),
  (SELECT string_agg(concat_ws(',', room_id, user_id, role, permissions, banned_at IS NULL), ';'
                     ORDER BY room_id, user_id) FROM room.room_participants),
  (SELECT string_agg(concat_ws(',', room_id, status, is_public, chat_enabled, archived, writes_frozen), ';'
                     ORDER BY room_id) FROM chat.chat_rooms),
  (SELECT string_agg(concat_ws(',', room_id, user_id, role, permissions, banned), ';'
                     ORDER BY room_id, user_id) FROM chat.chat_participants)))
"""

# One independent query per kind: the number of (key, kind) pairs the rules define.
KIND_COUNTS = {
    "missing_chat_room": """
        SELECT count(*) FROM room.rooms AS r
        WHERE NOT EXISTS (SELECT 1 FROM chat.chat_rooms AS c WHERE c.room_id = r.id)""",
    "orphan_chat_room": """
        SELECT count(*) FROM chat.chat_rooms AS c
        WHERE NOT EXISTS (SELECT 1 FROM room.rooms AS r WHERE r.id = c.room_id)""",
    "room_state_mismatch": """
        SELECT count(*) FROM room.rooms AS r JOIN chat.chat_rooms AS c ON c.room_id = r.id
        WHERE (r.status, r.is_public, r.chat_enabled, r.archived_at IS NOT NULL)
              IS DISTINCT FROM (c.status, c.is_public, c.chat_enabled, c.archived)""",
    "missing_participant": """
        SELECT count(*) FROM (SELECT room_id, user_id FROM room.room_participants
                              EXCEPT SELECT room_id, user_id FROM chat.chat_participants) AS k""",
    "orphan_participant": """
        SELECT count(*) FROM (SELECT room_id, user_id FROM chat.chat_participants
                              EXCEPT SELECT room_id, user_id FROM room.room_participants) AS k""",
    "role_mismatch": """
        SELECT count(*) FROM room.room_participants AS r
        JOIN chat.chat_participants AS c USING (room_id, user_id) WHERE c.role IS DISTINCT FROM r.role""",
    "permissions_mismatch": """
        SELECT count(*) FROM room.room_participants AS r
        JOIN chat.chat_participants AS c USING (room_id, user_id)
        WHERE c.permissions IS DISTINCT FROM r.permissions""",
    "ban_mismatch": """
        SELECT count(*) FROM room.room_participants AS r
        JOIN chat.chat_participants AS c USING (room_id, user_id)
        WHERE c.banned IS DISTINCT FROM (r.banned_at IS NOT NULL)""",
}

# Distinct keys that differ in any way: what a repair has to touch.
CHANGED_KEYS = """
SELECT (SELECT count(*) FROM room.rooms AS r FULL JOIN chat.chat_rooms AS c ON c.room_id = r.id
        WHERE r.id IS NULL OR c.room_id IS NULL
           OR (r.status, r.is_public, r.chat_enabled, r.archived_at IS NOT NULL)
              IS DISTINCT FROM (c.status, c.is_public, c.chat_enabled, c.archived))
     + (SELECT count(*) FROM room.room_participants AS r
        FULL JOIN chat.chat_participants AS c ON (c.room_id, c.user_id) = (r.room_id, r.user_id)
        WHERE r.room_id IS NULL OR c.room_id IS NULL
           OR (r.role, r.permissions, r.banned_at IS NOT NULL) IS DISTINCT FROM (c.role, c.permissions, c.banned))
"""


def independent_counts(db) -> dict[str, int]:
    return {kind: db.execute(query).fetchone()[0] for kind, query in KIND_COUNTS.items()}


@pytest.fixture
def simulate():
    from chatsync_devtools.simulate import simulate as run

    return run


def test_same_seed_same_data_other_seed_other_data(db, clean_db, simulate):
    first = simulate(clean_db, rooms=40, members=15, drift=0.05, seed=7)
    checksum = db.execute(CHECKSUM).fetchone()[0]
    again = simulate(clean_db, rooms=40, members=15, drift=0.05, seed=7)
    assert db.execute(CHECKSUM).fetchone()[0] == checksum
    assert (again.participants, again.injected, again.changed_keys) == \
        (first.participants, first.injected, first.changed_keys)
    simulate(clean_db, rooms=40, members=15, drift=0.05, seed=8)
    assert db.execute(CHECKSUM).fetchone()[0] != checksum


def test_room_side_is_realistic(db, clean_db, simulate):
    report = simulate(clean_db, rooms=300, members=30, drift=0, seed=3)
    assert report.rooms == 300
    assert db.execute("SELECT count(*) FROM room.rooms").fetchone()[0] == 300
    assert db.execute("SELECT count(*) FROM room.room_participants").fetchone()[0] == report.participants
    # one OWNER in every room
    owners = db.execute("""SELECT count(*) FILTER (WHERE owners = 1), count(*) FROM (
        SELECT r.id, count(p.*) FILTER (WHERE p.role = 'OWNER') AS owners
        FROM room.rooms AS r LEFT JOIN room.room_participants AS p ON p.room_id = r.id GROUP BY r.id) AS o"""
    ).fetchone()
    assert owners == (300, 300)
    # sizes skewed around the mean: many small rooms, a few big ones
    mean, median, biggest, smallest = db.execute("""SELECT avg(n), percentile_cont(0.5) WITHIN GROUP (ORDER BY n),
        max(n), min(n) FROM (SELECT count(*) AS n FROM room.room_participants GROUP BY room_id) AS s""").fetchone()
    assert 30 * 0.8 < mean < 30 * 1.2
    assert median < mean and biggest > 3 * 30 and smallest >= 1
    roles = dict(db.execute("SELECT role, count(*) FROM room.room_participants GROUP BY role").fetchall())
    assert set(roles) == set(ROLES)
    assert roles["MEMBER"] > report.participants / 2
    assert roles["MEMBER"] > roles["GUEST"] > roles["SPEAKER"]
    staff = roles["ADMIN"] + roles["EVENT_ADMIN"] + roles["MODERATOR"]
    assert 300 <= staff < report.participants * 0.15
    low, high, banned, owners_banned, weird_time = db.execute("""SELECT min(permissions), max(permissions),
        avg((banned_at IS NOT NULL)::int), count(*) FILTER (WHERE role = 'OWNER' AND banned_at IS NOT NULL),
        count(*) FILTER (WHERE updated_at > now() OR updated_at < now() - interval '30 days'
                         OR banned_at > updated_at)
        FROM room.room_participants""").fetchone()
    assert 0 <= low and high <= ALL_PERMISSIONS
    assert 0.01 < banned < 0.03 and owners_banned == 0 and weird_time == 0
    # the same role mostly has the same mask: defaults, with a few per-user tweaks
    tweaked = db.execute("""SELECT avg((permissions <> mode)::int) FROM room.room_participants AS p
        JOIN (SELECT role, mode() WITHIN GROUP (ORDER BY permissions) AS mode FROM room.room_participants
              GROUP BY role) AS m USING (role)""").fetchone()[0]
    assert 0.005 < tweaked < 0.1
    statuses = dict(db.execute("SELECT status, count(*) FROM room.rooms GROUP BY status").fetchall())
    assert set(statuses) == set(ROOM_STATUSES)
    archived, archived_live, public, chat_enabled, names = db.execute("""SELECT
        avg((archived_at IS NOT NULL)::int),
        count(*) FILTER (WHERE archived_at IS NOT NULL AND status NOT IN ('ENDED', 'CANCELLED')),
        avg(is_public::int), avg(chat_enabled::int), count(*) FILTER (WHERE name ~ ' #[0-9]+$')
        FROM room.rooms""").fetchone()
    assert 0.04 < archived < 0.18 and archived_live == 0
    assert public > 0.7 and chat_enabled > 0.85 and names == 300


def test_no_drift_chat_side_is_an_exact_copy(db, clean_db, simulate):
    report = simulate(clean_db, rooms=120, members=12, drift=0, seed=5)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert independent_counts(db) == dict.fromkeys(KINDS, 0)
    assert report.injected == dict.fromkeys(KINDS, 0) and list(report.injected) == list(KINDS)
    assert report.changed_keys == 0
    assert (report.chat_rooms, report.chat_participants) == (report.rooms, report.participants)
    # the copy keeps updated_at and starts unfrozen
    assert db.execute("""SELECT count(*) FROM room.room_participants AS r JOIN chat.chat_participants AS c
        USING (room_id, user_id) WHERE c.updated_at <> r.updated_at""").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM chat.chat_rooms WHERE writes_frozen").fetchone()[0] == 0


@pytest.mark.parametrize("seed", [1, 2, 42])
def test_drift_counts_match_independent_sql(db, clean_db, simulate, seed):
    report = simulate(clean_db, rooms=80, members=20, drift=0.05, seed=seed)
    assert list(report.injected) == list(KINDS)
    assert all(report.injected[k] >= 1 for k in KINDS), report.injected
    assert independent_counts(db) == report.injected
    assert db.execute(CHANGED_KEYS).fetchone()[0] == report.changed_keys
    assert report.chat_rooms == db.execute("SELECT count(*) FROM chat.chat_rooms").fetchone()[0]
    assert report.chat_participants == db.execute("SELECT count(*) FROM chat.chat_participants").fetchone()[0]
    # room-level drift: max(1, round(80 * 0.05)) = 4 rooms per kind
    assert report.injected["missing_chat_room"] == report.injected["orphan_chat_room"] == 4
    assert report.injected["room_state_mismatch"] == 4
    # missing chat rooms are small rooms; orphan chat rooms hold 1 to 3 participants
    assert db.execute("""SELECT max(n) FROM (SELECT count(*) AS n FROM room.room_participants AS p
        WHERE NOT EXISTS (SELECT 1 FROM chat.chat_rooms AS c WHERE c.room_id = p.room_id)
        GROUP BY room_id) AS s""").fetchone()[0] <= 5
    assert db.execute("""SELECT min(n) >= 1 AND max(n) <= 3 FROM (
        SELECT count(p.*) AS n FROM chat.chat_rooms AS c LEFT JOIN chat.chat_participants AS p USING (room_id)
        WHERE NOT EXISTS (SELECT 1 FROM room.rooms AS r WHERE r.id = c.room_id) GROUP BY c.room_id) AS s"""
    ).fetchone()[0]
    # no drifted participant in a room whose chat room is missing (all of them are simply gone)
    assert db.execute("""SELECT count(*) FROM chat.chat_participants AS p
        WHERE NOT EXISTS (SELECT 1 FROM chat.chat_rooms AS c WHERE c.room_id = p.room_id)""").fetchone()[0] == 0
    # some keys carry two kinds at once: a room with two differing columns, a participant with two kinds
    assert db.execute("""SELECT count(*) FROM room.rooms AS r JOIN chat.chat_rooms AS c ON c.room_id = r.id
        WHERE (r.status <> c.status)::int + (r.is_public <> c.is_public)::int
              + (r.chat_enabled <> c.chat_enabled)::int + ((r.archived_at IS NOT NULL) <> c.archived)::int >= 2
        """).fetchone()[0] >= 1
    assert db.execute("""SELECT count(*) FROM room.room_participants AS r JOIN chat.chat_participants AS c
        USING (room_id, user_id)
        WHERE (r.role <> c.role)::int + (r.permissions <> c.permissions)::int
              + ((r.banned_at IS NOT NULL) <> c.banned)::int >= 2""").fetchone()[0] >= 1
    # drifted values stay possible values (the validation suite would flag anything else)
    assert db.execute("""SELECT count(*) FROM chat.chat_participants
        WHERE role <> ALL (%s) OR permissions NOT BETWEEN 0 AND %s""",
                      (list(ROLES), ALL_PERMISSIONS)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM chat.chat_rooms WHERE status <> ALL (%s)",
                      (list(ROOM_STATUSES),)).fetchone()[0] == 0
    # drifted and added chat rows are recent; untouched ones keep the room's updated_at
    stale = db.execute("""SELECT count(*) FROM room.room_participants AS r JOIN chat.chat_participants AS c
        USING (room_id, user_id)
        WHERE (r.role, r.permissions, r.banned_at IS NOT NULL) IS DISTINCT FROM (c.role, c.permissions, c.banned)
          AND c.updated_at < now() - interval '1 minute'""").fetchone()[0]
    assert stale == 0


def test_demo_drift_stays_within_the_default_repair_threshold(db, clean_db, simulate):
    report = simulate(clean_db, rooms=100, members=50, drift=0.005, seed=42)
    assert all(report.injected[k] >= 1 for k in KINDS), report.injected
    assert report.changed_keys < 51
    limit = min(clean_db.repair_max_changes,
                math.floor(clean_db.repair_max_fraction * (report.rooms + report.participants)))
    assert report.changed_keys <= limit
    assert db.execute(CHANGED_KEYS).fetchone()[0] == report.changed_keys


def test_tiny_simulation_still_has_every_kind(db, clean_db, simulate):
    report = simulate(clean_db, rooms=2, members=1, drift=0.01, seed=9)
    assert report.participants == 2
    assert all(report.injected[k] >= 1 for k in KINDS), report.injected
    assert independent_counts(db) == report.injected


def test_failure_leaves_the_previous_data_untouched(db, clean_db, simulate, monkeypatch):
    import chatsync_devtools.simulate as sim

    simulate(clean_db, rooms=30, members=10, drift=0.05, seed=4)
    before = db.execute(CHECKSUM).fetchone()[0]
    real_inject = sim._inject_drift

    def inject_then_fail(*args, **kwargs):
        real_inject(*args, **kwargs)
        raise RuntimeError("boom after the drift")

    monkeypatch.setattr(sim, "_inject_drift", inject_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        simulate(clean_db, rooms=50, members=10, drift=0.1, seed=5)
    assert db.execute(CHECKSUM).fetchone()[0] == before
    # the indexes and keys dropped for the bulk load are back as well
    indexes = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes WHERE schemaname IN ('room', 'chat')")}
    assert {"rooms_pkey", "room_participants_pkey", "chat_rooms_pkey", "chat_participants_pkey",
            "chat_participants_updated_at_idx"} <= indexes


def test_indexes_and_foreign_key_survive_a_run(db, clean_db, simulate):
    def definitions():
        indexes = db.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname IN ('room', 'chat') "
                             "ORDER BY 1").fetchall()
        constraints = db.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE connamespace IN ('room'::regnamespace, 'chat'::regnamespace) "
                                 "ORDER BY 1").fetchall()
        return indexes, constraints

    before = definitions()
    simulate(clean_db, rooms=20, members=5, drift=0.1, seed=1)
    assert definitions() == before
    assert any("FOREIGN KEY" in d for _, d in before[1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(rooms=0, members=5, drift=0.1), "rooms must be a positive"),
    (dict(rooms=-3, members=5, drift=0), "rooms must be a positive"),
    (dict(rooms=10, members=0, drift=0.1), "members (mean participants per room) must be positive"),
    (dict(rooms=10, members=5, drift=-0.01), "drift must be a fraction between 0 and 0.5"),
    (dict(rooms=10, members=5, drift=0.6), "drift must be a fraction between 0 and 0.5"),
    (dict(rooms=10, members=5, drift=math.nan), "drift must be a fraction"),
    (dict(rooms=10, members=5, drift="0.1"), "drift must be a fraction"),
    (dict(rooms=1, members=5, drift=0.1), "drift needs at least 2 rooms"),
    (dict(rooms=2.5, members=5, drift=0.1), "rooms must be a whole number"),
    (dict(rooms=True, members=5, drift=0.1), "rooms must be a whole number"),
    (dict(rooms=10, members=5, drift=0.1, seed=2**63), "seed must fit in a signed 64-bit integer"),
    (dict(rooms=10**7, members=10**3, drift=0.1), "more than the simulator's limit"),
])
def test_bad_input_raises_config_error(clean_db, simulate, kwargs, message):
    with pytest.raises(ConfigError) as info:
        simulate(clean_db, **kwargs)
    assert message in str(info.value)


def test_report_to_dict(clean_db, simulate):
    report = simulate(clean_db, rooms=10, members=4, drift=0.1, seed=2)
    d = report.to_dict()
    assert {"rooms", "participants", "chat_rooms", "chat_participants", "injected", "changed_keys",
            "seconds"} <= set(d)
    assert list(d["injected"]) == list(KINDS)
    assert d["changed_keys"] == report.changed_keys and d["seconds"] >= 0
