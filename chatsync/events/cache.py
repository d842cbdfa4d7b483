"""The Redis cache of the chat state that the chat gateway reads.

Key layout (``P`` = ``settings.redis_prefix``, default ``chatsync:``):

- ``P room:{room_id}`` — hash: ``status``, ``is_public``, ``chat_enabled``, ``archived``,
  ``writes_frozen`` (booleans as ``1``/``0``, SQL NULL as an empty string);
- ``P room:{room_id}:participants`` — hash: ``{user_id}`` → ``"{role}|{permissions}|{banned}"``;
- ``P rooms`` — set of the room ids present in the cache.

The cache is always written from the chat tables (never from events): a room is built under
temporary keys, then both keys are renamed over the live ones in one MULTI/EXEC, so a reader
never sees a half-built room. ``verify`` compares the cache with the chat tables.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from psycopg import sql

from chatsync.config import REDIS_SOCKET_TIMEOUT_SECONDS, Settings
from chatsync.db.connection import connection
from chatsync.db.statements import sql_file
from chatsync.errors import ConfigError
from chatsync.model.keys import Key
from chatsync.model.keys import keys as key_types
from chatsync.model.mapping import load_mapping

log = logging.getLogger("chatsync.cache")


ROOM_FIELDS = ("status", "is_public", "chat_enabled", "archived", "writes_frozen")
CACHE_KINDS = ("cache_missing_room", "cache_orphan_room", "cache_room_state_mismatch",
               "cache_missing_participant", "cache_orphan_participant", "cache_participant_mismatch")
CHUNK_ROOMS = 500
EXAMPLES = 20


def client_for(settings: Settings):
    import redis

    if not settings.redis_url:
        raise ConfigError("no Redis configured: set CHATSYNC_REDIS_URL (CLI) or the Airflow "
                          "connection 'chatsync_redis' (DAGs)")
    try:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                                    socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS, health_check_interval=30)
    except ValueError as exc:  # a malformed URL (Settings.check refuses it first, unless bypassed)
        raise ConfigError(f"CHATSYNC_REDIS_URL is not a valid Redis URL: {exc}") from None


def room_key(settings: Settings, room_id: Key) -> str:
    return f"{settings.redis_prefix}room:{room_id}"


def participants_key(settings: Settings, room_id: Key) -> str:
    return f"{settings.redis_prefix}room:{room_id}:participants"


def index_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}rooms"


def _flag(value) -> str:
    return "" if value is None else ("1" if value else "0")


def room_hash(row) -> dict[str, str]:
    status, *flags = row
    return {"status": status or "", **{name: _flag(v) for name, v in zip(ROOM_FIELDS[1:], flags)}}


def participant_value(role, permissions, banned) -> str:
    return f"{role or ''}|{'' if permissions is None else permissions}|{_flag(banned)}"


def _queries(settings: Settings) -> tuple[sql.Composed, sql.Composed]:
    m = load_mapping(settings.mapping_path)
    rooms, parts = m["chat_rooms"], m["chat_participants"]
    room_key_type = key_types(settings).room
    q_rooms = sql_file(settings, "cache_chat_rooms", chat_rooms=rooms.ident,
                       room_order=room_key_type.in_code_point_order(rooms.col("room_id")),
                       **{c: rooms.col(c) for c in ("room_id", *ROOM_FIELDS)})
    q_parts = sql_file(settings, "cache_chat_participants", chat_participants=parts.ident,
                       room_order=room_key_type.in_code_point_order(parts.col("room_id")),
                       **{c: parts.col(c) for c in ("room_id", "user_id", "role", "permissions", "banned")})
    return q_rooms, q_parts


@dataclass
class ChatRoom:
    room_id: Key
    state: dict[str, str]
    participants: dict[str, str] = field(default_factory=dict)


def load(settings: Settings, room_ids: Iterable[Key] | None = None) -> Iterator[ChatRoom]:
    """The chat state of the given rooms (all rooms when None), room by room in id order,
    streamed with server-side cursors (a full resync never holds the table in memory)."""
    q_rooms, q_parts = _queries(settings)
    ids = sorted(set(room_ids)) if room_ids is not None else []
    params = {"all": room_ids is None, "rooms": ids}
    with connection(settings) as conn:
        room_cur = conn.cursor(name="chatsync_cache_rooms")
        part_cur = conn.cursor(name="chatsync_cache_participants")
        room_cur.itersize = part_cur.itersize = 20_000
        room_cur.execute(q_rooms, params)
        part_cur.execute(q_parts, params)
        parts = iter(part_cur)
        pending = next(parts, None)
        for row in room_cur:
            room = ChatRoom(row[0], room_hash(row[1:]))
            while pending is not None and pending[0] < room.room_id:
                pending = next(parts, None)  # participants of a room missing from chat_rooms
            while pending is not None and pending[0] == room.room_id:
                room.participants[str(pending[1])] = participant_value(*pending[2:])
                pending = next(parts, None)
            yield room


def _write_chunk(client, settings: Settings, rooms: list[ChatRoom]) -> None:
    token = uuid.uuid4().hex[:12]
    build = client.pipeline(transaction=False)
    for room in rooms:
        tmp_room = f"{settings.redis_prefix}tmp:{token}:room:{room.room_id}"
        build.hset(tmp_room, mapping=room.state)
        if room.participants:
            build.hset(tmp_room + ":participants", mapping=room.participants)
    build.execute()
    swap = client.pipeline(transaction=True)  # MULTI/EXEC: readers see old rooms or new ones
    for room in rooms:
        tmp_room = f"{settings.redis_prefix}tmp:{token}:room:{room.room_id}"
        swap.rename(tmp_room, room_key(settings, room.room_id))
        if room.participants:
            swap.rename(tmp_room + ":participants", participants_key(settings, room.room_id))
        else:
            swap.delete(participants_key(settings, room.room_id))
    swap.sadd(index_key(settings), *[str(r.room_id) for r in rooms])
    swap.execute()


def _drop(client, settings: Settings, room_ids: Iterable[Key]) -> int:
    ids = list(room_ids)
    if not ids:
        return 0
    pipe = client.pipeline(transaction=True)
    for rid in ids:
        pipe.delete(room_key(settings, rid), participants_key(settings, rid))
    pipe.srem(index_key(settings), *map(str, ids))
    pipe.execute()
    return len(ids)


def _cached_ids(client, settings: Settings) -> set:
    """The room ids the cache's index holds, as the database gives them (a member that is no key
    of the mapped type cannot be a chat room's: left out, and dropped by the next full resync)."""
    room = key_types(settings).room
    ids = set()
    for member in client.smembers(index_key(settings)):
        try:
            ids.add(room.parse(text(member)))
        except ValueError:
            log.warning("cache index %s holds %r, not a room id of the mapped type: ignored",
                        index_key(settings), member)
    return ids


def apply_keys(settings: Settings, client, rooms: Iterable[Key],
               participants: Iterable[tuple[Key, Key]]) -> int:
    """Bring the named keys of the cache in line with the chat tables (what the worker does after
    each commit): a room's state hash and single participant fields, each written by one atomic
    command, so no reader sees a partial room. Returns the number of cache writes."""
    rooms, participants = sorted(set(rooms)), sorted(set(participants))
    m = load_mapping(settings.mapping_path)
    t_parts = m["chat_participants"]
    q_rooms = _queries(settings)[0]
    q_keys = sql_file(settings, "cache_chat_participant_keys", chat_participants=t_parts.ident,
                      **{c: t_parts.col(c) for c in ("room_id", "user_id", "role", "permissions", "banned")})
    with connection(settings) as conn:
        room_rows = conn.execute(q_rooms, {"all": False, "rooms": rooms}).fetchall() if rooms else []
        part_rows = conn.execute(q_keys, {"rooms": [k[0] for k in participants],
                                          "users": [k[1] for k in participants]}).fetchall() if participants else []
    pipe = client.pipeline(transaction=False)
    present = set()
    for row in room_rows:
        present.add(row[0])
        pipe.hset(room_key(settings, row[0]), mapping=room_hash(row[1:]))
    if present:
        pipe.sadd(index_key(settings), *map(str, present))
    gone = [r for r in rooms if r not in present]
    for rid in gone:
        pipe.delete(room_key(settings, rid), participants_key(settings, rid))
    if gone:
        pipe.srem(index_key(settings), *map(str, gone))
    for room_id, user_id, role, permissions, banned, exists in part_rows:
        if exists:
            pipe.hset(participants_key(settings, room_id), str(user_id), participant_value(role, permissions, banned))
        else:
            pipe.hdel(participants_key(settings, room_id), str(user_id))
    pipe.execute()
    return len(room_rows) + len(gone) + len(part_rows)


@dataclass
class ResyncResult:
    rooms: int = 0
    participants: int = 0
    removed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"rooms": self.rooms, "participants": self.participants, "removed": self.removed,
                "seconds": round(self.seconds, 3)}


def refresh(settings: Settings, client, room_ids: Iterable[Key] | None = None) -> ResyncResult:
    """Rebuild the cache of the given rooms (all when None) from the chat tables; rooms no longer
    in the chat tables leave the cache."""
    t0 = time.perf_counter()
    result = ResyncResult()
    wanted = None if room_ids is None else set(room_ids)
    seen: set[Key] = set()
    chunk: list[ChatRoom] = []
    for room in load(settings, wanted):
        chunk.append(room)
        seen.add(room.room_id)
        result.rooms += 1
        result.participants += len(room.participants)
        if len(chunk) >= CHUNK_ROOMS:
            _write_chunk(client, settings, chunk)
            chunk = []
    if chunk:
        _write_chunk(client, settings, chunk)
    stale = (_cached_ids(client, settings) if wanted is None else wanted) - seen
    result.removed = _drop(client, settings, stale)
    result.seconds = time.perf_counter() - t0
    return result


def resync(settings: Settings, rooms: Iterable[Key] | None = None) -> ResyncResult:
    client = client_for(settings)
    try:
        result = refresh(settings, client, rooms)
    finally:
        client.close()
    log.info("cache resync: %d rooms, %d participants written, %d rooms removed in %.2fs",
             result.rooms, result.participants, result.removed, result.seconds)
    return result


@dataclass
class VerifyResult:
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in CACHE_KINDS})
    examples: list[dict] = field(default_factory=list)
    rooms_checked: int = 0
    seconds: float = 0.0
    rooms: set[Key] = field(default_factory=set)  # the rooms that differ

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, room_id: Key, user_id: Key | None = None) -> None:
        self.counts[kind] += 1
        self.rooms.add(room_id)
        if len(self.examples) < EXAMPLES:
            self.examples.append({"kind": kind, "room_id": room_id, "user_id": user_id})

    def to_dict(self) -> dict:
        return {"counts": self.counts, "total": self.total, "examples": self.examples,
                "rooms_checked": self.rooms_checked, "seconds": round(self.seconds, 3)}


def text(value) -> str:
    """A Redis reply value as str (the client returns bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_hash(h: dict) -> dict[str, str]:
    return {text(k): text(v) for k, v in h.items()}


def _compare_chunk(client, settings: Settings, rooms: list[ChatRoom], result: VerifyResult) -> None:
    pipe = client.pipeline(transaction=False)
    for room in rooms:
        pipe.hgetall(room_key(settings, room.room_id))
        pipe.hgetall(participants_key(settings, room.room_id))
    replies = pipe.execute()
    user_key = key_types(settings).user
    for i, room in enumerate(rooms):
        cached_state, cached_parts = decode_hash(replies[2 * i]), decode_hash(replies[2 * i + 1])
        if not cached_state:
            result.add("cache_missing_room", room.room_id)
        elif cached_state != room.state:
            result.add("cache_room_state_mismatch", room.room_id)
        for user, value in room.participants.items():
            got = cached_parts.get(user)
            if got is None:
                result.add("cache_missing_participant", room.room_id, user_key.parse(user))
            elif got != value:
                result.add("cache_participant_mismatch", room.room_id, user_key.parse(user))
        for user in cached_parts.keys() - room.participants.keys():
            result.add("cache_orphan_participant", room.room_id, _key_or_text(user_key, user))


def _key_or_text(key, raw: str):
    try:
        return key.parse(raw)
    except ValueError:  # a field no writer of chatsync's made: reported as it is
        return raw


def verify(settings: Settings, rooms: Iterable[Key] | None = None, client=None) -> VerifyResult:
    """Differences between the cache and the chat tables, counted by kind (nothing is changed)."""
    t0 = time.perf_counter()
    own = client is None
    client = client or client_for(settings)
    result = VerifyResult()
    wanted = None if rooms is None else set(rooms)
    seen: set[Key] = set()
    try:
        chunk: list[ChatRoom] = []
        for room in load(settings, wanted):
            chunk.append(room)
            seen.add(room.room_id)
            if len(chunk) >= CHUNK_ROOMS:
                _compare_chunk(client, settings, chunk, result)
                chunk = []
        if chunk:
            _compare_chunk(client, settings, chunk, result)
        result.rooms_checked = len(seen)
        candidates = _cached_ids(client, settings) if wanted is None else wanted
        orphans = sorted(candidates - seen)
        if orphans:
            pipe = client.pipeline(transaction=False)
            for rid in orphans:
                pipe.exists(room_key(settings, rid), participants_key(settings, rid))
            for rid, present in zip(orphans, pipe.execute()):
                if present:
                    result.add("cache_orphan_room", rid)
    finally:
        if own:
            client.close()
    result.seconds = time.perf_counter() - t0
    log.info("cache verify: %d rooms checked, %d differences %s in %.2fs", result.rooms_checked,
             result.total, {k: v for k, v in result.counts.items() if v}, result.seconds)
    return result
