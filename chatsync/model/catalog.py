"""The mapped columns' types, read from each database's catalog.

chatsync compares values, never their text: where the two sides' types differ (an enum on the room
side and text on the chat side, integer and bigint, varchar(n) and text) the room value is compared
in the chat column's type, and the keys chatsync stores in its ops tables have the chat key
columns' types. Both come from here. The room side's types are the ones the joining statements
read: the room tables' own in one database, their copies' in the ops schema when the room side has
a database of its own (where a type of the room database's own making, such as an enum, is text).

The types are read once per process and mapping (``types``); ``forget`` drops them after a schema
change (a deploy check does, and tests that alter a table).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from chatsync.config import Settings
from chatsync.errors import ConfigError
from chatsync.model.mapping import CHAT_TABLES, ROOM_TABLES, Mapping, Table, load_mapping
from chatsync.model.rules import ENTITIES, Entity, Field


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the catalog gives it."""

    name: str  # format_type(atttypid, atttypmod): "bigint", "character varying(20)", "room.room_state"
    category: str  # pg_type.typcategory: N numeric, S string, U user-defined (uuid), E enum, D date/time ...
    builtin: bool  # a pg_catalog base type (not an enum, domain or composite of the database's own)
    collation: str | None = None  # the column's collation where it is not its type's default
    base_oid: int = 0  # the type's oid (a domain's: its base type's), what pg_cast is looked up by
    collatable: bool = False  # a type compared under a collation (text, varchar, a domain over text)

    @property
    def base(self) -> str:
        """The type without its modifier: "character varying(20)" -> "character varying"."""
        return self.name.split("(")[0]


CATALOG = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory,
       t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype IN ('b', 'r', 'm'),
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN (SELECT quote_ident(n.nspname) || '.' || quote_ident(co.collname) FROM pg_collation AS co
                  JOIN pg_namespace AS n ON n.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END::bigint, t.typcollation <> 0
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = (SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relname = %s)
  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def table_columns(conn, table: Table) -> dict[str, ColumnType]:
    """column name -> type of a table (or view) in conn's database, in column order; {} when the
    table does not exist."""
    rows = conn.execute(CATALOG, (table.schema, table.name)).fetchall()
    return {row[0]: ColumnType(*row[1:]) for row in rows}


TEXT_OID = 25


def as_copied(t: ColumnType) -> ColumnType:
    """The type a room column has in its copy in the chat database: its own when it is a pg_catalog
    type (whose oid is the same in every database), text otherwise (an enum or domain of the room
    database, which the chat database lacks); with the database's default collation either way (the
    copy's columns are created without one, and a collation of the room database may not exist in
    the chat database)."""
    if t.builtin:
        return replace(t, collation=None)
    return ColumnType("text", "S", True, None, TEXT_OID, True)


DEFAULT_COLLATION = 'pg_catalog."default"'


def _is_timestamp(t: ColumnType) -> bool:
    return t.name.startswith("timestamp")


def reads_as_utc(t: ColumnType | None) -> bool:
    """A timestamp without time zone: chatsync reads it as UTC (and writes UTC into it)."""
    return t is not None and _is_timestamp(t) and "without time zone" in t.name


def _without_length(name: str) -> str:
    """A string type without its length limit (an explicit CAST to varchar(n) cuts a longer value
    to fit, where an assignment refuses it: the value is compared uncut)."""
    if name.startswith("character varying("):
        return "character varying"
    if name.startswith("character("):
        return "bpchar"
    return name


@dataclass(frozen=True)
class Conversion:
    """How a room column's value becomes a value of the chat column's type: chatsync compares,
    hashes and writes the room side's values in the chat column's type (``EntitySQL.room_value``)."""

    room: ColumnType
    chat: ColumnType
    # "none": same type and collation | "collate": same type, another collation | "cast" |
    # "text_cast": through text (an enum to another enum) | "utc": timestamp <-> timestamptz
    how: str
    target: str | None = None  # the type cast to: format_type's name (quoted), a length limit dropped
    collate: str | None = None  # the collation to compare under, where it must be said
    may_fail: bool = False  # converting some value raises (a label the chat enum lacks, a number out of range)
    may_not_fit: bool = False  # writing some value into the chat column raises (may_fail, a length limit)
    problem: str | None = None  # why the two cannot be compared: the mapping is refused


STRINGS = ("S", "E")  # categories compared as labels: strings and enums


def conversion(room: ColumnType, chat: ColumnType, context: str) -> Conversion:
    """How to compare room values in the chat column's type. context: pg_cast's castcontext from
    the room type to the chat type ('i' implicit, 'a' assignment, 'e' explicit, '' none; 'i' for the
    same base type)."""
    if room.name == chat.name and room.collation == chat.collation:
        return Conversion(room, chat, "none")
    for what, name in (("type", chat.name), ("type", room.name), ("collation", chat.collation or "")):
        if "%" in name:
            return Conversion(room, chat, "none", problem=f"chatsync cannot use a {what} name holding '%' ({name})")
    collate = None
    if chat.collatable and (room.name != chat.name or room.collation != chat.collation):
        if chat.collation is not None or (room.collatable and room.collation is not None):
            collate = chat.collation or DEFAULT_COLLATION
    if room.name == chat.name:
        return Conversion(room, chat, "collate", collate=collate)
    if _is_timestamp(room) and _is_timestamp(chat):
        how = "cast" if reads_as_utc(room) == reads_as_utc(chat) else "utc"
        return Conversion(room, chat, how, target=chat.name)
    domain = not chat.builtin and chat.category != "E"  # its constraints can refuse a value
    if room.category in STRINGS and chat.category in STRINGS:
        how = "text_cast" if room.category == chat.category == "E" else "cast"
        fails = chat.category == "E" or domain
        return Conversion(room, chat, how, target=_without_length(chat.name), collate=collate, may_fail=fails,
                          may_not_fit=fails or _without_length(chat.name) != chat.name)
    if room.category == chat.category and context in ("i", "a"):
        fails = context == "a" or "(" in chat.name or domain
        return Conversion(room, chat, "cast", target=chat.name, collate=collate, may_fail=fails, may_not_fit=fails)
    return Conversion(room, chat, "none", problem=(
        f"PostgreSQL does not convert {room.name} to {chat.name} on assignment, so chatsync cannot compare "
        "them by value: give the columns types of one kind (both numbers, both strings or enums, both "
        "timestamps...), or map a view that converts the room column"))


@dataclass(frozen=True)
class MappedTypes:
    """logical table -> logical column -> type, for the four mapped tables."""

    mapping: Mapping
    tables: dict[str, dict[str, ColumnType]]
    # (room base type oid, chat base type oid) -> pg_cast's context between them, for each compared
    # pair of columns ('i' for the same base type, '' when pg_cast has no cast)
    casts: dict[tuple[int, int], str] = field(default_factory=dict)

    def of(self, table: str, logical: str) -> ColumnType:
        return self.tables[table][logical]

    def conversion(self, entity: Entity, f: Field) -> Conversion:
        """How the room value of a compared field ("copy") becomes the chat column's type."""
        room, chat = self.of(entity.room_table, f.room), self.of(entity.chat_table, f.chat)
        context = "i" if room.base_oid == chat.base_oid else self.casts.get((room.base_oid, chat.base_oid), "")
        return conversion(room, chat, context)

    def _where(self, key: str, logical: str) -> str:
        t = self.mapping[key]
        return f"{t.qualified}.{t.columns[logical]} ({key}.{logical})"

    def problems(self) -> list[str]:
        """What of the mapped columns' types chatsync cannot compare (empty: every pair is fine)."""
        out = []
        for e in ENTITIES:
            for f in e.fields:
                room, chat = self.of(e.room_table, f.room), self.of(e.chat_table, f.chat)
                pair = (f"{self._where(e.room_table, f.room)} is {room.name} and "
                        f"{self._where(e.chat_table, f.chat)} is {chat.name}")
                if f.transform == "is_not_null":
                    if chat.category != "B":
                        out.append(f"{self._where(e.chat_table, f.chat)} is {chat.name}: it holds whether "
                                   f"{self._where(e.room_table, f.room)} is set, so it must be boolean")
                elif (problem := self.conversion(e, f).problem) is not None:
                    out.append(f"{pair}: {problem}")
            for key in (e.room_table, e.chat_table):
                t = self.of(key, "updated_at")
                if not _is_timestamp(t):
                    out.append(f"{self._where(key, 'updated_at')} is {t.name}: chatsync reads it as the time "
                               "a row last changed, so it must be timestamp with or without time zone")
        return list(dict.fromkeys(out))

    def check(self) -> None:
        """ConfigError naming the mapping file, both columns and their types, for each pair of
        columns chatsync cannot compare."""
        problems = self.problems()
        if problems:
            raise ConfigError(f"mapping {self.mapping.path}: column types chatsync cannot compare: "
                              + "; ".join(problems))


def logical_columns(mapping: Mapping, key: str, catalog: dict[str, ColumnType], where: str) -> dict[str, ColumnType]:
    """logical column -> type of the mapped table `key`, from its catalog (table_columns); a
    ConfigError naming the table or column `where` (a database) lacks."""
    table = mapping[key]
    if not catalog:
        raise ConfigError(f"mapping {mapping.path}: table {table.qualified} ({key}) does not exist in {where}")
    out = {}
    for logical, real in table.columns.items():
        if real not in catalog:
            raise ConfigError(f"mapping {mapping.path}: column {table.qualified}.{real} ({key}.{logical}) "
                              f"does not exist in {where}")
        out[logical] = catalog[real]
    return out


def read(settings: Settings, chat_conn, room_conn=None) -> MappedTypes:
    """The mapped columns' types: the chat tables' from chat_conn, the room tables' from room_conn
    (the room database; chat_conn's in one database), as the joining statements see them."""
    mapping = load_mapping(settings.mapping_path)
    tables: dict[str, dict[str, ColumnType]] = {}
    for key in CHAT_TABLES:
        tables[key] = logical_columns(mapping, key, table_columns(chat_conn, mapping[key]), "the chat database")
    two = settings.two_databases
    for key in ROOM_TABLES:
        where = "the room database" if two else "the chat database"
        found = logical_columns(mapping, key, table_columns(room_conn if two else chat_conn, mapping[key]), where)
        tables[key] = {k: as_copied(t) for k, t in found.items()} if two else found
    pairs = {(tables[e.room_table][f.room].base_oid, tables[e.chat_table][f.chat].base_oid)
             for e in ENTITIES for f in e.fields if f.transform == "copy"}
    casts = {}
    for source, target in sorted(p for p in pairs if p[0] != p[1]):
        row = chat_conn.execute("SELECT castcontext::text FROM pg_cast WHERE castsource = %s::oid "
                                "AND casttarget = %s::oid", (source, target)).fetchone()
        casts[(source, target)] = row[0] if row else ""
    return MappedTypes(mapping, tables, casts)


_READ: dict[tuple[str, str, str], MappedTypes] = {}


def types(settings: Settings) -> MappedTypes:
    """The mapped columns' types for these settings (read once per process: see forget)."""
    from chatsync.db.connection import connection

    key = (settings.require_database(), settings.room_url(), settings.mapping_path)
    if key not in _READ:
        with connection(settings) as chat_conn:
            if settings.two_databases:
                with connection(settings, side="room") as room_conn:
                    _READ[key] = read(settings, chat_conn, room_conn)
            else:
                _READ[key] = read(settings, chat_conn)
    return _READ[key]


def forget() -> None:
    """Read the types again at next use (after an ALTER of a mapped table)."""
    _READ.clear()
