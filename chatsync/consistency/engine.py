"""One consistency pass, step by step: detect → decide → repair → validate → record.

The Airflow tasks call these steps one by one; ``check`` runs them in a row for the CLI.
Each step reads and writes the run record, so any step can be rerun on its own.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import sql

from chatsync.config import Settings
from chatsync.consistency import detect as detection
from chatsync.consistency.decide import Decision, decide
from chatsync.consistency.detect import DetectResult, detect
from chatsync.consistency.repair import RepairResult, repair
from chatsync.consistency.scope import Scope
from chatsync.db import locks, runs
from chatsync.db.connection import connection
from chatsync.errors import ChatsyncError, ConfigError
from chatsync.ops import metrics

log = logging.getLogger("chatsync.engine")


def now() -> datetime:
    return datetime.now().astimezone()


def mark_major(settings: Settings, run_id: int, decision: Decision) -> None:
    with connection(settings) as conn:
        runs.update(conn, settings.ops_schema, run_id, status="major", error=decision.reason,
                    finished_at=now())


def validate_run(settings: Settings, run_id: int) -> dict:
    """Run the GX suite on the chat side; store the outcome and the run's final status."""
    from chatsync.validation.gx import validate

    t0 = time.perf_counter()
    outcome = validate(settings, run_id).to_dict()
    seconds = time.perf_counter() - t0
    with connection(settings) as conn:
        run = runs.require(conn, settings.ops_schema, run_id)
        if outcome["passed"]:
            status = "validated" if (run["repaired"] or 0) > 0 else "consistent"
        else:
            status = "validation_failed"
        runs.update(conn, settings.ops_schema, run_id, validation=outcome, status=status,
                    finished_at=now(), error=None if outcome["passed"] else
                    "validation failed: " + ", ".join(f["expectation"] for f in outcome["failed"]))
        runs.add_step_duration(conn, settings.ops_schema, run_id, "validate", seconds)
    if not outcome["passed"]:
        log.error("run %s: validation failed: %s", run_id, outcome["failed"])
    return outcome


def finish_without_validation(settings: Settings, run_id: int, status: str) -> None:
    with connection(settings) as conn:
        runs.update(conn, settings.ops_schema, run_id, status=status, finished_at=now())


def record(settings: Settings, run_id: int, step_seconds: dict[str, float] | None = None) -> dict:
    with connection(settings) as conn:
        for step, seconds in (step_seconds or {}).items():
            runs.add_step_duration(conn, settings.ops_schema, run_id, step, seconds)
    return metrics.record_run(settings, run_id)


@dataclass
class CheckSummary:
    run_id: int
    scope: str
    counts: dict[str, int]
    decision: str
    repaired: int = 0
    skipped: int = 0
    held_back: int = 0  # keys left as they are: their room value is outside its domain (still open)
    room_domain_violations: dict[str, int] = field(default_factory=dict)  # field -> room values held back
    validation: dict | None = None
    remaining: int | None = None  # findings left after the pass (None when not re-checked)
    status: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def consistent(self) -> bool:
        return self.remaining == 0 and (self.validation is None or self.validation.get("passed", False))

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "scope": self.scope, "counts": self.counts,
                "decision": self.decision, "repaired": self.repaired, "skipped": self.skipped,
                "held_back": self.held_back, "room_domain_violations": self.room_domain_violations,
                "validation": self.validation, "remaining": self.remaining, "status": self.status,
                "consistent": self.consistent, "timings": self.timings, "message": self.message}


def check(settings: Settings, scope: Scope = Scope(), *, do_repair: bool = False, do_validate: bool = True,
          triggered_by: str = "cli", unlimited_since: datetime | None = None) -> CheckSummary:
    """detect → (repair) → (validate) → metrics, holding the pass lock for the whole pass.
    unlimited_since: keys changed since then are repaired without counting against the blind-
    repair limit (the heal after a lost event stream: what the lost events named)."""
    control = locks.control(settings)
    if not control.take(locks.CHECK_LOCK, "the consistency pass lock", wait=False):
        raise ChatsyncError("another consistency pass is running on this database; try again later")
    try:
        summary = _check(settings, scope, do_repair, do_validate, triggered_by, unlimited_since)
        sys.audit("chatsync.step", "check:before_unlock")
        return summary
    finally:
        control.release(locks.CHECK_LOCK)  # a cut control connection has released it already


def _check(settings, scope, do_repair, do_validate, triggered_by, unlimited_since) -> CheckSummary:
    found: DetectResult = detect(settings, scope, triggered_by=triggered_by)
    try:
        return _after_detect(settings, scope, found, do_repair, do_validate, triggered_by, unlimited_since)
    except Exception as exc:
        # the run says what happened to its data, and so does the error the caller sees
        error = runs.fail_open(settings, found.run_id, exc)
        if error is None or isinstance(exc, ConfigError):
            raise
        raise ChatsyncError(f"run {found.run_id} {error}") from exc


def _after_detect(settings, scope, found: DetectResult, do_repair, do_validate, triggered_by,
                  unlimited_since) -> CheckSummary:
    timings: dict[str, float] = {"detect": round(found.seconds, 4)}
    unlimited = detection.keys_changed_since(settings, found.run_id, unlimited_since) if unlimited_since else 0
    decision = decide(settings, found, unlimited)
    summary = CheckSummary(found.run_id, found.scope, found.counts, decision.path, timings=timings,
                           message=decision.reason)
    remaining = found.total
    if decision.path == "major":
        mark_major(settings, found.run_id, decision)
        summary.status = "major"
    elif decision.path == "repair" and do_repair:
        fixed: RepairResult = repair(settings, found.run_id)
        cache_follows(settings, found.run_id)
        timings["repair"] = round(fixed.seconds, 4)
        summary.repaired, summary.skipped = fixed.repaired, fixed.skipped
        summary.held_back, summary.room_domain_violations = fixed.held_back, fixed.room_domain_violations
        # what is left: re-detect the same scope (cheap next to a repair)
        recheck = detect(settings, scope if scope.kind != "incremental" else Scope("full"),
                         triggered_by=f"{triggered_by}:recheck")
        finish_without_validation(settings, recheck.run_id, "detected")
        remaining = recheck.total
    sys.audit("chatsync.step", "check:before_validate")
    if do_validate and decision.path != "major":
        t0 = time.perf_counter()
        summary.validation = validate_run(settings, found.run_id)
        timings["validate"] = round(time.perf_counter() - t0, 4)
    elif decision.path != "major":
        status = "consistent" if remaining == 0 else ("repaired" if summary.repaired else "detected")
        finish_without_validation(settings, found.run_id, status)
    summary.remaining = remaining
    t0 = time.perf_counter()
    record(settings, found.run_id)
    timings["metrics"] = round(time.perf_counter() - t0, 4)
    with connection(settings) as conn:
        summary.status = runs.require(conn, settings.ops_schema, found.run_id)["status"]
    return summary


def cache_follows(settings: Settings, run_id: int) -> str | None:
    """The Redis cache of the keys a run changed, brought in line with the chat tables (the chat
    gateway reads it); while Redis is unreachable they go to the outbox (redis_recovery)."""
    if not settings.redis_url:
        return None
    from chatsync.events import cache, redis_recovery

    with connection(settings) as conn:
        keys = conn.execute(sql.SQL("SELECT DISTINCT room_id, user_id FROM {}.repair_audit WHERE run_id = %s")
                            .format(sql.Identifier(settings.ops_schema)), (run_id,)).fetchall()
    if not keys:
        return "nothing to update"
    client = cache.client_for(settings)
    try:
        return redis_recovery.update_cache(settings, client, [r for r, u in keys if u is None],
                                           [(r, u) for r, u in keys if u is not None], source=f"repair:{run_id}")
    finally:
        client.close()
