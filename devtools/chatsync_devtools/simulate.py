"""The simulator: fill the reference application schema with realistic data, then drift it.

``simulate()`` wipes the room and chat tables (through the mapping) and, in ONE transaction:

1. generates the room side in Postgres (``INSERT ... SELECT`` over ``generate_series``, never row
   by row from Python): rooms of skewed sizes around the requested mean, one OWNER each, a few
   staff, mostly members, role-default permission masks with occasional per-user tweaks, ~2 %
   bans, a status mix with ~10 % archived rooms;
2. copies it to the chat side exactly as the rules say (the copy is built from chatsync.model.rules);
3. injects drift of every inconsistency kind (when ``drift > 0``) and counts, from the rows the
   drift statements really changed (their RETURNING rows), the (key, kind) pairs a correct
   detector must find.

Every random value is a hash of (seed, purpose, keys) computed in SQL, so a seed gives the same
data whatever plan, parallelism or row order Postgres picks. The SQL is in
chatsync_devtools/sql/simulate/simulate_*.sql.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

from psycopg import sql

from chatsync.config import DEFAULT_MAPPING, Settings
from chatsync.consistency import fingerprints
from chatsync.db.connection import connection, one
from chatsync.db.retry import with_retry
from chatsync.errors import ConfigError
from chatsync.model import catalog, rules
from chatsync.model.keys import keys
from chatsync.model.mapping import CHAT_TABLES, ROOM_TABLES, Mapping, Table, load_mapping
from chatsync.model.rules import KINDS, PARTICIPANT, ROOM
from chatsync.model.sqlgen import EntitySQL
from chatsync_devtools.statements import sql_file

log = logging.getLogger("chatsync.simulate")
J = sql.SQL


# -- what "realistic" means here ----------------------------------------------------------------
HISTORY = timedelta(days=30)  # every generated updated_at lies within the last 30 days
ROOM_SIZE_SIGMA = 1.0  # log-normal spread of room sizes: median ~0.6x the mean, a long tail
ROOM_SIZE_CAP = 20  # no room holds more than 20x the mean (keeps the tail and the user pool sane)
USERS_PER_SEAT = 0.25  # user pool ~ a quarter of the seats: a user sits in ~4 rooms
ARCHIVED_SHARE = 0.10
PUBLIC_SHARE = 0.85
CHAT_ENABLED_SHARE = 0.95
BAN_SHARE = 0.02  # of non-owners
PERMISSION_TWEAK_SHARE = 0.04  # non-owners with one permission bit added or removed
MAX_PARTICIPANTS = 100_000_000  # a guard against typos (10M is the largest size we plan for)

# The roles and room statuses of the reference schema: its mapping's domains.
REFERENCE_DOMAINS = load_mapping(str(DEFAULT_MAPPING)).domains
ROLES: tuple[str, ...] = tuple(str(v) for v in REFERENCE_DOMAINS["role"].allowed or ())
ROOM_STATUSES: tuple[str, ...] = tuple(str(v) for v in REFERENCE_DOMAINS["status"].allowed or ())

# The simulated room service's capabilities, one permission bit each: the simulator's own data
# (the reference schema names no bits; its permissions domain allows any non-negative bigint).
PERMISSION_BITS: dict[str, int] = {
    "READ": 1 << 0,
    "SEND_MESSAGE": 1 << 1,
    "SEND_MEDIA": 1 << 2,
    "REACT": 1 << 3,
    "REPLY_THREAD": 1 << 4,
    "PIN_MESSAGE": 1 << 5,
    "DELETE_OWN": 1 << 6,
    "DELETE_ANY": 1 << 7,
    "MUTE_USER": 1 << 8,
    "BAN_USER": 1 << 9,
    "MANAGE_ROLES": 1 << 10,
    "MANAGE_ROOM": 1 << 11,
}
ALL_PERMISSIONS: int = sum(PERMISSION_BITS.values())

# Status mix of live (not archived) rooms and of archived ones (always over).
STATUS_WEIGHTS = {"DRAFT": 0.05, "UPCOMING": 0.20, "LIVE": 0.10, "ENDED": 0.50, "CANCELLED": 0.15}
ARCHIVED_STATUS_WEIGHTS = {"ENDED": 0.8, "CANCELLED": 0.2}
# Seat 1 is the owner; the next floor(ln(size)) seats are staff; everyone else is the crowd.
OWNER_ROLE = "OWNER"
STAFF_ROLE_WEIGHTS = {"ADMIN": 0.3, "EVENT_ADMIN": 0.2, "MODERATOR": 0.5}
CROWD_ROLE_WEIGHTS = {"SPEAKER": 0.05, "MEMBER": 0.83, "GUEST": 0.12}
MEMBER_ROLE = "MEMBER"


def _mask(*names: str) -> int:
    return sum(PERMISSION_BITS[n] for n in names)


_BASIC = ("READ", "SEND_MESSAGE", "REACT", "REPLY_THREAD", "DELETE_OWN")
_SPEAKER = (*_BASIC, "SEND_MEDIA", "PIN_MESSAGE")
_MODERATOR = (*_SPEAKER, "DELETE_ANY", "MUTE_USER", "BAN_USER")
ROLE_MASKS: dict[str, int] = {
    "OWNER": ALL_PERMISSIONS,
    "ADMIN": _mask(*_MODERATOR, "MANAGE_ROLES"),
    "EVENT_ADMIN": _mask(*_MODERATOR, "MANAGE_ROOM"),
    "MODERATOR": _mask(*_MODERATOR),
    "SPEAKER": _mask(*_SPEAKER),
    "MEMBER": _mask(*_BASIC),
    "GUEST": _mask("READ", "REACT"),
}

# -- how drift is spread ------------------------------------------------------------------------
SMALL_ROOM = 5  # missing chat rooms are taken among rooms this small (just created)
ORPHAN_ROOM_MAX_PARTICIPANTS = 3
ORPHAN_PARTICIPANT_SHARE = 0.15  # of the drifted participant keys, the rest are existing rows
MIN_DRIFTED_PARTICIPANTS = 5  # a few of each participant kind even in a tiny simulation
# The k-th picked participant gets the kinds of PARTICIPANT_CYCLE[k % len]. The first pick
# carries all three mismatch kinds (all its update events were lost), so a single participant
# outside the missing chat rooms is enough for every kind; three in ten carry several kinds.
PARTICIPANT_CYCLE: tuple[tuple[str, ...], ...] = (
    (rules.ROLE_MISMATCH, rules.PERMISSIONS_MISMATCH, rules.BAN_MISMATCH),
    (rules.MISSING_PARTICIPANT,),
    (rules.PERMISSIONS_MISMATCH,),
    (rules.ROLE_MISMATCH,),
    (rules.BAN_MISMATCH,),
    (rules.PERMISSIONS_MISMATCH,),
    (rules.ROLE_MISMATCH, rules.BAN_MISMATCH),
    (rules.MISSING_PARTICIPANT,),
    (rules.PERMISSIONS_MISMATCH,),
    (rules.ROLE_MISMATCH, rules.PERMISSIONS_MISMATCH),
)

ROOM_NAMES = ("Live event", "Webinar", "Town hall", "Q&A session", "Workshop", "Product launch",
              "Meetup", "Keynote", "Panel", "Concert", "Masterclass", "AMA")

assert set(ROLE_MASKS) == set(ROLES)
assert all(0 <= m <= ALL_PERMISSIONS for m in ROLE_MASKS.values())
assert {OWNER_ROLE, *STAFF_ROLE_WEIGHTS, *CROWD_ROLE_WEIGHTS} == set(ROLES)
assert set(STATUS_WEIGHTS) == set(ROOM_STATUSES) >= set(ARCHIVED_STATUS_WEIGHTS)


@dataclass
class SimulationReport:
    rooms: int  # room-side rooms
    participants: int  # room-side participants
    chat_rooms: int
    chat_participants: int
    injected: dict[str, int]  # kind -> (key, kind) pairs a correct detector finds, every kind
    changed_keys: int  # distinct keys (rooms + participants) a repair must touch
    seconds: float
    seed: int = 42
    users: int = 0  # size of the user-id pool (ids 1..users)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rooms": self.rooms, "participants": self.participants, "chat_rooms": self.chat_rooms,
                "chat_participants": self.chat_participants, "injected": dict(self.injected),
                "changed_keys": self.changed_keys, "seconds": round(self.seconds, 3), "seed": self.seed,
                "users": self.users,
                "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()}}


def _check_inputs(rooms: int, members: int, drift: float, seed: int) -> None:
    def whole(name: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"simulate: {name} must be a whole number, got {value!r}")

    whole("rooms", rooms)
    whole("members", members)
    whole("seed", seed)
    if rooms < 1:
        raise ConfigError(f"simulate: rooms must be a positive whole number, got {rooms}")
    if members < 1:
        raise ConfigError(f"simulate: members (mean participants per room) must be positive, got {members}")
    if rooms * members > MAX_PARTICIPANTS:
        raise ConfigError(f"simulate: rooms x members = {rooms * members:,} participants is more than "
                          f"the simulator's limit of {MAX_PARTICIPANTS:,}")
    if isinstance(drift, bool) or not isinstance(drift, (int, float)) or not math.isfinite(drift) \
            or not 0 <= drift <= 0.5:
        raise ConfigError(f"simulate: drift must be a fraction between 0 and 0.5, got {drift!r}")
    if drift > 0 and rooms < 2:
        raise ConfigError("simulate: drift needs at least 2 rooms (one whose chat room goes missing, "
                          "one whose chat state drifts)")
    if not -(2**63) <= seed < 2**63:
        raise ConfigError(f"simulate: seed must fit in a signed 64-bit integer, got {seed}")


def _choice(weights: dict[str, float]) -> tuple[list[str], list[float]]:
    """Values and bucket lower bounds for SQL's width_bucket(u, bounds), u uniform in [0, 1)."""
    total = sum(weights.values())
    values, bounds, acc = [], [], 0.0
    for value, weight in weights.items():
        values.append(value)
        bounds.append(acc / total)
        acc += weight
    return values, bounds


def _next_prime(n: int) -> int:
    def prime(k: int) -> bool:
        if k < 2 or k % 2 == 0:
            return k == 2
        return all(k % d for d in range(3, math.isqrt(k) + 1, 2))

    while not prime(n):
        n += 1
    return n


def table_placeholders(mapping: Mapping) -> dict[str, sql.Composable]:
    """{rr}, {rp}, {cr}, {cp} for the four tables and {rr_<logical column>} etc. for columns."""
    parts: dict[str, sql.Composable] = {}
    for abbr, key in (("rr", "room_rooms"), ("rp", "room_participants"),
                      ("cr", "chat_rooms"), ("cp", "chat_participants")):
        table = mapping[key]
        parts[abbr] = table.ident
        for logical in table.columns:
            parts[f"{abbr}_{logical}"] = table.col(logical)
    return parts


def _copy_parts(es: EntitySQL) -> tuple[sql.Composable, sql.Composable]:
    """Chat columns and the values derived from room row r by the rules (keeping updated_at)."""
    e = es.entity
    values = [es.rc(k, "r") for k in e.room_key]
    values += [es.room_value(f, "r") for f in e.fields]
    values += [sql.Literal(v) for _, v in e.chat_defaults]
    values.append(es.rc("updated_at", "r"))
    return es.insert_columns(), J(", ").join(values)


def _kinds_array(es: EntitySQL, r: str = "r", c: str = "c") -> sql.Composable:
    """ARRAY of the mismatch kinds chat row c breaks against room row r (NULL where it holds)."""
    items = []
    for kind in es.entity.mismatch_kinds:
        fields = [f for f in es.entity.fields if f.kind == kind]
        differs = J(" OR ").join(es.field_differs(f, r, c) for f in fields)
        items.append(J("CASE WHEN {} THEN {} END").format(differs, sql.Literal(kind)))
    return J("ARRAY[{}]::text[]").format(J(", ").join(items))


def _has_column(conn, table, column: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s AND column_name = %s)",
                        (table.schema, table.name, column)).fetchone()[0]


@dataclass(frozen=True)
class _Suspended:
    """Keys, indexes and foreign keys of the refilled tables, dropped during the bulk load."""

    foreign_keys: list[tuple[str, str, str, str]]  # (schema, table, constraint, definition)
    key_constraints: list[tuple[str, str, str, str]]  # primary key / unique / exclusion constraints
    indexes: list[str]  # CREATE INDEX statements of the other indexes


# The constraints of some tables, each with its table's schema and name and its definition.
_CONSTRAINTS = """
SELECT n.nspname, t.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint AS k
JOIN pg_class AS t ON t.oid = k.conrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE {}
ORDER BY k.oid
"""


def _suspend_indexes(conn, tables: list[Table]) -> _Suspended:
    """Drop the tables' keys, indexes and foreign keys, remembering how to rebuild them.

    Loading a million rows into indexed tables with a foreign key costs ~3x more than loading
    bare tables and building the indexes once at the end (measured: 15 s against 5 s). This is
    DDL inside the simulator's transaction, so an error anywhere puts everything back.
    """
    oids = [conn.execute("SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = %s AND c.relname = %s", (t.schema, t.name)).fetchone()[0]
            for t in tables]
    # Every foreign key from or to these tables: dropped first, since they depend on the keys.
    foreign_keys = conn.execute(J(_CONSTRAINTS).format(J(
        "k.contype = 'f' AND (k.conrelid = ANY(%(oids)s) OR k.confrelid = ANY(%(oids)s))")),
        {"oids": oids}).fetchall()
    key_constraints = conn.execute(J(_CONSTRAINTS).format(J(
        "k.contype IN ('p', 'u', 'x') AND k.conrelid = ANY(%(oids)s)")), {"oids": oids}).fetchall()
    indexes = conn.execute(
        "SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i "
        "JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE i.indrelid = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k "
        "  WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')) "
        "ORDER BY i.indexrelid", (oids,)).fetchall()
    for schema, table, name, _ in [*foreign_keys, *key_constraints]:
        conn.execute(J("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(schema, table), sql.Identifier(name)))
    for schema, name, _ in indexes:
        conn.execute(J("DROP INDEX {}").format(sql.Identifier(schema, name)))
    return _Suspended(foreign_keys, key_constraints, [definition for _, _, definition in indexes])


def _restore_indexes(conn, suspended: _Suspended) -> None:
    """Rebuild what _suspend_indexes dropped: keys and indexes, then the foreign keys.

    The definitions are Postgres's own (pg_get_constraintdef / pg_get_indexdef), quoted by it.
    """
    for schema, table, name, definition in suspended.key_constraints:
        conn.execute(J("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), J(definition)))
    for definition in suspended.indexes:
        conn.execute(J(definition))
    for schema, table, name, definition in suspended.foreign_keys:
        conn.execute(J("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), J(definition)))


def simulate(settings: Settings, rooms: int, members: int, drift: float, seed: int = 42,
             drift_rooms: float = 1.0, maintain_fingerprints: bool = False) -> SimulationReport:
    """Wipe and refill the room and chat tables, then inject drift; all in one transaction.

    ``members`` is the mean room size; ``drift`` the fraction of participant rows drifted (spread
    over the participant kinds), plus max(1, round(rooms * drift)) rooms per room-level kind.
    With drift > 0 every inconsistency kind gets at least one case. ``drift_rooms`` < 1 puts the
    participant drift in that fraction of the rooms only (the benchmark's concentrated layout).
    Maintained fingerprints (chatsync.consistency.fingerprints) are dropped with the old data; with
    ``maintain_fingerprints`` they are installed on the clean data, so the drift reaches their log.
    """
    _check_inputs(rooms, members, drift, seed)
    if not 0 < drift_rooms <= 1:
        raise ConfigError(f"drift_rooms={drift_rooms!r}: must be a fraction in (0, 1]")
    return with_retry(lambda: _simulate(settings, rooms, members, drift, seed, drift_rooms, maintain_fingerprints),
                      settings, "simulate")


def _simulate(settings: Settings, rooms: int, members: int, drift: float, seed: int,
              drift_rooms: float = 1.0, maintain_fingerprints: bool = False) -> SimulationReport:
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    mapping = load_mapping(settings.mapping_path)
    parts = table_placeholders(mapping)
    key_types = keys(settings)
    room_sql, participant_sql = (EntitySQL.build(ROOM, mapping, key_types),
                                 EntitySQL.build(PARTICIPANT, mapping, key_types))

    max_extra = 0 if members == 1 else (members - 1) * ROOM_SIZE_CAP
    pool = _next_prime(max(1000, 2 * (max_extra + 1), int(rooms * members * USERS_PER_SEAT)))
    # log-normal of mean members - 1: mu = ln(mean) - sigma^2 / 2 (unused when members = 1)
    log_mu = math.log(members - 1) - ROOM_SIZE_SIGMA ** 2 / 2 if members > 1 else 0.0
    status_values, status_bounds = _choice(STATUS_WEIGHTS)
    archived_values, archived_bounds = _choice(ARCHIVED_STATUS_WEIGHTS)
    staff_values, staff_bounds = _choice(STAFF_ROLE_WEIGHTS)
    crowd_values, crowd_bounds = _choice(CROWD_ROLE_WEIGHTS)
    common = {"seed": seed, "pool": pool, "history": HISTORY}

    def run(conn, name: str, params: dict | None = None, **extra: sql.Composable) -> int:
        t0 = time.perf_counter()
        cur = conn.execute(sql_file(settings, name, **parts, **extra),
                           None if params is None else {**common, **params})
        stages[name.removeprefix("simulate_")] = time.perf_counter() - t0
        return cur.rowcount

    two = settings.two_databases
    room_side = (connection(settings, side="room", read_only=False, application_name="chatsync simulate")
                 if two else nullcontext(None))
    # the room database's connection ends first: its rows commit before the chat side's
    with connection(settings, application_name="chatsync simulate") as conn, room_side as room_conn:
        if room_conn is not None:
            mapping.side("chat").check_database(conn)
            mapping.side("room").check_database(room_conn)
            # the room side is generated in the chat database's session, in temporary tables
            # shaped like the room tables, then copied to the room database
            sim_mapping = _stage_room_tables(conn, room_conn, mapping)
            parts = table_placeholders(sim_mapping)
            room_sql, participant_sql = (EntitySQL.build(ROOM, sim_mapping, key_types),
                                         EntitySQL.build(PARTICIPANT, sim_mapping, key_types))
        else:
            mapping.check_database(conn)
            sim_mapping = mapping
        room_table = mapping["room_rooms"]
        # The mapping has no room name (chatsync never reads it); fill it when the table has one.
        name_column: sql.Composable
        name_value: sql.Composable
        if _has_column(room_conn or conn, room_table, "name"):
            name_column, name_value = J("{},").format(sql.Identifier("name")), J(
                "(%(room_names)s::text[])[1 + pg_temp.sim_int(%(seed)s, 'room.name', "
                "cardinality(%(room_names)s::text[]), d.id)] || ' #' || d.id,")
        else:
            name_column = name_value = J("")

        fingerprints.remove_if_installed(conn, settings)  # their triggers would log the whole refill
        run(conn, "simulate_session_setup")
        t0 = time.perf_counter()
        conn.execute(J("TRUNCATE {}, {}, {}, {}").format(
            parts["rp"], parts["rr"], parts["cp"], parts["cr"]))
        stages["truncate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        suspended = _suspend_indexes(conn, [mapping[key] for key in
                                            (CHAT_TABLES if two else ROOM_TABLES + CHAT_TABLES)])
        stages["drop_indexes"] = time.perf_counter() - t0

        n_rooms = run(conn, "simulate_fill_rooms", {
            "rooms": rooms, "max_extra": max_extra, "log_mu": log_mu, "log_sigma": ROOM_SIZE_SIGMA,
            "archived_share": ARCHIVED_SHARE, "public_share": PUBLIC_SHARE,
            "chat_enabled_share": CHAT_ENABLED_SHARE, "room_names": list(ROOM_NAMES),
            "status_values": status_values, "status_bounds": status_bounds,
            "archived_status_values": archived_values, "archived_status_bounds": archived_bounds,
        }, name_column=name_column, name_value=name_value)
        n_participants = run(conn, "simulate_fill_participants", {
            "owner_role": OWNER_ROLE, "role_names": list(ROLE_MASKS), "role_masks": list(ROLE_MASKS.values()),
            "staff_role_values": staff_values, "staff_role_bounds": staff_bounds,
            "crowd_role_values": crowd_values, "crowd_role_bounds": crowd_bounds,
            "permission_bits": list(PERMISSION_BITS.values()),
            "permission_tweak_share": PERMISSION_TWEAK_SHARE, "ban_share": BAN_SHARE,
        })
        room_columns, room_values = _copy_parts(room_sql)
        participant_columns, participant_values = _copy_parts(participant_sql)
        run(conn, "simulate_copy_to_chat", None, room_columns=room_columns, room_values=room_values,
            participant_columns=participant_columns, participant_values=participant_values)
        t0 = time.perf_counter()
        # Room and user ids are unique by construction: rebuilding the keys cannot fail on them.
        _restore_indexes(conn, suspended)
        stages["rebuild_indexes"] = time.perf_counter() - t0
        # Fresh statistics, so the drift statements (and the first detect) plan with real row
        # counts; the drift changes too few rows to make them stale.
        t0 = time.perf_counter()
        conn.execute(J("ANALYZE {}, {}, {}, {}").format(parts["rr"], parts["rp"], parts["cr"], parts["cp"]))
        stages["analyze"] = time.perf_counter() - t0

        if room_conn is not None:
            t0 = time.perf_counter()
            _push_room_side(conn, room_conn, mapping, sim_mapping)
            stages["room_database"] = time.perf_counter() - t0
        if maintain_fingerprints:
            t0 = time.perf_counter()
            if room_conn is not None:  # the triggers go on the room side's copy: take it now
                _fill_room_copy(conn, settings, sim_mapping)
            fingerprints.install_on(conn, settings)
            stages["fingerprints"] = time.perf_counter() - t0
        if drift > 0:
            _inject_drift(conn, run, rooms=n_rooms, participants=n_participants, drift=drift, drift_rooms=drift_rooms,
                          status_values=status_values, status_bounds=status_bounds,
                          room_sql=room_sql, participant_sql=participant_sql)

        injected = dict.fromkeys(KINDS, 0)
        for kind, n in conn.execute("SELECT kind, count(*) FROM pg_temp.chatsync_sim_changes GROUP BY kind"):
            injected[kind] = n
        # Like the detector's rows_to_change: room keys (user_id NULL) and participant keys.
        changed_keys = one(conn.execute("SELECT count(*) FROM (SELECT DISTINCT room_id, user_id "
                                    "FROM pg_temp.chatsync_sim_changes) AS k"))[0]

    # Every missing_* finding was a deleted chat row and every orphan_* one an inserted row.
    report = SimulationReport(
        rooms=n_rooms, participants=n_participants,
        chat_rooms=n_rooms - injected[rules.MISSING_CHAT_ROOM] + injected[rules.ORPHAN_CHAT_ROOM],
        chat_participants=(n_participants - injected[rules.MISSING_PARTICIPANT]
                           + injected[rules.ORPHAN_PARTICIPANT]),
        injected=injected, changed_keys=changed_keys, seconds=time.perf_counter() - t_start,
        seed=seed, users=pool, stage_seconds=stages)
    log.info("simulated %d rooms, %d participants (seed %d) in %.2fs; injected %s (%d keys)",
             report.rooms, report.participants, seed, report.seconds,
             {k: v for k, v in injected.items() if v}, changed_keys)
    return report


def _stage_room_tables(conn, room_conn, mapping: Mapping) -> Mapping:
    """Temporary tables in conn's session shaped like the room tables' mapped columns (and the
    room name, when the table has one), types read in the room database (text for its own types:
    the copy to it is in text format); returns the mapping with the room tables pointing at them."""
    tables = dict(mapping.tables)
    for key in ROOM_TABLES:
        table = mapping[key]
        wanted = {*table.columns.values(), *(["name"] if key == "room_rooms" else [])}
        rows = [(column, catalog.as_copied(t).name) for column, t
                in catalog.table_columns(room_conn, table).items() if column in wanted]
        name = f"chatsync_sim_{key}"
        conn.execute(J("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            sql.Identifier(name), J(", ").join(J("{} {}").format(sql.Identifier(c), J(t)) for c, t in rows)))
        tables[key] = Table(key, "pg_temp", name, table.columns)
    return Mapping(mapping.path, tables, mapping.domains)


def _push_room_side(conn, room_conn, mapping: Mapping, staged: Mapping) -> None:
    """The generated room side, from conn's temporary tables into the room database's tables
    (emptied, their keys and indexes dropped for the load and rebuilt, as on the chat side)."""
    real = [mapping[k] for k in ROOM_TABLES]
    room_conn.execute(J("TRUNCATE {}, {}").format(*(t.ident for t in real)))
    suspended = _suspend_indexes(room_conn, real)
    for key in ROOM_TABLES:
        temp = staged[key]
        columns = J(", ").join(sql.Identifier(r[0]) for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (f"pg_temp.{temp.name}",)).fetchall())
        with conn.cursor() as out_cur, room_conn.cursor() as in_cur:
            with out_cur.copy(J("COPY {} ({}) TO STDOUT").format(temp.ident, columns)) as out, \
                    in_cur.copy(J("COPY {} ({}) FROM STDIN").format(mapping[key].ident, columns)) as into:
                for chunk in out:
                    into.write(chunk)
    _restore_indexes(room_conn, suspended)
    room_conn.execute(J("ANALYZE {}, {}").format(*(t.ident for t in real)))


def _fill_room_copy(conn, settings: Settings, staged: Mapping) -> None:
    """The room side's copy in the chat database (two databases), equal to what was just generated,
    with its fingerprints, in conn's transaction: maintained fingerprints start from it."""
    from chatsync.roomside import refresh

    for shape in refresh.shapes(settings):
        temp = staged[shape.copy.key]
        cols = J(", ").join(J("{}::{}").format(sql.Identifier(c.name), J(c.type)) for c in shape.columns)
        conn.execute(J("TRUNCATE {}").format(shape.copy.ident))
        conn.execute(J("INSERT INTO {} ({}) SELECT {} FROM {}").format(shape.copy.ident, shape.column_list(),
                                                                      cols, temp.ident))
        conn.execute(J("DELETE FROM {}.mirror_fingerprints WHERE entity = %s").format(
            sql.Identifier(settings.ops_schema)), (shape.entity.name,))
        conn.execute(J("INSERT INTO {}.mirror_fingerprints (entity, room_id, row_count, hash) "
                       "SELECT %s, {room}, count(*), bit_xor({}) FROM {} AS m GROUP BY {room}").format(
            sql.Identifier(settings.ops_schema), shape.row_hash("m", False), shape.copy.ident,
            room=sql.Identifier("m", shape.keys[0])), (shape.entity.name,))
        conn.execute(J("ANALYZE {}").format(shape.copy.ident))


def _inject_drift(conn, run, *, rooms: int, participants: int, drift: float, status_values: list[str],
                  status_bounds: list[float], room_sql: EntitySQL, participant_sql: EntitySQL,
                  drift_rooms: float = 1.0) -> None:
    """Drift of every kind; each statement records what it really changed in chatsync_sim_changes."""
    per_room_kind = max(1, round(rooms * drift))
    drifted_participants = max(MIN_DRIFTED_PARTICIPANTS, round(participants * drift))
    orphan_participants = max(1, round(drifted_participants * ORPHAN_PARTICIPANT_SHARE))
    existing_participants = drifted_participants - orphan_participants

    # Rooms first: the participant picks must avoid the rooms whose chat room is gone.
    run(conn, "simulate_drop_chat_rooms", {
        "n": min(per_room_kind, rooms - 1),  # leave a room for room_state_mismatch
        "small_room": SMALL_ROOM,
        "room_kind": rules.MISSING_CHAT_ROOM, "participant_kind": rules.MISSING_PARTICIPANT})
    run(conn, "simulate_pick_participants", {
        "n": existing_participants, "cycle": [",".join(kinds) for kinds in PARTICIPANT_CYCLE],
        "drift_rooms": drift_rooms})
    run(conn, "simulate_drop_participants", {"missing_kind": rules.MISSING_PARTICIPANT})
    run(conn, "simulate_drift_participants", {
        "missing_kind": rules.MISSING_PARTICIPANT, "role_kind": rules.ROLE_MISMATCH,
        "permissions_kind": rules.PERMISSIONS_MISMATCH, "ban_kind": rules.BAN_MISMATCH,
        "drift_roles": [r for r in ROLES if r != OWNER_ROLE],
        "permission_bits": list(PERMISSION_BITS.values())},
        kinds_array=_kinds_array(participant_sql))
    run(conn, "simulate_add_orphan_participants", {
        "n": orphan_participants, "role": MEMBER_ROLE, "mask": ROLE_MASKS[MEMBER_ROLE],
        "kind": rules.ORPHAN_PARTICIPANT})
    # Orphan chat rooms take the ids after the room side's last one (rooms are 1..rooms).
    run(conn, "simulate_add_orphan_chat_rooms", {
        "n": per_room_kind, "first_id": rooms + 1, "max_participants": ORPHAN_ROOM_MAX_PARTICIPANTS,
        "status_values": status_values, "status_bounds": status_bounds,
        "owner_role": OWNER_ROLE, "owner_mask": ROLE_MASKS[OWNER_ROLE],
        "member_role": MEMBER_ROLE, "member_mask": ROLE_MASKS[MEMBER_ROLE],
        "room_kind": rules.ORPHAN_CHAT_ROOM, "participant_kind": rules.ORPHAN_PARTICIPANT})
    run(conn, "simulate_drift_room_state", {
        "n": per_room_kind, "status_values": list(ROOM_STATUSES), "kind": rules.ROOM_STATE_MISMATCH},
        still_differs=room_sql.still_differs("r", "c"))
