"""Notifying people: the one place every component reports something a person must look at.

Each alert is a structured log line at ERROR (``alert=<kind> key=value ...``) and goes to every
registered notifier. Notifiers (Slack, email: the monitoring issue) register with ``register``;
a failing notifier is logged and never breaks the caller.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("chatsync.alerts")


Notifier = Callable[[str, str, dict], None]
_notifiers: list[Notifier] = []


def register(notifier: Notifier) -> None:
    _notifiers.append(notifier)


def unregister(notifier: Notifier) -> None:
    if notifier in _notifiers:
        _notifiers.remove(notifier)


def structured(what: str, **context) -> str:
    """``what key=value ...`` with JSON-encoded values: grep-able and machine-parseable."""
    return " ".join([what, *(f"{k}={json.dumps(v, default=str)}" for k, v in context.items())])


def notify(kind: str, message: str, **context) -> None:
    log.error(structured(f"alert={kind}", message=message, **context))
    for notifier in list(_notifiers):
        try:
            notifier(kind, message, context)
        except Exception:  # noqa: BLE001 - an alert channel down must not stop the pipeline
            log.exception("notifier %r failed for alert %s", notifier, kind)


def resolve(kind: str, message: str, **context) -> None:
    """A condition that alerted has cleared: say so on the same channels."""
    log.info(structured(f"resolved={kind}", message=message, **context))
    for notifier in list(_notifiers):
        try:
            notifier(kind, message, {**context, "event": "resolved"})
        except Exception:  # noqa: BLE001
            log.exception("notifier %r failed for resolved %s", notifier, kind)


class ErrorRate:
    """Failures over the last ``window`` outcomes; alerts (at most once per ``cooldown`` seconds)
    when the rate goes above ``threshold`` with at least ``min_events`` outcomes seen."""

    def __init__(self, threshold: float, window: int = 1000, min_events: int = 20,
                 cooldown: float = 300.0, kind: str = "sync_error_rate"):
        self.threshold, self.min_events, self.cooldown, self.kind = threshold, min_events, cooldown, kind
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._last_alert = float("-inf")
        self._lock = threading.Lock()

    def record(self, ok: int = 0, failed: int = 0, **context) -> None:
        with self._lock:
            self._outcomes.extend([True] * ok + [False] * failed)
            n = len(self._outcomes)
            rate = self._outcomes.count(False) / n if n else 0.0
            due = (n >= self.min_events and rate > self.threshold
                   and time.monotonic() - self._last_alert >= self.cooldown)
            if due:
                self._last_alert = time.monotonic()
        if due:
            notify(self.kind, f"error rate {rate:.2%} over the last {n} events is above "
                              f"{self.threshold:.2%}", rate=round(rate, 4), window=n, **context)
