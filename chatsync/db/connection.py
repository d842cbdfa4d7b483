"""Connections to Postgres, and which errors are transient (retried) rather than fatal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from chatsync.config import Settings
from chatsync.errors import ChatsyncError, ConfigError, TransientError

# SQLSTATE classes worth a retry: connection exceptions, serialization/deadlock, lock timeout,
# admin shutdown / crash recovery.
_TRANSIENT = (
    pgerrors.SerializationFailure,
    pgerrors.DeadlockDetected,
    pgerrors.LockNotAvailable,
    pgerrors.AdminShutdown,
    pgerrors.CrashShutdown,
    pgerrors.CannotConnectNow,
)


# Connection failures no retry can fix: wrong database, role or password, a port that is no port.
_FATAL_CONNECT = ("does not exist", "password authentication failed", "no password supplied",
                  "invalid connection option", "invalid port number", "invalid integer value")


def _redis_transient() -> tuple[type, ...]:
    try:
        from redis import exceptions as r
    except ImportError:  # pragma: no cover - redis is a dependency
        return ()
    return (r.ConnectionError, r.TimeoutError, r.BusyLoadingError, r.TryAgainError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TransientError, *_TRANSIENT, *_redis_transient())):
        return True
    if isinstance(exc, pgerrors.QueryCanceled):  # lock_timeout / statement_timeout
        return True
    # A bare OperationalError is a lost or refused connection.
    return type(exc) is psycopg.OperationalError


def connect(settings: Settings, *, autocommit: bool = False, application_name: str = "chatsync",
            side: str = "chat", read_only: bool = True) -> psycopg.Connection:
    """A connection to the chat side's database (chatsync's own), or with side="room" to the room
    side's: its own database when room_database_url is set, where every transaction is read only
    (chatsync never writes the room side; a replica accepts nothing else). read_only=False is for
    the reference schema of the demo and the tests only."""
    room = side == "room" and settings.two_databases
    url = settings.room_url() if room else settings.require_database()
    what = "the room database" if room else "the chatsync database"
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name=application_name,
                               connect_timeout=10)
    except psycopg.OperationalError as exc:
        text = " ".join(str(exc).split())  # libpq's message spans lines: one line
        if any(marker in text for marker in _FATAL_CONNECT):
            raise ConfigError(f"cannot use {what}: {text}") from exc
        raise TransientError(f"cannot connect to {what}: {text}") from exc
    except psycopg.ProgrammingError as exc:  # malformed conninfo
        raise ConfigError(f"invalid database URL for {what}: {exc}") from exc
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{settings.lock_timeout_ms}ms")))
    if room and read_only:
        conn.execute("SET default_transaction_read_only = on")
    if not autocommit:
        conn.commit()
    return conn


@contextmanager
def connection(settings: Settings, **kwargs) -> Iterator[psycopg.Connection]:
    """A connection that commits when the block ends cleanly and rolls back on an exception."""
    conn = connect(settings, **kwargs)
    try:
        yield conn
        if not conn.closed and not conn.autocommit:
            conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    finally:
        conn.close()


def one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row a statement returns (an aggregate, a RETURNING, a SHOW); a statement that
    returned none is a bug of ours, said as such."""
    row = cursor.fetchone()
    if row is None:
        raise ChatsyncError("a statement expected to return a row returned none")
    return row
