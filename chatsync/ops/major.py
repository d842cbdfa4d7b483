"""The major-inconsistency procedure (stop writes on the chats concerned, analyse the extent,
run the correction plan, validate, resume writes), one function per step so that the DAG
``chat_major_inconsistency`` runs, retries and reruns each on its own.

The freeze is a lease: if the procedure dies at any step, writes stay frozen only until the
lease ends (``chatsync.ops.freeze``), and the DAG's failure callback says until when.
"""

from __future__ import annotations

import logging

from psycopg import sql

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.consistency.decide import decide
from chatsync.consistency.detect import detect
from chatsync.consistency.scope import Scope
from chatsync.db import runs
from chatsync.db.connection import connection
from chatsync.db.statements import ops_ident, sql_file
from chatsync.errors import ChatsyncError, ConfigError
from chatsync.model.keys import json_keys, keys
from chatsync.model.rules import ENTITIES
from chatsync.ops import freeze

log = logging.getLogger("chatsync.major")


def rooms_of(settings: Settings, rooms: list | None, run_id: int | None) -> list:
    """The rooms to treat: given, or those the (major) run found inconsistent."""
    if rooms:  # as JSON holds them: the procedure's tasks pass them on by XCom
        return json_keys(sorted(set(keys(settings).room.parse_all(rooms, "chat_major_inconsistency param rooms"))))
    if run_id is None:
        raise ConfigError("chat_major_inconsistency needs room ids (param rooms) or the major run (param run_id)")
    with connection(settings) as conn:
        found = [r for (r,) in conn.execute(sql_file(settings, "major_rooms_of_run", ops=ops_ident(settings)),
                                            {"run_id": run_id})]
    if not found:
        raise ConfigError(f"run {run_id} has no unresolved inconsistency: nothing to treat")
    return json_keys(found)


def stop_writes(settings: Settings, rooms: list, lease_seconds: int, by: str) -> dict:
    out = freeze.freeze(settings, rooms, f"major inconsistency procedure ({by})", lease_seconds, by=by)
    alerts.notify("major_inconsistency", f"writes frozen on {len(out['frozen'])} chat rooms until {out['expires_at']} "
                  f"while the major-inconsistency procedure runs ({by})", rooms=rooms, event="firing")
    return out


def analyse(settings: Settings, rooms: list, by: str) -> dict:
    found = detect(settings, Scope("rooms", rooms=tuple(rooms)), triggered_by=by)
    ops = ops_ident(settings)
    with connection(settings) as conn:
        extent = [{"room_id": json_keys([r])[0], "kind": k, "keys": n, "since": s.isoformat() if s else None}
                  for r, k, n, s in conn.execute(sql_file(settings, "major_extent", ops=ops), {"run_id": found.run_id})]
        causes = [{"source": src, "what": what, "count": n, "last": last.isoformat() if last else None}
                  for src, what, n, last in conn.execute(sql_file(settings, "major_likely_causes", ops=ops), {
                      "rooms": rooms, "rooms_text": [str(r) for r in rooms]})]
    return {"run_id": found.run_id, "counts": found.counts, "rows_to_change": found.rows_to_change,
            "total_rows": found.total_rows, "extent": extent, "likely_causes": causes}


def plan(settings: Settings, analysis: dict) -> dict:
    """The correction plan as rows (correction_plans), and whether it needs a person's approval:
    it does when it would change more than the repair threshold allows a blind repair."""
    run_id = analysis["run_id"]
    with connection(settings) as conn:
        conn.execute(sql_file(settings, "major_record_plan", ops=ops_ident(settings)), {
            "run_id": run_id, "insert_kinds": [e.missing_kind for e in ENTITIES],
            "delete_kinds": [e.orphan_kind for e in ENTITIES]})
        rows = conn.execute(sql.SQL("SELECT action, sum(keys)::int FROM {}.correction_plans WHERE run_id = %s "
                                    "GROUP BY action ORDER BY action").format(ops_ident(settings)),
                            (run_id,)).fetchall()
    from chatsync.consistency.detect import DetectResult

    decision = decide(settings, DetectResult(run_id, "rooms", analysis["counts"], analysis["rows_to_change"],
                                             analysis["total_rows"], 0.0))
    summary = {"run_id": run_id, "rows_to_change": analysis["rows_to_change"], "by_action": dict(rows),
               "limit": decision.limit, "needs_approval": decision.path == "major"}
    log.warning(alerts.structured("correction_plan", **summary))
    rooms = len({e["room_id"] for e in analysis.get("extent", [])})
    return {**summary, "text": plan_markdown(summary, analysis["counts"], rooms)}


def plan_markdown(summary: dict, counts: dict[str, int], rooms: int) -> str:
    """The plan as the person asked to approve it reads it (the approval's body, in Markdown)."""
    run_id = summary["run_id"]
    lines = [f"Run **{run_id}** found a major inconsistency in **{rooms}** chat room{'s' if rooms != 1 else ''}: "
             f"the plan changes **{summary['rows_to_change']:,}** rows, more than the **{summary['limit']:,}** "
             "a repair may change without approval.", "",
             "| difference | keys |", "|---|---|",
             *[f"| {kind} | {n:,} |" for kind, n in sorted(counts.items()) if n], "",
             "| action | keys |", "|---|---|",
             *[f"| {action} | {n:,} |" for action, n in sorted(summary["by_action"].items())], "",
             f"**Approve**: the plan is applied (audited: `chatsync rollback {run_id}` undoes it), validated, "
             "and writes resume.", "",
             "**Reject**: nothing changes; writes stay frozen until the lease ends."]
    return "\n".join(lines)


def resume_writes(settings: Settings, rooms: list, run_id: int) -> dict:
    out = freeze.unfreeze(settings, rooms)
    with connection(settings) as conn:
        status = runs.require(conn, settings.ops_schema, run_id)["status"]
    alerts.resolve("major_inconsistency", f"run {run_id} {status}; writes resumed on rooms {out['writes_resumed']}",
                   rooms=rooms, run_id=run_id)
    return out


def finish(settings: Settings, rooms: list, run_id: int | None, *, resumed: bool, rejected: bool) -> dict:
    """The procedure's last word, whatever happened before. Resumed: nothing to add. Rejected by
    the operator: writes stay frozen until the lease ends (a person decides what next). Stopped
    by a failure: the same, and the run fails so the DAG's failure alert fires."""
    if resumed:
        return {"outcome": "resumed", "rooms": rooms}
    with connection(settings) as conn:
        held = conn.execute(sql.SQL("SELECT room_id, expires_at FROM {}.freezes WHERE room_id = ANY(%s::{}[]) "
                                    "ORDER BY room_id").format(ops_ident(settings), keys(settings).room.sql_type),
                            (rooms,)).fetchall()
    until = max((e for _, e in held), default=None)
    still = json_keys([r for r, _ in held])
    how = "the correction plan was rejected" if rejected else "the procedure stopped before resuming writes"
    resume = ", ".join(f"`chatsync unfreeze {r}`" for r in still) or "`chatsync unfreeze ROOM_ID`"
    message = f"run {run_id}: {how}; writes stay frozen on rooms {still} until {until} (the lease), or until {resume}"
    alerts.notify("major_inconsistency", message, rooms=still, run_id=run_id, frozen_until=until,
                  event="rejected" if rejected else "stopped")
    out = {"outcome": "rejected" if rejected else "stopped", "rooms": still,
           "frozen_until": until.isoformat() if until else None}
    if not rejected:
        raise ChatsyncError(message)
    return out
