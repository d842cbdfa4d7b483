"""Write freezes of chat rooms: `writes_frozen` in the chat table and in the cache, under a lease.

A freeze is a lease (``freezes.expires_at``): if whoever froze the rooms dies, the lease ends by
itself and ``expire()`` (run by chat_sync_health every 5 minutes) resumes writes and says so.
Re-freezing a room extends its lease.
"""

from __future__ import annotations

import logging

from psycopg import sql

from chatsync.alerting import alerts
from chatsync.config import MAX_FREEZE_TTL_SECONDS, Settings
from chatsync.db.connection import connection
from chatsync.db.statements import sql_file
from chatsync.errors import ConfigError
from chatsync.model import catalog
from chatsync.model.keys import json_keys, keys
from chatsync.model.mapping import load_mapping
from chatsync.model.sqlgen import now_for

log = logging.getLogger("chatsync.freeze")


def _parts(settings: Settings) -> dict:
    rooms = load_mapping(settings.mapping_path)["chat_rooms"]
    return {"ops": sql.Identifier(settings.ops_schema), "chat_rooms": rooms.ident, "room_id": rooms.col("room_id"),
            "writes_frozen": rooms.col("writes_frozen"), "updated_at": rooms.col("updated_at"),
            # the time of the change; UTC in a timestamp without time zone, whatever the session's TimeZone
            "now": now_for(catalog.types(settings).of("chat_rooms", "updated_at"))}


def _refresh_cache(settings: Settings, rooms: list) -> str | None:
    if not settings.redis_url or not rooms:
        return None
    from chatsync.events import cache, redis_recovery

    client = cache.client_for(settings)
    try:
        if redis_recovery.update_cache(settings, client, rooms, [], source="freeze") == "queued":
            return "Redis unreachable: queued in the outbox for the Redis recovery"
        return None
    except Exception as exc:  # noqa: BLE001 - the table is the truth; the cache follows at resync
        log.warning("freeze: cache not updated for rooms %s: %s", rooms, exc)
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def freeze(settings: Settings, rooms: list, reason: str, ttl_seconds: int, by: str = "cli", *,
           require_chat_room: bool = False) -> dict:
    """Freeze writes on these rooms. A room without a chat room gets its lease all the same and is
    reported in no_chat_room (the major-inconsistency procedure freezes every room it names);
    with require_chat_room it is an error instead, and nothing is frozen (the CLI's one room)."""
    if not rooms:
        raise ConfigError("freeze: no room id given")
    rooms = keys(settings).room.parse_all(rooms, "freeze")
    if not reason or not reason.strip():
        raise ConfigError("freeze: --reason is required (it is shown to operators and in the alert)")
    if not 0 < ttl_seconds <= MAX_FREEZE_TTL_SECONDS:
        raise ConfigError(f"freeze: --ttl must be between 1 and {MAX_FREEZE_TTL_SECONDS} seconds, got {ttl_seconds}")
    with connection(settings) as conn:
        flagged = conn.execute(sql_file(settings, "freeze_rooms", **_parts(settings)), {
            "rooms": sorted(set(rooms)), "reason": reason, "by": by, "ttl": ttl_seconds}).fetchall()
        missing = sorted(set(rooms) - {r for r, _ in flagged})
        if require_chat_room and missing:  # raised in the transaction: the new leases roll back
            table = load_mapping(settings.mapping_path)["chat_rooms"].qualified
            named = f"room {missing[0]} has" if len(missing) == 1 else f"rooms {', '.join(map(str, missing))} have"
            raise ConfigError(f"{named} no chat room ({table}): nothing frozen")
    expires = max((e for _, e in flagged), default=None)
    cache_error = _refresh_cache(settings, [r for r, _ in flagged])
    log.warning(alerts.structured("freeze", rooms=sorted(set(rooms)), reason=reason, by=by, ttl_s=ttl_seconds))
    return {"frozen": json_keys(sorted(r for r, _ in flagged)), "no_chat_room": json_keys(missing),
            "expires_at": expires.isoformat() if expires else None, "cache_error": cache_error}


def unfreeze(settings: Settings, rooms: list | None = None, *, expired: bool = False) -> dict:
    rooms = keys(settings).room.parse_all(rooms or [], "unfreeze")
    with connection(settings) as conn:
        lifted = conn.execute(sql_file(settings, "unfreeze_rooms", **_parts(settings)),
                              {"rooms": sorted(set(rooms)), "expired": expired}).fetchall()
    resumed = sorted(r for r, _, _, flagged in lifted if flagged)
    cache_error = _refresh_cache(settings, resumed)
    if expired and lifted:
        alerts.notify("freeze_lease_expired", f"write freeze lease ended for rooms {sorted(r for r, *_ in lifted)}: "
                      "writes resumed (the procedure that froze them did not finish)",
                      rooms=[r for r, *_ in lifted], reasons=sorted({reason for _, reason, _, _ in lifted}))
    return {"unfrozen": json_keys(sorted(r for r, *_ in lifted)), "writes_resumed": json_keys(resumed),
            "cache_error": cache_error}


def expire(settings: Settings) -> dict:
    """Lift every lease past its end."""
    return unfreeze(settings, expired=True)
