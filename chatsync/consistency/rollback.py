"""Rollback of a run's repairs from its audit, row by row: a row changed since the repair is left
as it is and reported (skipped), never overwritten."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from chatsync.config import Settings
from chatsync.db import locks, runs
from chatsync.db.connection import connection
from chatsync.db.retry import with_retry
from chatsync.db.statements import sql_file
from chatsync.errors import ConfigError
from chatsync.model.sqlgen import EntitySQL, entity_sql

log = logging.getLogger("chatsync.repair")


@dataclass
class RollbackResult:
    run_id: int  # the run rolled back
    rollback_run_id: int
    restored: int = 0
    skipped: list[dict] = field(default_factory=list)  # rows changed since the repair

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "rollback_run_id": self.rollback_run_id,
                "restored": self.restored, "skipped": self.skipped}


def rollback(settings: Settings, run_id: int, *, triggered_by: str = "cli") -> RollbackResult:
    """Restore the before-images of a run's repairs, skipping rows changed since (reported).

    Runs in one transaction under the repair lock; the restoring changes are audited under a new
    run of kind 'rollback', so a rollback can itself be rolled back.
    """
    # one transaction: a cut connection leaves nothing behind, and the whole of it is tried again
    return with_retry(lambda: _rollback(settings, run_id, triggered_by), settings, f"rollback of run {run_id}")


def _rollback(settings: Settings, run_id: int, triggered_by: str) -> RollbackResult:
    ops = settings.ops_schema
    with connection(settings) as conn:
        run = runs.get(conn, ops, run_id)
        if run is None:
            raise ConfigError(f"run {run_id} does not exist")
        if run["status"] == "rolled_back":
            raise ConfigError(f"run {run_id} was already rolled back")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (locks.REPAIR_LOCK,))
            rb_id = runs.create(conn, settings, scope="rollback", params={"run_id": run_id},
                                triggered_by=triggered_by, kind="rollback")
            result = RollbackResult(run_id, rb_id)
            for es in reversed(entity_sql(settings)):  # participants first, then rooms
                restored, skipped = _rollback_entity(conn, settings, es, run_id, rb_id)
                result.restored += restored
                result.skipped += skipped
            runs.update(conn, ops, rb_id, status="repaired", repaired=result.restored,
                        skipped=len(result.skipped), finished_at=datetime.now().astimezone())
            # a run still open (its process died mid-repair) ends here
            runs.update(conn, ops, run_id, status="rolled_back",
                        **({} if run["finished_at"] else {"finished_at": datetime.now().astimezone()}))
    log.info("run %s rolled back by run %s: %d rows restored, %d skipped (changed since)",
             run_id, rb_id, result.restored, len(result.skipped))
    return result


def _rollback_entity(conn, settings: Settings, es: EntitySQL, run_id: int, rb_id: int):
    ops = settings.ops_schema
    parts = dict(es.common(ops), chat_key_eq_audit=es.join_chat_to("a"),
                 all_columns=es.chat_columns_all(), all_from_p=es.chat_columns_from("p"),
                 chat_key_out=es.chat_key_cols("c", as_names=True), audit_user_eq_u=es.same_user("a", "u"))
    params = {"run_id": run_id, "rb_id": rb_id}
    # Rows changed since the repair: current image differs from the audit's after-image.
    skipped_rows = conn.execute(sql_file(settings, "rollback_changed_since", **parts), params).fetchall()
    skipped = [{"entity": es.entity.name, "action": action, "room_id": room_id, "user_id": user_id}
               for action, room_id, user_id in skipped_rows]
    restored = 0
    for name in ("rollback_delete_inserted", "rollback_restore_updated", "rollback_reinsert_deleted"):
        restored += max(conn.execute(sql_file(settings, name, **parts), params).rowcount, 0)
    return restored, skipped
