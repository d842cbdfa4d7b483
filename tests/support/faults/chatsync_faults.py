"""Fault injection for the fault tests, outside the product: chatsync raises the audit event
``chatsync.step`` (PEP 578) at named points of its work; this hook, when installed, stops there
for a while so that a test can kill the process (SIGKILL), cut its database connection, or write
concurrently at that exact moment. Installed in a child process by ``sitecustomize.py`` beside it
(the tests put this folder on the child's PYTHONPATH) and in the test process by ``install()``.

  CHATSYNC_FAULT_PAUSE_AT=repair:in_batch   which point (detect:part, detect:before_finish, repair:before_batches,
                                            repair:in_batch, repair:after_commit,
                                            check:before_validate, check:before_unlock,
                                            stream:before_heal; room_copy:stream, room_copy:rows:
                                            the first rows of any stream, of a stream of room
                                            rows, from the room database)
  CHATSYNC_FAULT_PAUSE_SECONDS=30           how long to stop there (once per process)
  CHATSYNC_FAULT_MARKER=/tmp/x              a file written when the point is reached
  CHATSYNC_FAULT_PAUSE_BEFORE_ACK_MS=1500   the worker sleeps this long between its commit and
                                            its XACK, every batch
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

EVENT = "chatsync.step"
PAUSE_BEFORE_ACK = "CHATSYNC_FAULT_PAUSE_BEFORE_ACK_MS"
log = logging.getLogger("chatsync.faults")
_fired: set[str] = set()
_lock = threading.Lock()
_installed = False


def _hook(event: str, args: tuple) -> None:
    if event != EVENT:
        return
    point = args[0]
    if point == "worker:before_ack":
        if pause := int(os.environ.get(PAUSE_BEFORE_ACK, "0") or 0):
            time.sleep(pause / 1000)
        return
    if os.environ.get("CHATSYNC_FAULT_PAUSE_AT") != point:
        return
    with _lock:
        if point in _fired:  # once per process: a retried step runs on unhindered
            return
        _fired.add(point)
    seconds = float(os.environ.get("CHATSYNC_FAULT_PAUSE_SECONDS", "30"))
    log.warning("fault injection: paused at %s for %.1fs", point, seconds)
    if marker := os.environ.get("CHATSYNC_FAULT_MARKER"):
        Path(marker).write_text(f"{point} {os.getpid()}\n")
    time.sleep(seconds)


def install() -> None:
    """Add the hook (once: an audit hook cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


def rearm(point: str) -> None:
    """Let `point` fire again in this process."""
    _fired.discard(point)
