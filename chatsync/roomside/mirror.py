"""The copy of the room side in the chat database: its tables, their shape, their hash.

When the room side has a database of its own, PostgreSQL cannot join it to the chat side. chatsync
keeps, in its ops schema, a copy of each mapped room table (``mirror_room_rooms``,
``mirror_room_participants``): the mapped columns only, with the room database's own column types
(text for types of the room database's own making, such as enums, which the chat database does not
have), keyed like the room table. Every statement that compares the two sides reads the copy, so
the same SQL serves both topologies; ``chatsync.roomside.refresh`` keeps the copy in line with the
room database by moving only the rooms that differ.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.model import catalog
from chatsync.model.keys import Keys, keys
from chatsync.model.mapping import ROOM_TABLES, Table, load_mapping
from chatsync.model.rules import ENTITIES, Entity

log = logging.getLogger("chatsync.roomside")
COPY_FORMAT = 3  # of the copies' definition (2: unlogged, 3: key index only): a new format re-creates them
ENTITY_INDEX = {e.name: i for i, e in enumerate(ENTITIES)}  # the low byte of a copy's lock key
J = sql.SQL


@dataclass(frozen=True)
class Column:
    name: str  # the room table's (and the copy's) column name
    type: str  # the copy's type, as format_type gives it
    as_text: bool  # the room database's own type: read as text


@dataclass(frozen=True)
class Shape:
    """One room table and its copy: columns, keys, and the per-room hash both databases compute."""
    entity: Entity
    source: Table  # in the room database
    copy: Table  # in the chat database (ops schema)
    columns: tuple[Column, ...]
    keys: tuple[str, ...]  # key column names, room id first
    key_types: Keys  # how chatsync's own tables hold them

    @property
    def room_col(self) -> sql.Identifier:
        return sql.Identifier(self.keys[0])

    @property
    def signature(self) -> str:
        """What the copy's definition depends on (its comment): a change means a new copy."""
        text = repr((COPY_FORMAT, self.source.qualified, self.keys,
                     [(c.name, c.type, c.as_text) for c in self.columns]))
        return hashlib.md5(text.encode()).hexdigest()

    def column_list(self, alias: str | None = None) -> sql.Composable:
        return J(", ").join(sql.Identifier(alias, c.name) if alias else sql.Identifier(c.name)
                            for c in self.columns)

    def key_list(self, alias: str | None = None) -> sql.Composable:
        return J(", ").join(sql.Identifier(alias, k) if alias else sql.Identifier(k) for k in self.keys)

    def source_select(self, where: sql.Composable) -> sql.Composed:
        """The mapped columns of the room table as the copy stores them (binary COPY needs the
        copy's exact types)."""
        cols = [J("{}::text").format(sql.Identifier("r", c.name)) if c.as_text else sql.Identifier("r", c.name)
                for c in self.columns]
        return J("SELECT {} FROM {} AS r WHERE {}").format(J(", ").join(cols), self.source.ident, where)

    def row_hash(self, alias: str, source: bool) -> sql.Composed:
        """A 64-bit hash of a row's stored values (not their text: no session setting changes
        it), the same for a room row and its copy; xor-ed per room it is the room's fingerprint."""
        cols = [J("{}::text").format(sql.Identifier(alias, c.name)) if c.as_text and source
                else sql.Identifier(alias, c.name) for c in self.columns]
        return J("hash_record_extended(ROW({}), 0)").format(J(", ").join(cols))

    def source_fingerprints(self, where: sql.Composable) -> sql.Composed:
        """(room_id, row_count, hash) per room of the room table, computed in the room database."""
        return J("SELECT {room}::{key}, count(*)::bigint, bit_xor({h}) FROM {t} AS r WHERE {w} GROUP BY 1").format(
            room=sql.Identifier("r", self.keys[0]), key=self.key_types.room.sql_type,
            h=self.row_hash("r", source=True), t=self.source.ident, w=where)

    def key_columns(self) -> sql.Composable:
        """room_id, user_id of a room row as chatsync's own tables hold them (user NULL for rooms)."""
        cols: list[sql.Composable] = [J("{}::{}").format(sql.Identifier("r", k), t.sql_type)
                                      for k, t in zip(self.keys, (self.key_types.room, self.key_types.user))]
        if len(cols) == 1:
            cols.append(self.key_types.user.null())
        return J(", ").join(cols)

    def in_range(self, alias: str) -> sql.Composable:
        return self.key_types.room.in_range(sql.Identifier(alias, self.keys[0]))


def _entity_of(key: str) -> Entity:
    return next(e for e in ENTITIES if e.room_table == key)


def shapes(settings: Settings, room_conn) -> list[Shape]:
    """The shapes of both room tables, read from the room database's catalog."""
    mapping = load_mapping(settings.mapping_path)
    copies = mapping.with_room_mirror(settings.ops_schema)
    key_types = keys(settings)
    out = []
    for key in ROOM_TABLES:
        source = mapping[key]
        entity = _entity_of(key)
        found = catalog.logical_columns(mapping, key, catalog.table_columns(room_conn, source), "the room database")
        columns: list[Column] = []
        for logical, real in source.columns.items():
            if real in (c.name for c in columns):
                continue  # two logical names for one column: copied once
            t = found[logical]
            columns.append(Column(real, catalog.as_copied(t).name, not t.builtin))
        names = tuple(source.columns[k] for k in entity.room_key)
        out.append(Shape(entity, source, copies[key], tuple(columns), names, key_types))
    return out


def _create(conn, settings: Settings, shape: Shape) -> None:
    ops = sql.Identifier(settings.ops_schema)
    cols = J(", ").join(J("{} {}{}").format(sql.Identifier(c.name), J(c.type),
                                            J(" NOT NULL") if c.name in shape.keys else J(""))
                        for c in shape.columns)
    # CASCADE: the validation's views over it (re-created at its next run) and its fingerprint triggers
    conn.execute(J("DROP TABLE IF EXISTS {} CASCADE").format(shape.copy.ident))
    conn.execute(J("DELETE FROM {}.mirror_fingerprints WHERE entity = %s").format(ops), (shape.entity.name,))
    # unlogged: a copy the next pass rebuilds, should a crash empty it (with its fingerprints)
    # only the key's index: the copy is read by key and by room-id range, never by updated_at (the
    # incremental scope reads the room side's changed keys in the room database)
    conn.execute(J("CREATE UNLOGGED TABLE {} ({}, PRIMARY KEY ({}))").format(shape.copy.ident, cols, shape.key_list()))
    conn.execute(J("COMMENT ON TABLE {} IS {}").format(shape.copy.ident, sql.Literal(
        f"chatsync: copy of {shape.source.qualified} from the room database; shape {shape.signature}")))
    log.info("created %s, the copy of the room database's %s", shape.copy.qualified, shape.source.qualified)


def ensure(settings: Settings) -> list[Shape]:
    """The copies exist with the room tables' current shape (created, or re-created empty when the
    mapping or the room table's types changed); returns the shapes. Idempotent."""
    with connection(settings, side="room") as room_conn:
        wanted = shapes(settings, room_conn)
    with connection(settings) as conn, conn.transaction():
        for shape in wanted:
            comment = one(conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                                       (shape.copy.ident.as_string(conn),)))[0]
            if not comment or not comment.endswith(shape.signature):
                _create(conn, settings, shape)
    return wanted
