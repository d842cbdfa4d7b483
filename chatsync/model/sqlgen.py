"""SQL fragments generated from the rules and the mapping.

The statements themselves live in chatsync/sql/<area>/*.sql; what varies with the rules (the compared
columns, the kinds, the key columns) is built here, once, so the diff, the repair and the
validation can never disagree about what "consistent" means. Only identifiers and the rules'
own constants are composed in; run values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.errors import ConfigError
from chatsync.model import catalog
from chatsync.model.catalog import ColumnType, Conversion, MappedTypes
from chatsync.model.keys import Keys, keys
from chatsync.model.mapping import Mapping, Table, load_mapping
from chatsync.model.rules import ENTITIES, Entity, Field

J = sql.SQL  # shorthand for fixed SQL text


def _and(parts: list[sql.Composable]) -> sql.Composable:
    return J(" AND ").join(parts)


def _or(parts: list[sql.Composable]) -> sql.Composable:
    return J(" OR ").join(parts)


# -- column types -----------------------------------------------------------------------------
# Values are compared in the chat column's type (chatsync.model.catalog.Conversion): the room
# value cast to it where the two columns' types or collations differ, nothing where they are the
# same (the statements are then those of equal types: same plans). A timestamp without time zone
# is read as UTC wherever it meets a point in time (the watermark, clock_timestamp()), whatever the
# session's TimeZone. Type and collation names come from the catalog (format_type, quote_ident).

def converted(conv: Conversion | None, value: sql.Composable) -> sql.Composable:
    """value (of the room column's type) in the chat column's type."""
    if conv is None or conv.how == "none":
        return value
    out = value
    if conv.how == "utc":
        out = J("CAST(({} AT TIME ZONE 'UTC') AS {})").format(value, J(conv.target or ""))
    elif conv.how == "text_cast":
        out = J("CAST(CAST({} AS text) AS {})").format(value, J(conv.target or ""))
    elif conv.how == "cast":
        out = J("CAST({} AS {})").format(value, J(conv.target or ""))
    if conv.collate:
        out = J("({} COLLATE {})").format(out, J(conv.collate))
    return out


def changed_since(col: sql.Composable, t: ColumnType | None,
                  since: sql.Composable = sql.Placeholder("since")) -> sql.Composable:
    """col >= since (a bound timestamptz), a timestamp without time zone read as UTC: the bound
    value is converted, not the column, so an index on the column still serves."""
    if catalog.reads_as_utc(t):
        return J("{} >= ({}::timestamptz AT TIME ZONE 'UTC')").format(col, since)
    return J("{} >= {}").format(col, since)


def now_for(t: ColumnType | None) -> sql.Composable:
    """The time of the write for a column of type t: clock_timestamp(), as UTC in a timestamp
    without time zone (an assignment would convert it by the session's TimeZone)."""
    if catalog.reads_as_utc(t):
        return J("(clock_timestamp() AT TIME ZONE 'UTC')")
    return J("clock_timestamp()")


@dataclass(frozen=True)
class EntitySQL:
    entity: Entity
    room: Table
    chat: Table
    keys: Keys
    # the mapped columns' types (None: compare as they are, the statements of equal types)
    types: MappedTypes | None = None

    @classmethod
    def build(cls, entity: Entity, mapping: Mapping, keys: Keys, types: MappedTypes | None = None) -> EntitySQL:
        return cls(entity, mapping[entity.room_table], mapping[entity.chat_table], keys, types)

    # -- column references ------------------------------------------------------------------
    def rc(self, logical: str, alias: str = "r") -> sql.Composable:
        return self.room.col(logical, alias)

    def cc(self, logical: str, alias: str = "c") -> sql.Composable:
        return self.chat.col(logical, alias)

    def conversion(self, f: Field) -> Conversion | None:
        """How a "copy" field's room value becomes the chat column's type (None: no types known,
        or not a copy)."""
        if self.types is None or f.transform != "copy":
            return None
        return self.types.conversion(self.entity, f)

    def room_value(self, f: Field, alias: str = "r") -> sql.Composable:
        """The value the chat column must hold, computed from the room row, in the chat column's
        type (and collation)."""
        col = self.rc(f.room, alias)
        if f.transform == "is_not_null":
            return J("({} IS NOT NULL)").format(col)
        return converted(self.conversion(f), col)

    def updated_type(self, side: str) -> ColumnType | None:
        if self.types is None:
            return None
        return self.types.of(self.entity.room_table if side == "room" else self.entity.chat_table, "updated_at")

    def changed_since(self, side: str, alias: str | None = None,
                      since: sql.Composable = sql.Placeholder("since")) -> sql.Composable:
        """One side's updated_at >= since (a bound timestamptz; see changed_since)."""
        if side == "room":
            col = self.rc("updated_at", alias or "r")
        else:
            col = self.cc("updated_at", alias or "c")
        return changed_since(col, self.updated_type(side), since)

    def chat_now(self) -> sql.Composable:
        """What a repair writes into the chat row's updated_at."""
        return now_for(self.updated_type("chat"))

    def field_differs(self, f: Field, r: str = "r", c: str = "c") -> sql.Composable:
        return J("{} IS DISTINCT FROM {}").format(self.room_value(f, r), self.cc(f.chat, c))

    # -- keys ---------------------------------------------------------------------------------
    def key_pairs(self):
        return list(zip(self.entity.room_key, self.entity.chat_key))

    def room_key_is_null(self, r: str = "r") -> sql.Composable:
        return J("{} IS NULL").format(self.rc(self.entity.room_key[0], r))

    def chat_key_is_null(self, c: str = "c") -> sql.Composable:
        return J("{} IS NULL").format(self.cc(self.entity.chat_key[0], c))

    def join_room_chat(self, r: str = "r", c: str = "c") -> sql.Composable:
        return _and([J("{} = {}").format(self.room_key(rk, ck, r), self.cc(ck, c)) for rk, ck in self.key_pairs()])

    def room_key(self, rk: str, ck: str, r: str = "r") -> sql.Composable:
        """A room key column to compare with its chat one: in the chat column's collation when the
        two string keys' collations differ (PostgreSQL refuses to pick one)."""
        col = self.rc(rk, r)
        if self.types is None:
            return col
        room, chat = self.types.of(self.entity.room_table, rk), self.types.of(self.entity.chat_table, ck)
        if room.collatable and chat.collatable and room.collation != chat.collation:
            return J("({} COLLATE {})").format(col, J(chat.collation or '"default"'))
        return col

    def join_chat_to(self, other: str, c: str = "c") -> sql.Composable:
        """Chat key = other.room_id [, other.user_id] (findings / audit / scope rows)."""
        names = ("room_id", "user_id")
        return _and([J("{} = {}").format(self.cc(ck, c), sql.Identifier(other, n))
                     for ck, n in zip(self.entity.chat_key, names)])

    def join_room_to(self, other: str, r: str = "r") -> sql.Composable:
        names = ("room_id", "user_id")
        return _and([J("{} = {}").format(self.rc(rk, r), sql.Identifier(other, n))
                     for rk, n in zip(self.entity.room_key, names)])

    def same_user(self, a: str, b: str) -> sql.Composable:
        """a.user_id matches b.user_id for rows of this entity (ops tables, findings), written so
        an index on (room_id, user_id) can use it: IS NOT DISTINCT FROM cannot."""
        if self.entity.has_user:
            return J("{} = {}").format(sql.Identifier(a, "user_id"), sql.Identifier(b, "user_id"))
        return J("{} IS NULL AND {} IS NULL").format(sql.Identifier(a, "user_id"), sql.Identifier(b, "user_id"))

    def is_entity_finding(self, alias: str | None = None) -> sql.Composable:
        """True for findings of this entity (room-level findings have no user): a condition the
        findings' (run, room, user) index checks on its own entries, so a batch's scan for one
        entity's findings does not fetch the rows of the other's (20 ms -> 1 ms per batch at 10M)."""
        col = sql.Identifier(alias, "user_id") if alias else sql.Identifier("user_id")
        return J("{} IS NOT NULL" if self.entity.has_user else "{} IS NULL").format(col)

    def key_out(self) -> sql.Composable:
        """room_id, user_id of a FULL OUTER JOIN row (user_id NULL for room-level entities)."""
        out: list[sql.Composable] = [J("coalesce({}, {}) AS room_id").format(self.rc(self.entity.room_key[0]),
                                                     self.cc(self.entity.chat_key[0]))]
        if self.entity.has_user:
            out.append(J("coalesce({}, {}) AS user_id").format(self.rc(self.entity.room_key[1]),
                                                             self.cc(self.entity.chat_key[1])))
        else:
            out.append(J("{} AS user_id").format(self.keys.user.null()))
        return J(", ").join(out)

    def chat_key_cols(self, alias: str | None = None, as_names: bool = False) -> sql.Composable:
        names = ("room_id", "user_id")
        cols = []
        for ck, n in zip(self.entity.chat_key, names):
            col = self.chat.col(ck, alias) if alias else self.chat.col(ck)
            cols.append(J("{} AS {}").format(col, sql.Identifier(n)) if as_names else col)
        if as_names and not self.entity.has_user:
            cols.append(J("{} AS user_id").format(self.keys.user.null()))
        return J(", ").join(cols)

    def room_scope_col(self, side: str) -> sql.Composable:
        """The room-id column of one side, for scope filters."""
        if side == "room":
            return self.room.col(self.entity.room_key[0])
        return self.chat.col(self.entity.chat_key[0])

    # -- the rules ----------------------------------------------------------------------------
    def differs(self) -> sql.Composable:
        """True for a FULL OUTER JOIN row that breaks any rule."""
        return _or([self.room_key_is_null(), self.chat_key_is_null()]
                   + [self.field_differs(f) for f in self.entity.fields])

    def still_differs(self, r: str = "r", c: str = "c") -> sql.Composable:
        return _or([self.field_differs(f, r, c) for f in self.entity.fields])

    def kinds_array(self) -> sql.Composable:
        """ARRAY of the kinds a FULL OUTER JOIN row breaks (NULL where a rule holds)."""
        e = self.entity
        both = _and([J("NOT ({})").format(self.room_key_is_null()),
                     J("NOT ({})").format(self.chat_key_is_null())])
        items = [J("CASE WHEN {} THEN {} WHEN {} THEN {} END").format(
            self.chat_key_is_null(), sql.Literal(e.missing_kind),
            self.room_key_is_null(), sql.Literal(e.orphan_kind))]
        for kind in e.mismatch_kinds:
            fields = [f for f in e.fields if f.kind == kind]
            items.append(J("CASE WHEN {} AND ({}) THEN {} END").format(
                both, _or([self.field_differs(f) for f in fields]), sql.Literal(kind)))
        return J("ARRAY[{}]::text[]").format(J(", ").join(items))

    def chat_digest(self, c: str = "c") -> sql.Composable:
        """A 64-bit hash of the compared chat columns and updated_at: any chat write between
        detect and repair changes it (even one that rewrites the value detection saw). It hashes
        the stored values, not their text, so a session's TimeZone or DateStyle cannot change it
        (and repair pays no text formatting per row)."""
        cols = J(", ").join([self.cc(f.chat, c) for f in self.entity.fields] + [self.cc("updated_at", c)])
        return J("hash_record_extended(ROW({}), 0)::text").format(cols)

    def row_hash(self, side: str) -> sql.Composable:
        """A chained 64-bit hash of a row's user key and compared values, equal for a room row
        (alias r) and the chat row that matches it (alias c): the per-room fingerprints."""
        null = sql.Literal("\u2400")  # NULL hashes as a symbol no value of these columns holds
        if side == "room":
            parts = ([self.rc(k, "r") for k in self.entity.room_key[1:]]
                     + [self._hashed_room_value(f) for f in self.entity.fields])
        else:
            parts = ([self.cc(k, "c") for k in self.entity.chat_key[1:]]
                     + [self.cc(f.chat, "c") for f in self.entity.fields])
        h: sql.Composable = J("0::bigint")
        for part in parts:
            h = J("hashtextextended(coalesce(({})::text, {}), {})").format(part, null, h)
        return h

    def _hashed_room_value(self, f: Field) -> sql.Composable:
        """The room value row_hash renders: in the chat column's type, so that both sides render
        the same type; the room column's own where that conversion can fail (the room side's hash
        is computed by a trigger on the room table in one database, and must never refuse an
        application's write: a room row the chat type cannot hold then fails at detect, which
        says so; equal values of the two types mostly render alike, and a room whose values do
        not is diffed row by row, never reported for it)."""
        conv = self.conversion(f)
        if conv is not None and conv.may_fail:
            return self.rc(f.room, "r")
        return self.room_value(f, "r")

    def chat_digest_or_null(self, c: str = "c") -> sql.Composable:
        return J("CASE WHEN {} THEN NULL ELSE {} END").format(self.chat_key_is_null(c), self.chat_digest(c))

    # -- repair ----------------------------------------------------------------------------
    def insert_columns(self) -> sql.Composable:
        cols = [self.chat.col(k) for k in self.entity.chat_key]
        cols += [self.chat.col(f.chat) for f in self.entity.fields]
        cols += [self.chat.col(c) for c, _ in self.entity.chat_defaults]
        cols.append(self.chat.col("updated_at"))
        return J(", ").join(cols)

    def insert_values(self, r: str = "r") -> sql.Composable:
        vals = [self.rc(k, r) for k in self.entity.room_key]
        vals += [self.room_value(f, r) for f in self.entity.fields]
        vals += [sql.Literal(v) for _, v in self.entity.chat_defaults]
        vals.append(self.chat_now())
        return J(", ").join(vals)

    def set_from_room(self, r: str = "r") -> sql.Composable:
        sets = [J("{} = {}").format(self.chat.col(f.chat), self.room_value(f, r)) for f in self.entity.fields]
        sets.append(J("{} = {}").format(self.chat.col("updated_at"), self.chat_now()))
        return J(", ").join(sets)

    def chat_columns_all(self) -> sql.Composable:
        """Every mapped chat column (for restoring a before-image)."""
        return J(", ").join(self.chat.col(c) for c in self.chat.columns)

    def chat_columns_from(self, alias: str) -> sql.Composable:
        return J(", ").join(self.chat.col(c, alias) for c in self.chat.columns)

    def common(self, ops: str) -> dict[str, sql.Composable]:
        """Placeholders shared by every statement of this entity."""
        return {
            "ops": sql.Identifier(ops),
            "room": self.room.ident,
            "chat": self.chat.ident,
            "entity": sql.Literal(self.entity.name),
        }


def joined_mapping(settings: Settings) -> Mapping:
    """The mapping the statements joining both sides read: the room tables themselves in one
    database, their copies in the ops schema when the room side has a database of its own."""
    mapping = load_mapping(settings.mapping_path)
    return mapping.with_room_mirror(settings.ops_schema) if settings.two_databases else mapping


def entity_sql(settings: Settings) -> list[EntitySQL]:
    mapping = joined_mapping(settings)
    mapped = keys(settings)
    types = catalog.types(settings)
    return [EntitySQL.build(e, mapping, mapped, types) for e in ENTITIES]


def source_entity_sql(settings: Settings) -> list[EntitySQL]:
    """The entities over the mapped tables themselves (the room side's real tables, in the room
    database when it has its own)."""
    mapping = load_mapping(settings.mapping_path)
    mapped = keys(settings)
    # the types are those of the tables the joining statements read (the copies' with two
    # databases): these entities' statements read the room database alone and compare no values
    types = None if settings.two_databases else catalog.types(settings)
    return [EntitySQL.build(e, mapping, mapped, types) for e in ENTITIES]


# -- a room value the chat column's type cannot hold --------------------------------------------

def explain_value_error(entities: Iterable[EntitySQL], exc: BaseException) -> ConfigError | None:
    """One line for an error a conversion of a room value into the chat column's type raised
    (a label the chat enum lacks, a number out of its range, a text too long for it), naming the
    columns; None when no mapped pair converts that way (the error is then not ours to explain)."""
    if not isinstance(exc, (psycopg.errors.DataError, psycopg.errors.CheckViolation)):
        return None
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, psycopg.errors.CheckViolation) and exc.diag.table_name:
        return None  # a table's CHECK constraint, not a type's
    candidates: list[tuple[EntitySQL, Field, Conversion]] = []
    for es in entities:
        for f in es.entity.fields:
            conv = es.conversion(f)
            if conv is not None and conv.may_not_fit:
                candidates.append((es, f, conv))

    def said(t: ColumnType) -> bool:  # PostgreSQL names the type: "integer out of range", "... enum x.grade: ..."
        return any(name in first for name in (t.name, t.name.split(".")[-1], t.name.split("(")[0]))
    named = [c for c in candidates if said(c[2].chat)]
    if not named:
        return None  # not one of these conversions: the error as it is
    types = named[0][0].types
    assert types is not None  # (a conversion: the types are known)
    mapping = types.mapping

    def column(key: str, logical: str, t: ColumnType) -> str:  # the mapped table, not the room side's copy
        return f"{mapping[key].qualified}.{mapping[key].columns[logical]} ({t.name})"
    pairs = "; ".join(f"{column(es.entity.room_table, f.room, conv.room)} -> "
                      f"{column(es.entity.chat_table, f.chat, conv.chat)}" for es, f, conv in named)
    return ConfigError(f"a room value does not fit the chat column's type ({pairs}; mapping {mapping.path}): "
                       f"{first}. chatsync compares and repairs room values in the chat column's type: correct "
                       "the room row, or widen the chat column's type (add the enum label, a longer varchar...)")


@contextmanager
def value_errors(entities: Iterable[EntitySQL]) -> Iterator[None]:
    """explain_value_error for the statements run inside."""
    try:
        yield
    except (psycopg.errors.DataError, psycopg.errors.CheckViolation) as exc:
        explained = explain_value_error(list(entities), exc)
        if explained is None:
            raise
        raise explained from exc
