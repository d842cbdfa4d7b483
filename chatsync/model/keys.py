"""The room and user keys' type: what the mapped key columns hold, how chatsync stores and parses them.

The chat tables' key columns decide it (read from the catalog, ``chatsync.model.catalog``): room and
user ids may be whole numbers (smallint, integer, bigint), uuids or strings (text, varchar). The
room side's key columns must be of the same kind. chatsync's ops tables hold keys in one column
type per kind (bigint, uuid or text: ``KeyType.column``), set by ``chatsync init`` (``ensure_ops``)
and checked before every pass; the CLI, the event envelope, the DAG params and the cache parse a key
given as text with ``KeyType.parse``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from psycopg import sql

from chatsync.config import WHOLE_NUMBER, Settings
from chatsync.errors import ConfigError
from chatsync.model import catalog
from chatsync.model.catalog import ColumnType

log = logging.getLogger("chatsync.keys")
Key = int | uuid.UUID | str  # a room or user id as the database gives it, of the mapped kind
J = sql.SQL

# catalog type (without modifier) -> kind
KINDS = {"smallint": "integer", "integer": "integer", "bigint": "integer",
         "uuid": "uuid", "text": "text", "character varying": "text"}
COLUMN = {"integer": "bigint", "uuid": "uuid", "text": "text"}  # the ops tables' column type per kind
INTEGER_SPANS = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
SUPPORTED = "smallint, integer, bigint, uuid, text or varchar"


@dataclass(frozen=True)
class KeyType:
    """One key (room id or user id): its kind and the chat column's own type."""

    what: str  # "room id" | "user id", for messages
    kind: str  # "integer" | "uuid" | "text"
    chat_type: str  # the chat key column's type, e.g. "integer", "character varying(64)"

    @property
    def column(self) -> str:
        """The ops tables' column type for this key."""
        return COLUMN[self.kind]

    @property
    def sql_type(self) -> sql.Composable:
        """The ops column type, to cast a bound array or NULL with: %(rooms)s::{}[]."""
        return J(self.column)

    def null(self) -> sql.Composable:
        return J("NULL::{}").format(self.sql_type)

    def array(self, name: str) -> sql.Composable:
        """The bound list parameter ``name`` as an array of this key: %(name)s::bigint[]."""
        return J("{}::{}[]").format(sql.Placeholder(name), self.sql_type)

    def in_code_point_order(self, col: sql.Composable) -> sql.Composable:
        """col to ORDER BY where Python compares the keys too (a merge of two ordered streams):
        strings by code point, as Python orders them, whatever the column's collation."""
        return J('{} COLLATE "C"').format(col) if self.kind == "text" else col

    def in_range(self, col: sql.Composable, lo: str = "room_lo", hi: str = "room_hi") -> sql.Composable:
        """col in [%(lo)s, %(hi)s), a NULL bound leaving that end open (strings have no greatest
        value to stand for "every key above")."""
        # CAST(...): a statement bound on the client (COPY) holds the value as a literal, and
        # -9223372036854775808::bigint would read as -(9223372036854775808::bigint)
        return J("(CAST({lo} AS {t}) IS NULL OR {col} >= {lo}) AND (CAST({hi} AS {t}) IS NULL OR {col} < {hi})").format(
            lo=sql.Placeholder(lo), hi=sql.Placeholder(hi), t=self.sql_type, col=col)

    def parse(self, raw: object) -> int | uuid.UUID | str:
        """A key given as text (a CLI argument, an event field, a DAG param) as the value the
        database compares; ValueError with a message naming the expected type otherwise."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if self.kind == "integer":
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ValueError(f"{self.what} must be a whole number, got {raw!r}")
            text = str(raw).strip()
            most = INTEGER_SPANS[self.chat_type] - 1
            # ASCII digits, measured as text first (int() takes other scripts' digits, and is slow on many)
            if not WHOLE_NUMBER.fullmatch(text) or len(text.lstrip("0")) > len(str(most)) or not 1 <= int(text) <= most:
                raise ValueError(f"{self.what} must be a whole number from 1 to {most} "
                                 f"(the key column is {self.chat_type}), got {str(raw)[:60]!r}")
            return int(text)
        if isinstance(raw, uuid.UUID) and self.kind == "uuid":
            return raw
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise ValueError(f"{self.what} must be {'a uuid' if self.kind == 'uuid' else 'a string'}, got {raw!r}")
        text = str(raw)
        if self.kind == "uuid":
            try:
                return uuid.UUID(text.strip())
            except ValueError:
                raise ValueError(f"{self.what} must be a uuid (the key column is uuid), got {raw!r}") from None
        limit = _length_limit(self.chat_type)
        if not text or "\x00" in text or (limit is not None and len(text) > limit):
            raise ValueError(f"{self.what} must be a non-empty string without NUL"
                             + (f" of at most {limit} characters" if limit is not None else "")
                             + f" (the key column is {self.chat_type}), got {raw!r}")
        return text

    def even_cuts(self, least, greatest, parts: int) -> list:
        """parts - 1 keys cutting [least, greatest] evenly (whole numbers and uuids, as 128-bit numbers)."""
        if self.kind == "uuid":
            a, b = least.int, greatest.int
            return [uuid.UUID(int=a + (b - a + 1) * i // parts) for i in range(1, parts)]
        return [least + (greatest - least + 1) * i // parts for i in range(1, parts)]

    def parse_all(self, values, where: str) -> list:
        """Several keys (a DAG param, an XCom's list) parsed; ConfigError naming `where` otherwise."""
        try:
            return [self.parse(v) for v in values]
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def json_keys(values) -> list:
    """Keys as JSON holds them (XCom, a run's record, a summary): whole numbers as numbers, uuids
    as text (a statement binds text for a uuid, which its cast or comparison reads back)."""
    return [str(v) if isinstance(v, uuid.UUID) else v for v in values]


def _length_limit(chat_type: str) -> int | None:
    if "(" in chat_type:
        return int(chat_type.split("(")[1].rstrip(")"))
    return None


@dataclass(frozen=True)
class Keys:
    room: KeyType
    user: KeyType

    def of(self, name: str) -> KeyType:
        return self.room if name == "room_id" else self.user


def _kind(t: ColumnType, where: str) -> str:
    kind = KINDS.get(t.base)
    if kind is None:
        raise ConfigError(f"{where} is {t.name}: chatsync compares keys of type {SUPPORTED}")
    return kind


def from_types(types: catalog.MappedTypes) -> Keys:
    """The keys' types from the mapped columns' types; a ConfigError naming the columns when a key
    column has a type chatsync does not handle or the two sides' key kinds differ."""
    mapping = types.mapping

    def where(table: str, logical: str) -> str:
        t = mapping[table]
        return f"mapping {mapping.path}: {t.qualified}.{t.columns[logical]} ({table}.{logical})"

    # (what, the chat column deciding it, every other column holding it)
    plan = (("room id", ("chat_rooms", "room_id"),
             (("chat_participants", "room_id"), ("room_rooms", "id"), ("room_participants", "room_id"))),
            ("user id", ("chat_participants", "user_id"), (("room_participants", "user_id"),)))
    out = []
    for what, (table, logical), others in plan:
        chat = types.of(table, logical)
        kind = _kind(chat, where(table, logical))
        for other_table, other_logical in others:
            other = types.of(other_table, other_logical)
            if _kind(other, where(other_table, other_logical)) != kind:
                raise ConfigError(f"{where(other_table, other_logical)} is {other.name} but "
                                  f"{where(table, logical)} is {chat.name}: a key's columns must all be "
                                  "whole numbers, all uuids or all strings")
        out.append(KeyType(what, kind, chat.name))
    return Keys(*out)


def keys(settings: Settings) -> Keys:
    """The keys' types for these settings (from the catalog, read once per process)."""
    return from_types(catalog.types(settings))


# -- the ops tables' key columns ------------------------------------------------------------------

KEY_COLUMNS = ("room_id", "user_id")
OPS_KEY_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'u')
  AND a.attname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname NOT LIKE 'mirror\\_room\\_%%'  -- the copies of the room tables have the room's own types
  AND c.relpersistence <> 't'
ORDER BY 1, 2
"""


def ops_key_columns(conn, settings: Settings) -> list[tuple[str, str, str]]:
    """(table, column, type) of every key column of the ops tables."""
    return conn.execute(OPS_KEY_COLUMNS, (settings.ops_schema, list(KEY_COLUMNS))).fetchall()


def mismatched(conn, settings: Settings, wanted: Keys) -> list[tuple[str, str, str]]:
    return [(t, c, typ) for t, c, typ in ops_key_columns(conn, settings) if typ != wanted.of(c).column]


def ensure_ops(conn, settings: Settings, wanted: Keys) -> list[str]:
    """In conn's transaction: the ops tables' key columns hold the mapped keys' type. A column of
    another type is converted in place, keeping its rows (whole numbers become text; a value the
    new type cannot hold is refused, naming the table). Returns the columns converted."""
    ops = settings.ops_schema
    changed = []
    todo = mismatched(conn, settings, wanted)
    # a column a view reads cannot change type: the ops schema's views are dropped and made again
    # after (the validation's gx_ views are made again by its next run)
    views = [] if not todo else conn.execute(
        "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class AS c "
        "WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'v'", (ops,)).fetchall()
    for view, _ in views:
        conn.execute(J("DROP VIEW IF EXISTS {} CASCADE").format(sql.Identifier(ops, view)))
    for table, column, current in todo:
        new = wanted.of(column).column
        try:
            with conn.transaction():
                conn.execute(J("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::text::{}").format(
                    sql.Identifier(ops, table), sql.Identifier(column), J(new), sql.Identifier(column), J(new)))
        except Exception as exc:  # noqa: BLE001 - one line naming the table, whatever the cast said
            first = str(exc).splitlines()[0]
            raise ConfigError(f"cannot store {wanted.of(column).what}s of the mapped type {new} in "
                              f"{ops}.{table}.{column} ({current}): {first}; its rows were written for "
                              "another mapping: empty the table or use another ops schema") from exc
        changed.append(f"{table}.{column}: {current} -> {new}")
        log.info("ops table %s.%s: key column %s converted from %s to %s", ops, table, column, current, new)
    for view, definition in views:
        if not view.startswith("gx_"):
            body = J(definition.rstrip().rstrip(";"))  # the catalog's own text of the view
            conn.execute(J("CREATE VIEW {} AS {}").format(sql.Identifier(ops, view), body))
    return changed


def check_ops(conn, settings: Settings, wanted: Keys) -> None:
    """Refuse to run when the ops tables' key columns do not hold the mapped keys' type."""
    wrong = mismatched(conn, settings, wanted)
    if wrong:
        table, column, typ = wrong[0]
        raise ConfigError(f"the ops schema {settings.ops_schema} stores {column} as {typ} but the mapping's "
                          f"{wanted.of(column).what}s are {wanted.of(column).chat_type}: run `chatsync init` "
                          f"to convert {len(wrong)} key column(s)")
