"""The hourly DAG's consistency pass as task steps: plan (cut a big full scan into room-id shards),
detect each shard, sum up and decide, then repair, hand over or do nothing, validate, and the
outcome. Each step takes and returns small dicts (XCom) and reads the rest from the run record,
so any one can be retried alone."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime

from chatsync.config import Settings
from chatsync.consistency import detect as detection
from chatsync.consistency.decide import Decision, decide
from chatsync.consistency.detect import DetectPlan, DetectResult
from chatsync.consistency.engine import cache_follows, finish_without_validation, mark_major, validate_run
from chatsync.consistency.repair import repair
from chatsync.consistency.scope import Scope
from chatsync.db import runs
from chatsync.db.connection import connection
from chatsync.db.retry import with_retry
from chatsync.errors import ChatsyncError, ValidationFailed
from chatsync.model.keys import json_keys

log = logging.getLogger("chatsync.engine")


def choose_scope(param: str, logical_date: datetime | None) -> Scope:
    """'auto': a full pass in the first hour of the day (the only scope that sees deletes),
    incremental otherwise."""
    if param == "auto":
        hour = logical_date.hour if logical_date else 0
        return Scope("full" if hour == 0 else "incremental")
    return Scope(param)


def decided(settings: Settings, found: DetectResult) -> dict:
    decision = decide(settings, found)
    return {**found.to_dict(), "decision": decision.path, "changes": decision.changes,
            "limit": decision.limit, "reason": decision.reason}


def plan_step(settings: Settings, scope: Scope, triggered_by: str) -> list[dict]:
    """Begin the run and cut it into parts: one dict per part (the plan and its room range)."""
    plan = detection.begin(settings, scope, triggered_by=triggered_by)
    try:
        parts = detection.shards(settings, plan)
    except Exception as exc:
        detection.discard(settings, plan.run_id, f"detect failed: {exc}")
        raise
    log.info("run %s: detect (%s) in %d part(s)", plan.run_id, plan.scope.kind, len(parts))
    return [{**plan.to_dict(), "part": i, "parts": len(parts),
             "room_range": json_keys(p.room_range) if p is not None and p.room_range else None}
            for i, p in enumerate(parts, 1)]


def part_label(part: dict) -> str:
    """A shard as a person reads it in the UI's mapped-task list: "shard 2 of 5: rooms 42 to 96"."""
    head = f"shard {part['part']} of {part['parts']}"
    if not part["room_range"]:
        return f"{head}: all rooms"
    lo, hi = part["room_range"]  # [lo, hi); the outer shards reach the ends of the key's span
    if lo is None:
        rooms = "all rooms" if hi is None else f"rooms below {hi}"
    else:
        rooms = (f"rooms from {lo}" if hi is None else f"rooms {lo} to {hi - 1}" if isinstance(hi, int)
                 else f"rooms from {lo} to before {hi}")
    return f"{head}: {rooms}"


def shard_step(settings: Settings, part: dict) -> dict:
    sys.audit("chatsync.step", "detect:part")
    plan = DetectPlan.from_dict(part)
    scope = Scope("range", room_range=tuple(part["room_range"])) if part["room_range"] else None
    t0 = time.perf_counter()
    durations = with_retry(lambda: detection.detect_part(settings, plan, scope), settings,
                           f"detect run {plan.run_id} part {part['part']}/{part['parts']}")
    seconds = round(time.perf_counter() - t0, 4)
    log.info("run %s: detect %s done in %.3fs", plan.run_id, part_label(part), seconds)
    return {"part": part["part"], "seconds": seconds, "by_entity": durations}


def finish_step(settings: Settings, parts: list[dict], done: list[dict]) -> dict:
    plan = DetectPlan.from_dict(parts[0])
    if len(done) != len(parts):  # the DAG runs this only when every part succeeded
        raise ChatsyncError(f"run {plan.run_id}: {len(done)} of {len(parts)} detect parts finished")
    finished = with_retry(lambda: detection.finish(settings, plan), settings, f"detect run {plan.run_id}")
    return decided(settings, finished)


def discard_step(settings: Settings, parts: list[dict]) -> None:
    run_id = parts[0]["run_id"]
    detection.discard(settings, run_id, "detect failed: a part failed after its retries (see the detect_part tasks)")
    log.error("run %s: a detect part failed for good; the run's partial findings are removed", run_id)


def nothing_step(settings: Settings, run_id: int) -> None:
    finish_without_validation(settings, run_id, "consistent")


def major_step(settings: Settings, found: dict) -> dict:
    """Refuse the repair, alert, and hand the run to chat_major_inconsistency (the returned conf).
    The hourly run still ends failed (outcome), so the refusal is loud in Airflow too."""
    from chatsync.alerting import alerts

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
