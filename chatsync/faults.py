"""Fault injection for the fault tests: a named point in the code can be told to stop for a while,
so a test can kill the process (SIGKILL), cut its database connection, or write concurrently at
that exact moment. Inert unless CHATSYNC_FAULT_PAUSE_AT names the point.

  CHATSYNC_FAULT_PAUSE_AT=repair:in_batch   which point (detect:part, detect:before_finish, repair:before_batches,
                                            repair:in_batch, repair:after_commit,
                                            check:before_validate, check:before_unlock,
                                            stream:before_heal)
  CHATSYNC_FAULT_PAUSE_SECONDS=30           how long to stop there (once per process)
  CHATSYNC_FAULT_MARKER=/tmp/x              a file written when the point is reached
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("chatsync.faults")
_fired: set[str] = set()
_lock = threading.Lock()


def pause(point: str) -> None:
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
