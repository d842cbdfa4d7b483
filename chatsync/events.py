"""Room events on a Redis Stream: the types, their validation, and the publisher API.

An event names *what* changed (DESIGN.md §3); the worker reconciles those keys from the room
tables, so an event carries no new values and duplicates or reordering are harmless.
Stream entry fields: ``event_id``, ``type``, ``room_id``, ``user_id`` (participant events),
``occurred_at`` (ISO-8601 UTC).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from chatsync.errors import ValidationError

PARTICIPANT_EVENTS = (
    "room.participant.added", "room.participant.removed", "room.participant.role_changed",
    "room.participant.banned", "room.participant.unbanned", "room.participant.permissions_updated",
)
ROOM_EVENTS = ("room.status.changed", "room.archived", "room.unarchived", "room.settings.changed")
EVENT_TYPES = PARTICIPANT_EVENTS + ROOM_EVENTS
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Event:
    stream_id: str
    event_id: str
    type: str
    room_id: int
    user_id: int | None
    occurred_at: datetime

    @property
    def is_participant(self) -> bool:
        return self.type in PARTICIPANT_EVENTS


def _text(fields: dict, name: str) -> str | None:
    value = fields.get(name, fields.get(name.encode()))
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"field {name!r} is not UTF-8") from None
    return value


def _positive_id(fields: dict, name: str) -> int:
    raw = _text(fields, name)
    if raw is None or raw == "":
        raise ValidationError(f"missing field {name!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"field {name!r} is not a whole number: {raw!r}") from None
    if not 0 < value <= MAX_ID:
        raise ValidationError(f"field {name!r} is out of range: {value}")
    return value


def parse(stream_id: str, fields: dict) -> Event:
    """A valid Event from a stream entry, or ValidationError naming what is wrong."""
    event_id = _text(fields, "event_id")
    if not event_id or len(event_id) > 200:
        raise ValidationError("missing field 'event_id'" if not event_id else "field 'event_id' is longer than 200")
    type_ = _text(fields, "type")
    if type_ not in EVENT_TYPES:
        raise ValidationError(f"unknown event type {type_!r}" if type_ else "missing field 'type'")
    room_id = _positive_id(fields, "room_id")
    user_id = _positive_id(fields, "user_id") if type_ in PARTICIPANT_EVENTS else None
    raw_time = _text(fields, "occurred_at")
    if not raw_time:
        raise ValidationError("missing field 'occurred_at'")
    try:
        occurred_at = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"field 'occurred_at' is not an ISO-8601 time: {raw_time!r}") from None
    if occurred_at.tzinfo is None:
        raise ValidationError(f"field 'occurred_at' has no time zone: {raw_time!r}")
    return Event(stream_id, event_id, type_, room_id, user_id, occurred_at)


def raw_fields(fields: dict) -> dict[str, str]:
    """The entry as JSON-safe text, for the dead-letter table."""
    out = {}
    for k, v in fields.items():
        key = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        out[key] = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return out


def event_fields(type: str, room_id: int, user_id: int | None = None, *,
                 occurred_at: datetime | None = None, event_id: str | None = None) -> dict[str, str]:
    """The stream fields of one event (validated: a bad event is refused at the source)."""
    fields = {"event_id": event_id or uuid.uuid4().hex, "type": type, "room_id": str(room_id),
              "occurred_at": (occurred_at or datetime.now(timezone.utc)).isoformat()}
    if user_id is not None:
        fields["user_id"] = str(user_id)
    parse("-", fields)
    return fields


def publish(client, stream: str, type: str, room_id: int, user_id: int | None = None, *,
            occurred_at: datetime | None = None, event_id: str | None = None) -> str:
    """Append one room event to the stream (what the room service calls after its commit).
    Returns the stream entry id."""
    entry = client.xadd(stream, event_fields(type, room_id, user_id, occurred_at=occurred_at,
                                             event_id=event_id))
    return entry.decode() if isinstance(entry, bytes) else entry
