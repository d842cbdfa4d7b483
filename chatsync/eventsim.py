"""The room service, simulated: it changes the room tables (the truth) and, after each commit,
publishes the matching events, as the real service would. The demo, the tests and the event
benchmark drive the worker with it."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from chatsync.config import Settings
from chatsync.db import connection, sql_file
from chatsync.events import event_fields
from chatsync.mapping import load_mapping
from chatsync.rules import ROLES, ROOM_STATUSES
from chatsync.simulate import ROLE_MASKS, _placeholders

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

    def to_dict(self) -> dict:
        rate = self.events / self.seconds if self.seconds else None
        return {"events": self.events, "by_type": self.by_type, "seconds": round(self.seconds, 3),
                "rate": round(rate, 1) if rate else None}


class RoomService:
    def __init__(self, settings: Settings, client, seed: int = 42):
        self.settings, self.client = settings, client
        self.rng = random.Random(seed)
        parts = _placeholders(load_mapping(settings.mapping_path))
        self.sql = {name: sql_file(settings, f"eventsim_{name}", **parts)
                    for name in ("pick_participant", "add_participant", "remove_participant",
                                 "change_participant", "change_room", "pick_room")}
        with connection(settings) as conn:
            self.rooms = [r[0] for r in conn.execute(sql_file(
                settings, "eventsim_room_ids", **parts))]
            self.next_user = conn.execute(sql_file(settings, "eventsim_max_user", **parts)).fetchone()[0] + 1
        if not self.rooms:
            raise ValueError("the room side has no rooms: run `chatsync simulate` first")
        self.types, self.weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())

    def change(self, conn, type_: str) -> tuple[str, int, int | None]:
        """Make one real change of this type on the room side (a no-op change would be no event:
        a ban of a banned participant becomes an unban, and so on). Returns (type, room, user)."""
        rng = self.rng
        room = rng.choice(self.rooms)
        if type_.startswith("room.participant.") and type_ != "room.participant.added":
            row = conn.execute(self.sql["pick_participant"], {"room": room, "k": rng.randrange(PICK_DEPTH)}).fetchone()
            row = row or conn.execute(self.sql["pick_participant"], {"room": room, "k": 0}).fetchone()
            if row is None:
                type_ = "room.participant.added"  # an empty room: someone joins instead
            else:
                user, role, permissions, banned = row
        if type_ == "room.participant.added":
            user, self.next_user = self.next_user, self.next_user + 1
            role = rng.choice(["MEMBER", "MEMBER", "MEMBER", "GUEST", "SPEAKER"])
            conn.execute(self.sql["add_participant"], {"room": room, "user": user, "role": role,
                                                       "permissions": ROLE_MASKS[role]})
            return type_, room, user
        if type_ == "room.participant.removed":
            conn.execute(self.sql["remove_participant"], {"room": room, "user": user})
            return type_, room, user
        if type_.startswith("room.participant."):
            change = {"role": None, "permissions": None, "ban": None, "room": room, "user": user}
            if type_ == "room.participant.role_changed":
                change["role"] = rng.choice([r for r in ROLES if r != role])
                change["permissions"] = ROLE_MASKS[change["role"]]
            elif type_ == "room.participant.permissions_updated":
                change["permissions"] = (permissions or 0) ^ (1 << rng.randrange(12))
            else:
                type_ = "room.participant.unbanned" if banned else "room.participant.banned"
                change["ban"] = "unban" if banned else "ban"
            conn.execute(self.sql["change_participant"], change)
            return type_, room, user
        status, archived, is_public, chat_enabled = conn.execute(self.sql["pick_room"], {"room": room}).fetchone()
        change = {"status": None, "archive": None, "is_public": None, "chat_enabled": None, "room": room}
        if type_ == "room.status.changed":
            change["status"] = rng.choice([s for s in ROOM_STATUSES if s != status])
        elif type_ == "room.settings.changed":
            if rng.random() < 0.5:
                change["is_public"] = not is_public
            else:
                change["chat_enabled"] = not chat_enabled
        else:
            type_ = "room.unarchived" if archived else "room.archived"
            change["archive"] = "unarchive" if archived else "archive"
        conn.execute(self.sql["change_room"], change)
        return type_, room, None

    def emit_types(self, types: list[str], counts: Counter | None = None) -> list[tuple[str, int, int | None]]:
        """These changes in one transaction, then their events (after the commit, as in real
        life). Returns (type, room_id, user_id) of each."""
        with connection(self.settings) as conn:
            done = [self.change(conn, t) for t in types]
        now = datetime.now(timezone.utc)
        pipe = self.client.pipeline(transaction=False)
        for type_, room, user in done:
            pipe.xadd(self.settings.events_stream, event_fields(type_, room, user, occurred_at=now))
            if counts is not None:
                counts[type_] += 1
        pipe.execute()
        return done

    def emit_batch(self, n: int, counts: Counter) -> None:
        self.emit_types(self.rng.choices(self.types, self.weights, k=n), counts)


def emit(settings: Settings, client, events: int, *, seed: int = 42, rate: float | None = None,
         batch: int = 100) -> EmitReport:
    """Make `events` room changes and publish them; at `rate` events/s when given (steady ticks
    of 10 ms), as fast as possible otherwise."""
    service = RoomService(settings, client, seed)
    counts: Counter = Counter()
    per_tick = max(1, round(rate / 100)) if rate else batch
    t0 = time.perf_counter()
    sent = 0
    while sent < events:
        n = min(per_tick, events - sent)
        if rate:
            delay = t0 + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        service.emit_batch(n, counts)
        sent += n
    report = EmitReport(sent, dict(sorted(counts.items())), time.perf_counter() - t0)
    log.info("published %d events in %.2fs: %s", report.events, report.seconds, report.by_type)
    return report
