"""One consistency pass, step by step: detect → decide → repair → validate → record.

The Airflow tasks call these steps one by one; ``check`` runs them in a row for the CLI.
Each step reads and writes the run record, so any step can be rerun on its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import sql

from chatsync import diff, faults, locks, metrics, runs
from chatsync.config import Settings
from chatsync.db import connection, with_retry
from chatsync.diff import Decision, DetectPlan, DetectResult, Scope, decide, detect
from chatsync.errors import ChatsyncError, ConfigError, ValidationFailed
from chatsync.repair import RepairResult, repair
from chatsync.sqlgen import ROOM_KEY_MAX, ROOM_KEY_MIN

log = logging.getLogger("chatsync.engine")


def now() -> datetime:
    return datetime.now().astimezone()


def mark_major(settings: Settings, run_id: int, decision: Decision) -> None:
    with connection(settings) as conn:
        runs.update(conn, settings.ops_schema, run_id, status="major", error=decision.reason,
                    finished_at=now())


def validate_run(settings: Settings, run_id: int) -> dict:
    """Run the GX suite on the chat side; store the outcome and the run's final status."""
    from chatsync.validate import validate  # heavy (Great Expectations): only when validating

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
        faults.pause("check:before_unlock")
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
    unlimited = diff.keys_changed_since(settings, found.run_id, unlimited_since) if unlimited_since else 0
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
        # what is left: re-detect the same scope (cheap next to a repair)
        recheck = detect(settings, scope if scope.kind != "incremental" else Scope("full"),
                         triggered_by=f"{triggered_by}:recheck")
        finish_without_validation(settings, recheck.run_id, "detected")
        remaining = recheck.total
    faults.pause("check:before_validate")
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


# -- steps, as the Airflow tasks run them ----------------------------------------------------

def choose_scope(param: str, logical_date: datetime | None) -> Scope:
    """'auto': a full pass in the first hour of the day (the only scope that sees deletes),
    incremental otherwise."""
    if param == "auto":
        hour = logical_date.hour if logical_date else 0
        return Scope("full" if hour == 0 else "incremental")
    return Scope(param)


def _decided(settings: Settings, found: DetectResult) -> dict:
    decision = decide(settings, found)
    return {**found.to_dict(), "decision": decision.path, "changes": decision.changes,
            "limit": decision.limit, "reason": decision.reason}


# The hourly DAG's detect as mapped tasks: plan_step → shard_step for each part → finish_step
# (or discard_step when a part failed for good). XCom carries the plan and a few numbers per part.

def plan_step(settings: Settings, scope: Scope, triggered_by: str) -> list[dict]:
    """Begin the run and cut it into parts: one dict per part (the plan and its room range)."""
    plan = diff.begin(settings, scope, triggered_by=triggered_by)
    try:
        parts = diff.shards(settings, plan)
    except Exception as exc:
        diff.discard(settings, plan.run_id, f"detect failed: {exc}")
        raise
    log.info("run %s: detect (%s) in %d part(s)", plan.run_id, plan.scope.kind, len(parts))
    return [{**plan.to_dict(), "part": i, "parts": len(parts),
             "room_range": list(p.room_range) if p is not None and p.room_range else None}
            for i, p in enumerate(parts, 1)]


def part_label(part: dict) -> str:
    """A shard as a person reads it in the UI's mapped-task list: "shard 2 of 5: rooms 42 to 96"."""
    head = f"shard {part['part']} of {part['parts']}"
    if not part["room_range"]:
        return f"{head}: all rooms"
    lo, hi = part["room_range"]  # [lo, hi); the outer shards reach the ends of the key's span
    if lo <= ROOM_KEY_MIN:
        rooms = "all rooms" if hi >= ROOM_KEY_MAX else f"rooms below {hi}"
    else:
        rooms = f"rooms from {lo}" if hi >= ROOM_KEY_MAX else f"rooms {lo} to {hi - 1}"
    return f"{head}: {rooms}"


def shard_step(settings: Settings, part: dict) -> dict:
    faults.pause("detect:part")
    plan = DetectPlan.from_dict(part)
    scope = Scope("range", room_range=tuple(part["room_range"])) if part["room_range"] else None
    t0 = time.perf_counter()
    durations = with_retry(lambda: diff.detect_part(settings, plan, scope), settings,
                           f"detect run {plan.run_id} part {part['part']}/{part['parts']}")
    seconds = round(time.perf_counter() - t0, 4)
    log.info("run %s: detect %s done in %.3fs", plan.run_id, part_label(part), seconds)
    return {"part": part["part"], "seconds": seconds, "by_entity": durations}


def finish_step(settings: Settings, parts: list[dict], done: list[dict]) -> dict:
    plan = DetectPlan.from_dict(parts[0])
    if len(done) != len(parts):  # the DAG runs this only when every part succeeded
        raise ChatsyncError(f"run {plan.run_id}: {len(done)} of {len(parts)} detect parts finished")
    return _decided(settings, with_retry(lambda: diff.finish(settings, plan), settings, f"detect run {plan.run_id}"))


def discard_step(settings: Settings, parts: list[dict]) -> None:
    run_id = parts[0]["run_id"]
    diff.discard(settings, run_id, "detect failed: a part failed after its retries (see the detect_part tasks)")
    log.error("run %s: a detect part failed for good; the run's partial findings are removed", run_id)


def nothing_step(settings: Settings, run_id: int) -> None:
    finish_without_validation(settings, run_id, "consistent")


def major_step(settings: Settings, found: dict) -> dict:
    """Refuse the repair, alert, and hand the run to chat_major_inconsistency (the returned conf).
    The hourly run still ends failed (outcome), so the refusal is loud in Airflow too."""
    from chatsync import alerts

    decision = Decision(found["decision"], found["changes"], found["limit"], found["reason"])
    mark_major(settings, found["run_id"], decision)
    alerts.notify("major_inconsistency",
                  f"run {found['run_id']}: major inconsistency, repair refused: {decision.reason}. Counts: "
                  f"{dict((k, v) for k, v in found['counts'].items() if v)}. chat_major_inconsistency "
                  f"starts for its rooms.", run_id=found["run_id"], changes=decision.changes,
                  limit=decision.limit, event="firing")
    return {"run_id": found["run_id"]}


def repair_step(settings: Settings, run_id: int) -> dict:
    out = repair(settings, run_id).to_dict()
    out["cache"] = cache_follows(settings, run_id)
    return out


def cache_follows(settings: Settings, run_id: int) -> str | None:
    """The Redis cache of the keys a run changed, brought in line with the chat tables (the chat
    gateway reads it); while Redis is unreachable they go to the outbox (redis_recovery)."""
    if not settings.redis_url:
        return None
    from chatsync import cache, redis_recovery

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


def validate_step(settings: Settings, run_id: int) -> dict:
    outcome = validate_run(settings, run_id)
    if not outcome["passed"]:
        names = "; ".join(f"{f['expectation']} on {f.get('table')}.{f.get('column')}" for f in outcome["failed"])
        raise ValidationFailed(f"run {run_id}: the chat side failed validation: {names}. "
                               f"Data Docs: {outcome.get('docs_index')}")
    return outcome


def outcome_step(settings: Settings, run_id: int) -> dict:
    """The run's final word: succeed only when the pass left the chat side consistent."""
    with connection(settings) as conn:
        run = runs.require(conn, settings.ops_schema, run_id)
    summary = {"run_id": run_id, "status": run["status"], "counts": run["counts"],
               "repaired": run["repaired"], "skipped": run["skipped"],
               "step_durations": run["step_durations"]}
    log.info("run %s finished: %s", run_id, summary)
    if run["status"] not in ("consistent", "validated"):
        raise ChatsyncError(f"run {run_id} ended {run['status']}: {run['error'] or 'see earlier tasks'}")
    return summary
