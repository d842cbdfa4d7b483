"""The consistency rules: one declarative list that drives the diff SQL, the repair SQL and the
Great Expectations suite (README, *The reference schema*).

An *entity* pairs a room-side table (the truth) with its chat-side copy. Each compared *field*
says how the chat value is derived from the room row and which inconsistency kind a difference
counts as. Nothing here knows table or column names, nor which values a field may hold: those
come from the mapping (its ``domains:`` section, chatsync.model.mapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# ⚑ Inconsistency kinds, verbatim in the ops tables, metrics, CLI output and alerts.
MISSING_CHAT_ROOM = "missing_chat_room"
ORPHAN_CHAT_ROOM = "orphan_chat_room"
ROOM_STATE_MISMATCH = "room_state_mismatch"
MISSING_PARTICIPANT = "missing_participant"
ORPHAN_PARTICIPANT = "orphan_participant"
ROLE_MISMATCH = "role_mismatch"
PERMISSIONS_MISMATCH = "permissions_mismatch"
BAN_MISMATCH = "ban_mismatch"

KINDS: tuple[str, ...] = (
    MISSING_CHAT_ROOM,
    ORPHAN_CHAT_ROOM,
    ROOM_STATE_MISMATCH,
    MISSING_PARTICIPANT,
    ORPHAN_PARTICIPANT,
    ROLE_MISMATCH,
    PERMISSIONS_MISMATCH,
    BAN_MISMATCH,
)

Transform = Literal["copy", "is_not_null"]


@dataclass(frozen=True)
class Field:
    """A chat column and the room expression it must equal."""

    chat: str  # logical chat column
    room: str  # logical room column
    kind: str  # inconsistency kind when they differ
    transform: Transform = "copy"  # chat = room  |  chat = (room IS NOT NULL)


@dataclass(frozen=True)
class Entity:
    name: str  # "room" | "participant"
    room_table: str  # mapping key of the truth table
    chat_table: str  # mapping key of the copy
    room_key: tuple[str, ...]  # logical key columns on the room side
    chat_key: tuple[str, ...]  # ... and on the chat side, same order
    missing_kind: str  # room row without chat row
    orphan_kind: str  # chat row without room row
    fields: tuple[Field, ...]
    # chat columns set on insert that are not derived from the room row (chat-owned state)
    chat_defaults: tuple[tuple[str, object], ...] = ()

    @property
    def mismatch_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.fields))

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.missing_kind, self.orphan_kind, *self.mismatch_kinds)

    @property
    def has_user(self) -> bool:
        return len(self.chat_key) == 2


ROOM = Entity(
    name="room",
    room_table="room_rooms",
    chat_table="chat_rooms",
    room_key=("id",),
    chat_key=("room_id",),
    missing_kind=MISSING_CHAT_ROOM,
    orphan_kind=ORPHAN_CHAT_ROOM,
    fields=(
        Field("status", "status", ROOM_STATE_MISMATCH),
        Field("is_public", "is_public", ROOM_STATE_MISMATCH),
        Field("chat_enabled", "chat_enabled", ROOM_STATE_MISMATCH),
        Field("archived", "archived_at", ROOM_STATE_MISMATCH, transform="is_not_null"),
    ),
    chat_defaults=(("writes_frozen", False),),
)

PARTICIPANT = Entity(
    name="participant",
    room_table="room_participants",
    chat_table="chat_participants",
    room_key=("room_id", "user_id"),
    chat_key=("room_id", "user_id"),
    missing_kind=MISSING_PARTICIPANT,
    orphan_kind=ORPHAN_PARTICIPANT,
    fields=(
        Field("role", "role", ROLE_MISMATCH),
        Field("permissions", "permissions", PERMISSIONS_MISMATCH),
        Field("banned", "banned_at", BAN_MISMATCH, transform="is_not_null"),
    ),
)

# Repair order matters: chat rooms are created before their participants.
ENTITIES: tuple[Entity, ...] = (ROOM, PARTICIPANT)


def entity_of_kind(kind: str) -> Entity:
    for entity in ENTITIES:
        if kind in entity.kinds:
            return entity
    raise ValueError(f"unknown inconsistency kind {kind!r}; known kinds: {', '.join(KINDS)}")


assert set(KINDS) == {k for e in ENTITIES for k in e.kinds}, "every kind belongs to one entity"
# A field is named by its chat column's logical name alone (the mapping's domains: section).
FIELDS: dict[str, tuple[Entity, Field]] = {f.chat: (e, f) for e in ENTITIES for f in e.fields}
assert len(FIELDS) == sum(len(e.fields) for e in ENTITIES), "field names are unique across entities"
