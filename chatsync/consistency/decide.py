"""After detect: nothing to do, repair, or too many changes to repair blindly (a major
inconsistency, handed over to its procedure). The limit is the smaller of ``repair_max_changes``
and ``repair_max_fraction`` of the rows."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatsync.config import Settings
from chatsync.consistency.detect import DetectResult


@dataclass(frozen=True)
class Decision:
    path: str  # "nothing" | "repair" | "major"
    changes: int
    limit: int
    reason: str


def decide(settings: Settings, result: DetectResult, unlimited: int = 0) -> Decision:
    """Nothing to do, repair, or too many changes to repair blindly (major inconsistency).
    unlimited: rows to change whose cause is known (after a lost event stream, what the lost
    events named): repaired, not counted against the limit."""
    limit = min(settings.repair_max_changes,
                math.floor(settings.repair_max_fraction * max(result.total_rows, 1)))
    limit = max(limit, 1)
    n = result.rows_to_change
    counted = n - unlimited
    known = f" ({unlimited} of them changed since the lost events: not counted)" if unlimited else ""
    if n == 0:
        return Decision("nothing", 0, limit, "no inconsistency found")
    if counted > limit:
        return Decision("major", counted, limit,
                        f"{counted} rows to change exceed the repair limit {limit} "
                        f"(min of {settings.repair_max_changes} changes and "
                        f"{settings.repair_max_fraction:.2%} of {result.total_rows} rows){known}")
    return Decision("repair", counted, limit, f"{n} rows to change, within the limit {limit}{known}")
