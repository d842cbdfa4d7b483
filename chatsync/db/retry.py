"""The one retry of chatsync, for Postgres and Redis alike: transient failures (see
``chatsync.db.connection.is_transient``) retried with exponential backoff and full jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from chatsync.config import Settings
from chatsync.db.connection import is_transient

log = logging.getLogger("chatsync.db")
T = TypeVar("T")


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
