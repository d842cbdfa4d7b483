"""Connections, SQL files and the transient-error retry."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from chatsync.config import Settings
from chatsync.errors import ChatsyncError, ConfigError, TransientError

log = logging.getLogger("chatsync.db")
T = TypeVar("T")

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


def connect(settings: Settings, *, autocommit: bool = False, application_name: str = "chatsync") -> psycopg.Connection:
    url = settings.require_database()
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name=application_name,
                               connect_timeout=10)
    except psycopg.OperationalError as exc:
        text = str(exc)
        if any(marker in text for marker in _FATAL_CONNECT):
            raise ConfigError(f"cannot use the chatsync database: {text.strip()}") from exc
        raise TransientError(f"cannot connect to the chatsync database: {exc}".strip()) from exc
    except psycopg.ProgrammingError as exc:  # malformed conninfo
        raise ConfigError(f"invalid database URL: {exc}") from exc
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{settings.lock_timeout_ms}ms")))
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


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """The wait before try attempt + 1: exponential backoff with full jitter, a random time in
    [0, min(cap, base * 2**(attempt - 1))] (retries of many processes spread out instead of
    hitting a recovering server together)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


RETRY_MESSAGE = "{what}: transient error (attempt {attempt}/{attempts}), retrying in {delay:.2f}s: {error}"


def with_retry(fn: Callable[[], T], settings: Settings, what: str, *, attempts: int | None = None,
               base: float | None = None, cap: float | None = None, within: float | None = None,
               message: str = RETRY_MESSAGE) -> T:
    """Run fn, retrying transient failures with exponential backoff and full jitter: the one retry
    of chatsync, for Postgres and Redis alike. Defaults from the settings (retry_attempts,
    retry_base_seconds, retry_max_seconds); within: give up once the next wait would end more than
    this many seconds after the first try. The last failure is raised as it is. (Ours rather than
    tenacity's: a few lines, and every caller's log line and give-up error stay its own.)"""
    attempts = attempts or settings.retry_attempts
    base = settings.retry_base_seconds if base is None else base
    cap = settings.retry_max_seconds if cap is None else cap
    deadline = None if within is None else time.monotonic() + within
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            delay = backoff_seconds(attempt, base, cap)
            if (not is_transient(exc) or attempt >= attempts
                    or (deadline is not None and time.monotonic() + delay > deadline)):
                raise
            log.warning(message.format(what=what, attempt=attempt, attempts=attempts, delay=delay, error=exc))
            time.sleep(delay)


@lru_cache(maxsize=128)
def _read_sql(sql_dir: str, name: str) -> str:
    path = Path(sql_dir) / f"{name}.sql"
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"SQL file {path} not found (CHATSYNC_SQL_DIR={sql_dir})") from None


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
    """include/sql/<name>.sql with its {placeholders} filled by composed identifiers/fragments.

    Values are never formatted in: they stay %(name)s placeholders bound at execute time.
    """
    text = _read_sql(settings.sql_dir, name)
    if "{unsettled_runs}" in text and "unsettled_runs" not in parts:
        parts["unsettled_runs"] = unsettled_runs(settings)
    return sql.SQL(text).format(**parts)


def unsettled_runs(settings: Settings) -> sql.Composed:
    """The runs that may still hold unresolved findings, as an array expression
    (include/sql/unsettled_runs.sql, its comment left out of the statements that use it)."""
    text = "\n".join(line for line in _read_sql(settings.sql_dir, "unsettled_runs").splitlines()
                     if not line.lstrip().startswith("--"))
    return sql.SQL(text.strip()).format(ops=ops_ident(settings))
