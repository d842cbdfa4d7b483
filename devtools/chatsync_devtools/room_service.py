"""The room service, simulated: it changes the room tables (the truth) and, after each commit,
publishes the matching events, as the real service would. The demo, the tests and the event
benchmark drive the worker with it."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.errors import ConfigError
from chatsync.events.envelope import event_fields
from chatsync.model.mapping import load_mapping
from chatsync_devtools.simulate import PERMISSION_BITS, ROLE_MASKS, ROLES, ROOM_STATUSES, table_placeholders
from chatsync_devtools.statements import sql_file

log = logging.getLogger("chatsync.eventsim")


TYPE_WEIGHTS = {
    "room.participant.added": 0.20, "room.participant.removed": 0.08,
    "room.participant.role_changed": 0.15, "room.participant.banned": 0.05,
    "room.participant.unbanned": 0.05, "room.participant.permissions_updated": 0.15,
    "room.status.changed": 0.12, "room.archived": 0.04, "room.unarchived": 0.04,
    "room.settings.changed": 0.12,
}
PICK_DEPTH = 30  # the picked participant is among the first 30 of its room by user id


@dataclass
class EmitReport:
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    unpublished: int = 0  # changes made while Redis was unreachable: their events never left

    def to_dict(self) -> dict:
        rate = self.events / self.seconds if self.seconds else None
        return {"events": self.events, "by_type": self.by_type, "seconds": round(self.seconds, 3),
                "rate": round(rate, 1) if rate else None, "unpublished": self.unpublished}


STATEMENTS = {  # event type -> the statement making that change (sql/room_service/eventsim_*.sql)
    "room.participant.added": "add_participant", "room.participant.removed": "remove_participant",
    "room.participant.role_changed": "change_role", "room.participant.permissions_updated": "change_permissions",
    "room.participant.banned": "toggle_ban", "room.participant.unbanned": "toggle_ban",
    "room.status.changed": "change_status", "room.archived": "toggle_archive", "room.unarchived": "toggle_archive",
    "room.settings.changed": "change_settings",
}


class RoomService:
    """Real changes on the room side, each one statement that picks its row and returns the
    event it makes (a ban of a banned participant is an unban, and so on), sent in pipeline mode."""

    def __init__(self, settings: Settings, client, seed: int = 42):
        self.settings, self.client = settings, client
        self.rng = random.Random(seed)
        parts = table_placeholders(load_mapping(settings.mapping_path))
        self.sql = {name: sql_file(settings, f"eventsim_{name}", **parts) for name in set(STATEMENTS.values())}
        with connection(settings, side="room", read_only=False) as conn:
            self.rooms = [r[0] for r in conn.execute(sql_file(settings, "eventsim_room_ids", **parts))]
            self.next_user = one(conn.execute(sql_file(settings, "eventsim_max_user", **parts)))[0] + 1
        if not self.rooms:
            raise ConfigError("the room side has no rooms: run `chatsync simulate` first")
        self.types, self.weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())
        self.masks = [ROLE_MASKS[r] for r in ROLES]

    def statement(self, type_: str) -> tuple[str, dict]:
        rng = self.rng
        params = {"type": type_, "room": rng.choice(self.rooms), "k": rng.randrange(PICK_DEPTH)}
        if type_ == "room.participant.added":
            role = rng.choice(["MEMBER", "MEMBER", "MEMBER", "GUEST", "SPEAKER"])
            params.update(user=self.next_user, role=role, permissions=ROLE_MASKS[role])
            self.next_user += 1
        elif type_ == "room.participant.role_changed":
            params.update(roles=list(ROLES), masks=self.masks, shift=rng.randrange(1, len(ROLES)))
        elif type_ == "room.participant.permissions_updated":
            params["bit"] = rng.randrange(len(PERMISSION_BITS))
        elif type_ == "room.status.changed":
            params.update(statuses=list(ROOM_STATUSES), shift=rng.randrange(1, len(ROOM_STATUSES)))
        elif type_ == "room.settings.changed":
            params["flip_public"] = rng.random() < 0.5
        return STATEMENTS[type_], params

    def emit_types(self, types: list[str], counts: Counter | None = None) -> list[tuple[str, int, int | None]]:
        """These changes in one transaction, then their events (after the commit, as in real
        life). A change that found no row (an empty room) makes no event. Returns
        (type, room_id, user_id) of each event."""
        planned = [self.statement(t) for t in types]
        with connection(self.settings, side="room", read_only=False) as conn:
            with conn.pipeline():
                cursors = [(params, conn.execute(self.sql[name], params)) for name, params in planned]
            done = []
            for params, cur in cursors:
                row = cur.fetchone()
                if row is not None:
                    user_id, type_ = row
                    done.append((type_, params["room"], user_id))
        now = datetime.now(timezone.utc)
        pipe = self.client.pipeline(transaction=False)
        for type_, room, user in done:
            pipe.xadd(self.settings.events_stream, event_fields(type_, room, user, occurred_at=now))
            if counts is not None:
                counts[type_] += 1
        pipe.execute()
        return done

    def emit_batch(self, n: int, counts: Counter) -> int:
        return len(self.emit_types(self.rng.choices(self.types, self.weights, k=n), counts))


def emit(settings: Settings, client, events: int, *, seed: int = 42, rate: float | None = None,
         batch: int = 100, through_outages: bool = False,
         progress: Callable[[int, int], None] | None = None) -> EmitReport:
    """Make `events` room changes and publish them; at `rate` events/s when given (steady ticks
    of 10 ms), as fast as possible otherwise. through_outages: while Redis is unreachable the
    changes are still made and their events dropped (a fire-and-forget publisher), counted in
    `unpublished`. progress(changes made, events published) after each tick."""
    import redis

    service = RoomService(settings, client, seed)
    counts: Counter = Counter()
    per_tick = max(1, round(rate / 100)) if rate else batch
    t0 = time.perf_counter()
    sent = unpublished = 0
    while sent + unpublished < events:
        n = min(per_tick, events - sent - unpublished)
        if rate:
            delay = t0 + (sent + unpublished) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        try:
            sent += service.emit_batch(n, counts)
        except redis.RedisError:
            if not through_outages:
                raise
            unpublished += n
        if progress:
            progress(sent + unpublished, sent)
    report = EmitReport(sent, dict(sorted(counts.items())), time.perf_counter() - t0, unpublished)
    log.info("published %d events in %.2fs (%d changes unpublished): %s", report.events, report.seconds,
             unpublished, report.by_type)
    return report
