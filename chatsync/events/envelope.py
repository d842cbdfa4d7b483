"""Room events on a Redis Stream: the types, their validation, and the publisher API.

An event names *what* changed; the worker reconciles those keys from the room
tables, so an event carries no new values and duplicates or reordering are harmless.
Stream entry fields: ``event_id``, ``type``, ``room_id``, ``user_id`` (participant events),
``occurred_at`` (ISO-8601 with a time zone; the Event holds it in UTC).
Parsing is strict: whatever passes can be stored by the worker's SQL as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from chatsync.config import WHOLE_NUMBER
from chatsync.errors import ValidationError
from chatsync.model.keys import INTEGER_SPANS, Keys, KeyType

PARTICIPANT_EVENTS = (
    "room.participant.added", "room.participant.removed", "room.participant.role_changed",
    "room.participant.banned", "room.participant.unbanned", "room.participant.permissions_updated",
)
ROOM_EVENTS = ("room.status.changed", "room.archived", "room.unarchived", "room.settings.changed")
EVENT_TYPES = PARTICIPANT_EVENTS + ROOM_EVENTS
MAX_ID = 2**63 - 1  # whole-number ids are at most bigint
MAX_EVENT_ID_CHARS = 200
MAX_OFFSET = timedelta(hours=15, minutes=59)  # PostgreSQL refuses a larger time zone displacement
QUOTE_CHARS = 60  # of a bad value quoted in a reason: a 1 MB field never makes a 1 MB reason
DISPLAY_CHARS = 2000  # of a value shown in a dead letter's jsonb `raw`


@dataclass(frozen=True)
class Event:
    stream_id: str
    event_id: str
    type: str
    room_id: int | uuid.UUID | str  # of the mapped key type (chatsync.model.keys)
    user_id: int | uuid.UUID | str | None
    occurred_at: datetime  # in UTC

    @property
    def is_participant(self) -> bool:
        return self.type in PARTICIPANT_EVENTS


def _as_bytes(value) -> bytes:
    """A field name or value as the bytes Redis holds: str as UTF-8 (a str that is no valid text,
    holding lone surrogates, passes as the invalid UTF-8 it stands for), anything else str()'d."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogatepass")


def _cut(text: str, size: int, limit: int) -> str:
    """text, or its first `limit` characters and the size of the whole."""
    return text if len(text) <= limit else f"{text[:limit]}…({size} bytes)"


def _quote(value: str | bytes) -> str:
    """A bad value for a reason: repr (NUL and other control characters escaped), cut short."""
    if len(value) <= QUOTE_CHARS:
        return repr(value)
    return f"{value[:QUOTE_CHARS]!r}…({len(_as_bytes(value))} bytes)"


def _text(value, what: str) -> str:
    """value as text, refusing what no text column can hold: invalid UTF-8 and NUL."""
    raw = _as_bytes(value)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{what} is not UTF-8: {_quote(raw)}") from None
    if "\x00" in text:
        raise ValidationError(f"{what} holds a NUL byte: {_quote(text)}")
    return text


def _decoded(fields: dict) -> dict[str, str]:
    """Every field of the entry as text, the unknown ones too: the whole entry is refused or none."""
    out = {}
    for key, value in fields.items():
        name = _text(key, "field name")
        out[name] = _text(value, f"field {name!r}")
    return out


def _positive_id(fields: dict[str, str], name: str) -> int:
    raw = fields.get(name)
    if not raw:
        raise ValidationError(f"missing field {name!r}")
    if not WHOLE_NUMBER.fullmatch(raw):  # ASCII digits; a minus sign is refused as out of range
        raise ValidationError(f"field {name!r} is not a whole number: {_quote(raw)}")
    digits = raw.lstrip("-").lstrip("0")
    # measured as text first: int() of a megabyte of digits is slow, and refused past 4300 of them
    value = int(digits) if digits and len(digits) <= len(str(MAX_ID)) else None
    if raw.startswith("-") or value is None or value > MAX_ID:
        raise ValidationError(f"field {name!r} is out of range: {_cut(raw, len(raw), QUOTE_CHARS)}")
    return value


def _key(fields: dict[str, str], name: str, key: KeyType | None):
    """The id field `name` as the mapped key type reads it (no type given: a bigint)."""
    if key is None or key.kind == "integer":
        value = _positive_id(fields, name)
        if key is not None and value >= INTEGER_SPANS[key.chat_type]:
            raise ValidationError(f"field {name!r} is out of range for the key column ({key.chat_type}): "
                                  f"{_quote(fields[name])}")
        return value
    raw = fields.get(name)
    if not raw:
        raise ValidationError(f"missing field {name!r}")
    try:
        return key.parse(raw)
    except ValueError:
        what = "a uuid" if key.kind == "uuid" else f"a key of the column's type ({key.chat_type})"
        raise ValidationError(f"field {name!r} is not {what}: {_quote(raw)}") from None


def _utc_time(fields: dict[str, str], name: str) -> datetime:
    raw = fields.get(name)
    if not raw:
        raise ValidationError(f"missing field {name!r}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"field {name!r} is not an ISO-8601 time: {_quote(raw)}") from None
    offset = value.utcoffset()
    if offset is None:
        raise ValidationError(f"field {name!r} has no time zone: {_quote(raw)}")
    if abs(offset) > MAX_OFFSET:
        raise ValidationError(f"field {name!r} has a time zone offset out of range (PostgreSQL takes up to "
                              f"±15:59): {_quote(raw)}")
    try:  # in UTC, so that nothing downstream depends on the offset
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(f"field {name!r} is out of range once in UTC (years 1 to 9999): "
                              f"{_quote(raw)}") from None


def parse(stream_id: str, fields: dict, keys: Keys | None = None) -> Event:
    """A valid Event from a stream entry, or ValidationError naming what is wrong; room_id and
    user_id are read as the mapped keys' type (none given: bigint)."""
    f = _decoded(fields)
    event_id = f.get("event_id")
    if not event_id:
        raise ValidationError("missing field 'event_id'")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise ValidationError(f"field 'event_id' is longer than {MAX_EVENT_ID_CHARS} characters: {_quote(event_id)}")
    type_ = f.get("type")
    if type_ not in EVENT_TYPES:
        raise ValidationError(f"unknown event type {_quote(type_)}" if type_ else "missing field 'type'")
    room_id = _key(f, "room_id", keys.room if keys else None)
    user_id = _key(f, "user_id", keys.user if keys else None) if type_ in PARTICIPANT_EVENTS else None
    return Event(stream_id, event_id, type_, room_id, user_id, _utc_time(f, "occurred_at"))


def raw_entry(fields: dict) -> list[bytes]:
    """The entry exactly as read, field, value, field, value, ... as bytes: what XADD takes back,
    so a dead letter can be put on the stream again once its cause is fixed."""
    return [_as_bytes(part) for pair in fields.items() for part in pair]


def _shown(value, max_chars: int) -> str:
    raw = _as_bytes(value)
    text = raw.decode(errors="backslashreplace").replace("\x00", "\\x00")  # jsonb cannot hold U+0000
    return _cut(text, len(raw), max_chars)


def display_fields(fields: dict, max_chars: int = DISPLAY_CHARS) -> dict[str, str]:
    """The entry as readable, JSON-safe text, for the dead letter's jsonb `raw`: invalid UTF-8 as
    backslash escapes, NUL as the four characters \\x00, long names and values cut short."""
    return {_shown(k, max_chars): _shown(v, max_chars) for k, v in fields.items()}


def _keys_of(room_id, user_id) -> Keys:
    """Key types a publisher's ids stand for (whole numbers, uuids or strings), to validate with."""
    def kind(value) -> KeyType:
        if isinstance(value, uuid.UUID):
            return KeyType("id", "uuid", "uuid")
        return KeyType("id", "text", "text") if isinstance(value, str) else KeyType("id", "integer", "bigint")
    return Keys(kind(room_id), kind(user_id))


def event_fields(type: str, room_id, user_id=None, *, occurred_at: datetime | None = None,
                 event_id: str | None = None) -> dict[str, str]:
    """The stream fields of one event (validated: a bad event is refused at the source)."""
    fields = {"event_id": event_id or uuid.uuid4().hex, "type": type, "room_id": str(room_id),
              "occurred_at": (occurred_at or datetime.now(timezone.utc)).isoformat()}
    if user_id is not None:
        fields["user_id"] = str(user_id)
    parse("-", fields, _keys_of(room_id, user_id))
    return fields


def publish(client, stream: str, type: str, room_id, user_id=None, *,
            occurred_at: datetime | None = None, event_id: str | None = None) -> str:
    """Append one room event to the stream (what the room service calls after its commit).
    Returns the stream entry id."""
    entry = client.xadd(stream, event_fields(type, room_id, user_id, occurred_at=occurred_at,
                                             event_id=event_id))
    return entry.decode() if isinstance(entry, bytes) else entry
