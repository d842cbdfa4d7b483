"""chatsync's SQL statements: package data under ``chatsync/sql/<area>/<name>.sql``, read through
importlib.resources (so they travel in the wheel), found by name, composed with quoted identifiers.

A statement's file name is unique across the areas (checked when the folder is first read), so a
caller names the statement, not where it lives.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property, lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING

from psycopg import sql

from chatsync.config import Settings
from chatsync.errors import ConfigError

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable


class SqlFolder:
    """The ``sql/`` folder of a package (``migrations/`` aside): statements by file name; a name
    not found here is looked up in ``fallback`` (the development package's folder falls back to
    chatsync's)."""

    def __init__(self, package: str, fallback: SqlFolder | None = None):
        self.package = package
        self.fallback = fallback

    @cached_property
    def paths(self) -> dict[str, Traversable]:
        found: dict[str, Traversable] = {}

        def walk(folder: Traversable) -> None:
            for entry in folder.iterdir():
                if entry.is_dir() and entry.name != "migrations":
                    walk(entry)
                elif entry.name.endswith(".sql") and entry.is_file():
                    name = entry.name.removesuffix(".sql")
                    if name in found:
                        raise ConfigError(f"two SQL statements named {name!r} in {self.package}/sql")
                    found[name] = entry
        walk(files(self.package) / "sql")
        return found

    @lru_cache(maxsize=256)  # noqa: B019 - the folders are module-level, alive for the process anyway
    def text(self, name: str) -> str:
        path = self.paths.get(name)
        if path is not None:
            return path.read_text(encoding="utf-8")
        if self.fallback is not None:
            return self.fallback.text(name)
        raise ConfigError(f"no SQL statement {name!r} in {self.package}/sql")

    def compose(self, settings: Settings, name: str, **parts: sql.Composable) -> sql.Composed:
        """The statement with its {placeholders} filled by composed identifiers/fragments.

        Values are never formatted in: they stay %(name)s placeholders bound at execute time.
        """
        text = self.text(name)
        if "{unsettled_runs}" in text and "unsettled_runs" not in parts:
            parts["unsettled_runs"] = unsettled_runs(settings)
        if "_key_type}" in text:  # the ops tables' column types of the mapped keys
            from chatsync.model.keys import keys

            mapped = keys(settings)
            parts.setdefault("room_key_type", mapped.room.sql_type)
            parts.setdefault("user_key_type", mapped.user.sql_type)
        return sql.SQL(text).format(**parts)


STATEMENTS = SqlFolder("chatsync")


def read_sql(name: str) -> str:
    return STATEMENTS.text(name)


def bytea_array_text(parts: Iterable[bytes] | None) -> str | None:
    """The text form of a bytea[] value, each element in hex ('{"\\\\x6b6579",...}'), for a
    statement to cast with ::bytea[]: arrays of bytea of different lengths, one per row, bound as
    one text[] (a bytea[][] must be rectangular). None stays NULL."""
    if parts is None:
        return None
    return "{" + ",".join(f'"\\\\x{bytes(part).hex()}"' for part in parts) + "}"


def ops_ident(settings: Settings) -> sql.Identifier:
    """chatsync's own schema, quoted, for composed statements."""
    return sql.Identifier(settings.ops_schema)


def sql_file(settings: Settings, name: str, **parts: sql.Composable) -> sql.Composed:
    """chatsync's statement ``name`` (see SqlFolder.compose)."""
    return STATEMENTS.compose(settings, name, **parts)


def unsettled_runs(settings: Settings) -> sql.Composed:
    """The runs that may still hold unresolved findings, as an array expression
    (sql/db/unsettled_runs.sql, its comment left out of the statements that use it)."""
    text = "\n".join(line for line in read_sql("unsettled_runs").splitlines()
                     if not line.lstrip().startswith("--"))
    return sql.SQL(text.strip()).format(ops=ops_ident(settings))
