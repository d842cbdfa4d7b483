"""Versioned, idempotent migrations of the ops schema (package data: chatsync/sql/migrations/NNN_name.sql)."""

from __future__ import annotations

import logging
import re
from importlib.resources import files
from typing import TYPE_CHECKING

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection
from chatsync.db.locks import MIGRATION_LOCK
from chatsync.db.statements import read_sql
from chatsync.errors import ConfigError

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable

log = logging.getLogger("chatsync.migrations")


_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
MIGRATIONS: Traversable = files("chatsync") / "sql" / "migrations"


def available(settings: Settings) -> list[tuple[int, str, Traversable]]:
    found = []
    for path in sorted((p for p in MIGRATIONS.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError(f"migration file {path} is not named NNN_name.sql")
        found.append((int(m.group(1)), m.group(2), path))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"duplicate migration versions in {MIGRATIONS}")
    return found


def applied(conn, settings: Settings) -> set[int]:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{settings.ops_schema}.schema_migrations",)).fetchone()[0]
    if not exists:
        return set()
    rows = conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(
        sql.Identifier(settings.ops_schema))).fetchall()
    return {r[0] for r in rows}


def pending(settings: Settings) -> list[tuple[int, str]]:
    with connection(settings) as conn:
        done = applied(conn, settings)
    return [(v, n) for v, n, _ in available(settings) if v not in done]


def migrate(settings: Settings, *, reference_schema: bool = False) -> list[str]:
    """Apply every pending migration, each in its own transaction. Returns what was applied."""
    ops = sql.Identifier(settings.ops_schema)
    done_now: list[str] = []
    with connection(settings) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            with conn.transaction():
                if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.ops_schema,)).fetchone():
                    # only then: CREATE SCHEMA needs CREATE on the database, which a least-privilege
                    # role (`chatsync grants`) lacks; its administrator created the schema for it
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(ops))
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())").format(ops))
            done = applied(conn, settings)
            for version, name, path in available(settings):
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.SQL(path.read_text()).format(ops=ops))
                    conn.execute(sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)")
                                 .format(ops), (version, name))
                log.info("applied migration %03d_%s", version, name)
                done_now.append(f"{version:03d}_{name}")
            if reference_schema:
                with conn.transaction():
                    conn.execute(read_sql("reference_schema_chat"))
                    if not settings.two_databases:
                        conn.execute(read_sql("reference_schema_room"))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            conn.commit()
    if settings.two_databases:
        if reference_schema:  # the demo's and the tests' room service: chatsync itself only reads there
            with connection(settings, side="room", read_only=False) as room_conn:
                room_conn.execute(read_sql("reference_schema_room"))
        from chatsync.roomside import refresh

        refresh.forget_shapes()
        refresh.shapes(settings)  # the copies of the room tables, shaped after the room database's
    done_now += _key_columns(settings)
    return done_now


def _key_columns(settings: Settings) -> list[str]:
    """The ops tables' key columns in the mapped keys' type (bigint, uuid or text), converting
    those of another type in place; nothing while the mapped tables do not exist yet (the next
    `chatsync init` does it, and every pass refuses to run until then)."""
    from chatsync.model import catalog, keys

    catalog.forget()  # the tables may have just been created or altered
    try:
        wanted = keys.keys(settings)
    except ConfigError as exc:
        if "does not exist" not in str(exc):
            raise
        log.info("ops key columns left as they are until the mapped tables exist: %s", exc)
        return []
    with connection(settings) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        return [f"key column {c}" for c in keys.ensure_ops(conn, settings, wanted)]

