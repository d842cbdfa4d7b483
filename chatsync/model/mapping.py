"""The mapping file: logical table/column names -> the application's real ones, and the values each
field may hold (its optional ``domains:`` section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from psycopg import sql

from chatsync.errors import ConfigError
from chatsync.model.rules import ENTITIES, FIELDS

# What chatsync needs of each logical table (the rules' columns plus keys and updated_at).
REQUIRED: dict[str, set[str]] = {}
for _e in ENTITIES:
    REQUIRED.setdefault(_e.room_table, set()).update(
        {*_e.room_key, "updated_at", *(f.room for f in _e.fields)})
    REQUIRED.setdefault(_e.chat_table, set()).update(
        {*_e.chat_key, "updated_at", *(f.chat for f in _e.fields), *(c for c, _ in _e.chat_defaults)})


@dataclass(frozen=True)
class Table:
    key: str  # logical name, e.g. "chat_participants"
    schema: str
    name: str
    columns: dict[str, str]  # logical -> real

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def col(self, logical: str, alias: str | None = None) -> sql.Composable:
        real = self.columns[logical]
        return sql.Identifier(alias, real) if alias else sql.Identifier(real)

    @property
    def qualified(self) -> str:
        """schema.table for messages (not SQL: see ident, and reltuples for catalog lookups)."""
        return f"{self.schema}.{self.name}"

    def reltuples(self, conn) -> int | None:
        """The planner's row estimate, looked up by name (no regclass text to build and quote)."""
        row = conn.execute("SELECT c.reltuples::bigint FROM pg_class AS c JOIN pg_namespace AS n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                           (self.schema, self.name)).fetchone()
        return row[0] if row else None


ROOM_TABLES = ("room_rooms", "room_participants")
CHAT_TABLES = ("chat_rooms", "chat_participants")


def mirror_name(key: str) -> str:
    """The table in the ops schema holding the copy of a room table (two-database topology)."""
    return f"mirror_{key}"


@dataclass(frozen=True)
class Domain:
    """The values one field may hold (chatsync.model.domains turns it into SQL). Each part given
    narrows it: a value must be one of ``allowed``, within [min, max], and set no bit outside ``mask``."""

    allowed: tuple[str | int | float, ...] | None = None
    min: int | None = None
    max: int | None = None
    mask: int | None = None

    def describe(self) -> str:
        """The domain as a person reads it in a log line or a report."""
        parts = []
        if self.allowed is not None:
            parts.append("one of " + ", ".join(str(v) for v in self.allowed))
        if self.min is not None:
            parts.append(f"at least {self.min}")
        if self.max is not None:
            parts.append(f"at most {self.max}")
        if self.mask is not None:
            parts.append(f"no bit outside {self.mask:#x}")
        return "; ".join(parts)


DOMAIN_KEYS = ("allowed", "min", "max", "mask")
MASK_MAX = 2**63 - 1  # a mask is read against a bigint: its sign bit cannot be an allowed bit


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_domains(section: object, path: str) -> dict[str, Domain]:
    """The ``domains:`` section of a mapping file (None: no domain), or a ConfigError naming the
    file and the entry."""
    if section is None:
        return {}
    where = f"mapping file {path}: domains"
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must map field names ({', '.join(FIELDS)}) to their domains")
    domains = {}
    for name, entry in section.items():
        at = f"{where}.{name}"
        if name not in FIELDS:
            raise ConfigError(f"{at}: unknown field; the fields are {', '.join(FIELDS)}")
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"{at} must be a mapping with any of {', '.join(DOMAIN_KEYS)}")
        unknown = sorted(str(k) for k in entry if k not in DOMAIN_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown key {', '.join(unknown)} (expected {', '.join(DOMAIN_KEYS)})")
        allowed = entry.get("allowed")
        if "allowed" in entry:
            if not isinstance(allowed, list):
                raise ConfigError(f"{at}.allowed must be a list of strings or numbers, got {allowed!r}")
            if not allowed:
                raise ConfigError(f"{at}.allowed is empty: no value would be allowed")
            wrong = [v for v in allowed if isinstance(v, bool) or not isinstance(v, (str, int, float))]
            if wrong:
                raise ConfigError(f"{at}.allowed must hold strings or numbers only, got {wrong[0]!r}")
            allowed = tuple(dict.fromkeys(allowed))
        for key in ("min", "max", "mask"):
            if key in entry and not _whole(entry[key]):
                raise ConfigError(f"{at}.{key} must be a whole number, got {entry[key]!r}")
        low, high, mask = entry.get("min"), entry.get("max"), entry.get("mask")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{at}: min {low} is greater than max {high}")
        if mask is not None and not 0 <= mask <= MASK_MAX:
            raise ConfigError(f"{at}.mask must be from 0 to {MASK_MAX} (the allowed bits of a bigint), got {mask}")
        domains[str(name)] = Domain(allowed, low, high, mask)
    return domains


@dataclass(frozen=True)
class Mapping:
    path: str
    tables: dict[str, Table]
    domains: dict[str, Domain] = field(default_factory=dict)  # field name -> the values it may hold

    def __getitem__(self, key: str) -> Table:
        return self.tables[key]

    def with_room_mirror(self, ops_schema: str) -> Mapping:
        """This mapping with the room tables read from their copies in the ops schema: what every
        statement joining the two sides reads when the room side has a database of its own. The
        copies keep the mapped column names, so the statements are the same in both topologies."""
        tables = dict(self.tables)
        for key in ROOM_TABLES:
            tables[key] = Table(key, ops_schema, mirror_name(key), self.tables[key].columns)
        return Mapping(self.path, tables, self.domains)

    def side(self, side: str) -> Mapping:
        """The tables of one side only (check_database per database)."""
        keys = ROOM_TABLES if side == "room" else CHAT_TABLES
        return Mapping(self.path, {k: self.tables[k] for k in keys}, self.domains)

    def check_database(self, conn) -> None:
        """Fail with a message naming each mapped table or column the database lacks."""
        problems = []
        for t in self.tables.values():
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s", (t.schema, t.name)).fetchall()
            present = {r[0] for r in rows}
            if not present:
                problems.append(f"table {t.qualified} ({t.key}) does not exist")
                continue
            for logical, real in t.columns.items():
                if real not in present:
                    problems.append(f"column {t.qualified}.{real} ({t.key}.{logical}) does not exist")
        if problems:
            raise ConfigError(f"mapping {self.path} does not match the database: " + "; ".join(problems))


@lru_cache(maxsize=8)
def load_mapping(path: str) -> Mapping:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"mapping file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"mapping file {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"mapping file {path}: expected a mapping of logical table names")
    tables = {}
    for key, needed in REQUIRED.items():
        entry = doc.get(key)
        if not isinstance(entry, dict) or not ("table" in entry or {"schema", "name"} <= entry.keys()):
            raise ConfigError(f"mapping file {path}: missing entry '{key}' with a 'table' key "
                              "(or 'schema' and 'name')")
        if "table" in entry:
            qualified = str(entry["table"])
            schema, _, name = qualified.rpartition(".")
            if not schema or not name:
                raise ConfigError(f"mapping file {path}: {key}.table={qualified!r} must be schema.table "
                                  "(a name holding a dot: give 'schema' and 'name' instead)")
        else:
            schema, name = str(entry["schema"]), str(entry["name"])
        columns = {str(k): str(v) for k, v in (entry.get("columns") or {}).items()}
        for what, real in [("schema", schema), ("table", name), *((f"column {k}", v) for k, v in columns.items())]:
            # psycopg reads % in a statement's text as a parameter marker, even inside a quoted name
            if "%" in real or "\x00" in real or not real:
                raise ConfigError(f"mapping file {path}: {key} {what} {real!r}: chatsync cannot use a name "
                                  "that is empty or holds '%' or NUL; rename it or map a view")
        missing = sorted(needed - columns.keys())
        if missing:
            raise ConfigError(f"mapping file {path}: {key}.columns lacks {', '.join(missing)}")
        tables[key] = Table(key, schema, name, columns)
    unknown = sorted(set(doc) - REQUIRED.keys() - {"domains"})
    if unknown:
        raise ConfigError(f"mapping file {path}: unknown entries {', '.join(unknown)}")
    return Mapping(str(p), tables, parse_domains(doc.get("domains"), path))
