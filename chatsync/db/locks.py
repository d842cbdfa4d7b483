"""Advisory locks: every key chatsync uses, and the control connection that keeps them.

Long work (a consistency pass, a repair, a Redis recovery, a run) holds session advisory locks,
so that no other process interleaves with it and so that others can tell whether its process is
still alive. A session lock lives as long as its connection: if that connection is cut (a server
restart, ``pg_terminate_backend``, a network blip), the server releases the lock while the work
goes on elsewhere. ``ControlSession`` notices at its next statement, reconnects (the transient-error
retry), takes its locks again and runs the statement; an exclusive lock another process took in
the meantime raises ``LockLost``: that process owns the work now.

Each process has one control session per database (``control``): the locks of everything it is
doing go through it, and they all end with the process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connect, one
from chatsync.db.retry import with_retry
from chatsync.errors import ChatsyncError

log = logging.getLogger("chatsync.locks")
T = TypeVar("T")


# One key per kind of work, each 56 bits of ASCII so that they read as what they guard.
CHECK_LOCK = 0x6368636865636B  # "chcheck": one consistency pass at a time
REPAIR_LOCK = 0x63687265706169  # "chrepai": one repair or rollback at a time
RECOVERY_LOCK = 0x63687265646973  # "chredis": one Redis recovery at a time
MIGRATION_LOCK = 0x636873796E63  # "chsync": one migrator at a time
STREAM_HEAL_LOCK = 0x63686865616C  # "chheal": one healing pass after a lost stream at a time
FOLD_LOCK = 0x6368666F6C64  # "chfold": one fingerprint fold at a time, and none while a detect diffs the keys
# A run's lock: "ru" in the top bits, the run id in the low 40. Every process working on a run
# holds it (shared): a run whose lock nobody holds has lost its process (runs.close_abandoned).
RUN_LOCK_BASE = 0x7275 << 40
APPLICATION_NAME = "chatsync control {pid}"  # pg_stat_activity shows whose it is


def run_key(run_id: int) -> int:
    return RUN_LOCK_BASE | run_id


class LockLost(ChatsyncError):
    """A lock this process held was taken by another process while its connection was cut."""


@dataclass
class _Held:
    key: int
    shared: bool
    wait: bool
    what: str
    owner: int  # the thread that took an exclusive lock: another thread of the process waits for it
    count: int = 1


class ControlSession:
    """An autocommit connection holding session advisory locks, that survives being cut."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn: psycopg.Connection | None = None
        self.held: dict[int, _Held] = {}
        self.mutex = threading.RLock()
        self.released = threading.Condition(self.mutex)

    def _take(self, conn: psycopg.Connection, h: _Held) -> bool:
        fn = {(False, True): "pg_advisory_lock", (True, True): "pg_advisory_lock_shared",
              (False, False): "pg_try_advisory_lock", (True, False): "pg_try_advisory_lock_shared"}[h.shared, h.wait]
        row = one(conn.execute(sql.SQL("SELECT {}(%s)::text").format(sql.Identifier(fn)), (h.key,)))
        return h.wait or row[0] == "true"

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self) -> psycopg.Connection:
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        if self.conn is not None:
            log.warning("control connection lost: reconnecting and taking back %d lock(s): %s",
                        len(self.held), ", ".join(h.what for h in self.held.values()) or "none")
        self._drop_connection()
        conn = connect(self.settings, autocommit=True, application_name=APPLICATION_NAME.format(pid=os.getpid()))
        try:
            for h in self.held.values():
                if not self._take(conn, h):
                    raise LockLost(f"lost {h.what}: another process took it while this one's control "
                                   "connection was cut")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def run(self, fn: Callable[[psycopg.Connection], T], what: str = "control statement") -> T:
        """fn(conn) on the control connection; a cut connection is reconnected (locks taken back)
        and fn run again, so fn must be safe to repeat (a read, or an idempotent update)."""
        def attempt() -> T:
            with self.mutex:
                conn = self._connection()
                return fn(conn)  # a cut connection is left broken: the next attempt reconnects
        return with_retry(attempt, self.settings, what)

    def take(self, key: int, what: str, *, shared: bool = False, wait: bool = True) -> bool:
        """Hold the lock (waiting for it, or only if free when wait is false); a lock already held
        is counted again. False when wait is false and another session holds it."""
        me = threading.get_ident()
        with self.mutex:
            while (held := self.held.get(key)) is not None and not (held.shared and shared) and held.owner != me:
                if not wait:
                    return False
                self.released.wait()
            if held is not None:
                held.count += 1
                return True
            h = _Held(key, shared, wait, what, me)
            if not self.run(lambda conn: self._take(conn, h), f"take {what}"):
                return False
            self.held[key] = h
            return True

    def release(self, key: int) -> None:
        with self.mutex:
            h = self.held.get(key)
            if h is None:
                return
            h.count -= 1
            if h.count > 0:
                return
            del self.held[key]
            self.released.notify_all()
            conn = self.conn
            if conn is None or conn.closed or conn.broken:
                return  # the server released it with the connection
            fn = "pg_advisory_unlock_shared" if h.shared else "pg_advisory_unlock"
            try:
                conn.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(fn)), (key,))
            except psycopg.OperationalError:
                self._drop_connection()  # cut: released with the connection

    def close(self) -> None:
        with self.mutex:
            self.held.clear()
            self._drop_connection()


_sessions: dict[tuple[int, str], ControlSession] = {}
_registry = threading.Lock()


def control(settings: Settings) -> ControlSession:
    """This process's control session on the settings' database (a forked child gets its own)."""
    key = (os.getpid(), settings.require_database())
    with _registry:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = ControlSession(settings)
        return session


def hold_run(settings: Settings, run_id: int) -> None:
    """Mark the run as worked on by this process (until release_run or the process ends)."""
    control(settings).take(run_key(run_id), f"the lock of run {run_id}", shared=True)


def release_run(run_id: int) -> None:
    """This process no longer works on the run (it is finished)."""
    pid = os.getpid()
    with _registry:
        sessions = [s for (p, _), s in _sessions.items() if p == pid]
    for session in sessions:
        session.release(run_key(run_id))
