"""Redis connection loss (seed: fall back to a local cache, reconnect, resync).

While Redis is unreachable, a cache update does not fail the work that made it (the chat tables
are the truth and are already committed): the keys' new state goes into this process's local
cache (readable like Redis through ``read_room``) and the keys into a durable outbox in Postgres,
under one open outage (alerted once). Reconnection backs off exponentially with jitter. Once Redis
answers, ``recover`` resyncs the rooms the outbox names plus the chat rows changed since the
outage began, or everything when the outage outlived the outbox (it overflowed, or Redis came back
empty), verifies the cache against the chat tables, then empties the outbox and closes the outage.
The worker runs it by itself after an outage; ``chat_redis_recovery`` runs it from Airflow.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from psycopg import sql

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.db import locks
from chatsync.db.connection import connection, is_transient, one
from chatsync.db.retry import with_retry
from chatsync.db.statements import ops_ident
from chatsync.errors import ChatsyncError, TransientError
from chatsync.events import cache
from chatsync.model import catalog
from chatsync.model.keys import keys as key_types
from chatsync.model.mapping import load_mapping
from chatsync.model.sqlgen import changed_since

log = logging.getLogger("chatsync.redis_recovery")
J = sql.SQL


class LocalCache:
    """The part of the Redis cache this process wrote while Redis was away, with the same key
    layout and the few commands ``cache.apply_keys`` uses; bounded (oldest keys go first)."""

    def __init__(self, max_keys: int = 50_000):
        self.max_keys, self.lock = max_keys, threading.Lock()
        self.data: OrderedDict[str, Any] = OrderedDict()

    # the pipeline interface of redis-py, enough for cache.apply_keys
    def pipeline(self, transaction: bool = False) -> LocalCache:
        return self

    def execute(self) -> list:
        return []

    def _put(self, key: str, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.max_keys:
            self.data.popitem(last=False)

    def hset(self, key: str, field: str | None = None, value: str | None = None, mapping: dict | None = None) -> None:
        with self.lock:
            h = dict(self.data.get(key) or {})
            h.update(mapping or {})
            if field is not None:
                h[field] = value
            self._put(key, h)

    def hdel(self, key: str, *fields: str) -> None:
        with self.lock:
            h = dict(self.data.get(key) or {})
            for f in fields:
                h.pop(f, None)
            self._put(key, h)

    def delete(self, *keys: str) -> None:
        with self.lock:
            for k in keys:
                self._put(k, None)  # known gone (not: unknown)

    def sadd(self, key: str, *members) -> None:
        with self.lock:
            self._put(key, set(self.data.get(key) or set()) | {str(m) for m in members})

    def srem(self, key: str, *members) -> None:
        with self.lock:
            self._put(key, set(self.data.get(key) or set()) - {str(m) for m in members})

    def knows(self, key: str) -> bool:
        return key in self.data

    def hgetall(self, key: str) -> dict:
        return dict(self.data.get(key) or {})

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


LOCAL = LocalCache()


def redis_down(exc: BaseException) -> bool:
    """Redis did not answer (connection refused or lost, timeout)."""
    import redis

    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def update_cache(settings: Settings, client, rooms, participants, *, source: str) -> str:
    """Bring the named keys of the cache in line with the chat tables; with Redis unreachable,
    write them to the local cache and queue them in the outbox instead. 'applied' or 'queued'."""
    rooms, participants = sorted(set(rooms)), sorted(set(participants))
    try:
        cache.apply_keys(settings, client, rooms, participants)
        return "applied"
    except Exception as exc:  # noqa: BLE001 - only a lost Redis is absorbed here
        if not redis_down(exc):
            raise
        cache.apply_keys(settings, LOCAL, rooms, participants)
        queue(settings, rooms, participants, source=source, error=f"{type(exc).__name__}: {exc}")
        return "queued"


def read_room(settings: Settings, client, room_id: int) -> dict:
    """A room's cached state and participants: from Redis, or from the local cache while Redis is
    unreachable (None for a room this process never wrote)."""
    keys = cache.room_key(settings, room_id), cache.participants_key(settings, room_id)
    try:
        return {"room": cache.decode_hash(client.hgetall(keys[0])),
                "participants": cache.decode_hash(client.hgetall(keys[1])),
                "source": "redis"}
    except Exception as exc:  # noqa: BLE001
        if not redis_down(exc):
            raise
    if not LOCAL.knows(keys[0]) and not LOCAL.knows(keys[1]):
        return {"room": None, "participants": None, "source": "local"}
    return {"room": LOCAL.hgetall(keys[0]), "participants": LOCAL.hgetall(keys[1]), "source": "local"}


def queue(settings: Settings, rooms: list, participants: list, *, source: str,
          error: str) -> dict:
    """Record the keys the cache missed (durable) under the open outage, opening it if needed."""
    ops = ops_ident(settings)
    keys = [(r, None) for r in rooms] + list(participants)
    with connection(settings) as conn, conn.transaction():
        opened = conn.execute(J("INSERT INTO {}.redis_outages (first_error) VALUES (%s) ON CONFLICT DO NOTHING "
                                "RETURNING id").format(ops), (error,)).fetchone()
        outage_id, queued, overflowed = one(conn.execute(J(
            "SELECT id, queued, overflowed FROM {}.redis_outages WHERE ended_at IS NULL FOR UPDATE")
            .format(ops)))
        if overflowed or queued + len(keys) > settings.cache_outbox_max_rows:
            conn.execute(J("UPDATE {}.redis_outages SET overflowed = true WHERE id = %s").format(ops), (outage_id,))
            overflowed = True
        else:
            mapped = key_types(settings)
            conn.execute(J("INSERT INTO {}.cache_outbox (outage_id, room_id, user_id, source) "
                           "SELECT %s, r, u, %s FROM unnest(%s::{}[], %s::{}[]) AS k(r, u)").format(
                ops, mapped.room.sql_type, mapped.user.sql_type),
                         (outage_id, source, [k[0] for k in keys], [k[1] for k in keys]))
            conn.execute(J("UPDATE {}.redis_outages SET queued = queued + %s WHERE id = %s").format(ops),
                         (len(keys), outage_id))
    if opened:
        alerts.notify("redis_unreachable", f"Redis is unreachable ({error}); cache updates go to the local cache "
                      "and the outbox until chat_redis_recovery resyncs them", outage_id=outage_id, event="firing")
    log.warning(alerts.structured("cache_queued", outage_id=outage_id, keys=len(keys), source=source,
                                  overflowed=overflowed))
    return {"outage_id": outage_id, "queued": len(keys), "overflowed": overflowed}


def note_outage(settings: Settings, error: str, *, data_lost: str | None = None) -> None:
    """Open the outage without keys (a reader or the stream lost Redis): the recovery still runs.
    data_lost: why Redis is known to have lost its data; the recovery then rebuilds every room
    (the stream_lost alert says so: no redis_unreachable alert for it)."""
    if data_lost is None:
        queue(settings, [], [], source="reconnect", error=error)
        return
    ops = ops_ident(settings)
    with connection(settings) as conn:
        conn.execute(J("INSERT INTO {}.redis_outages (first_error) VALUES (%s) ON CONFLICT DO NOTHING").format(ops),
                     (error,))
        conn.execute(J("UPDATE {}.redis_outages SET data_lost = coalesce(data_lost, %s) WHERE ended_at IS NULL")
                     .format(ops), (data_lost,))


def reconnect(settings: Settings, client, max_seconds: float) -> int:
    """Ping until Redis answers, backing off exponentially with full jitter; the number of tries.
    TransientError (Airflow retries the task) if it stays away max_seconds."""
    tries = 0

    def ping() -> None:
        nonlocal tries
        tries += 1
        client.ping()
    try:
        with_retry(ping, settings, "Redis", attempts=sys.maxsize, base=0.2, cap=settings.redis_reconnect_max_seconds,
                   within=max_seconds, message="Redis unreachable (try {attempt}), next try in {delay:.2f}s: {error}")
    except Exception as exc:  # noqa: BLE001 - only a Redis that stays away becomes a TransientError
        if not is_transient(exc):
            raise
        raise TransientError(f"Redis still unreachable after {tries} tries: {exc}") from exc
    if tries > 1:
        log.info("Redis answers again after %d tries", tries)
    return tries


def _rooms_touched(conn, settings: Settings, outage_started, outbox_upto: int) -> set[int]:
    """The outbox's rooms (up to outbox_upto) and the chat rows changed since the outage began
    (no outage open: the outbox alone)."""
    ops = ops_ident(settings)
    m = load_mapping(settings.mapping_path)
    rooms = {r for (r,) in conn.execute(J("SELECT DISTINCT room_id FROM {}.cache_outbox WHERE id <= %s")
                                         .format(ops), (outbox_upto,))}
    for t in (m["chat_rooms"], m["chat_participants"]) if outage_started else ():
        changed = changed_since(t.col("updated_at"), catalog.types(settings).of(t.key, "updated_at"), sql.Placeholder())
        rooms |= {r for (r,) in conn.execute(
            J("SELECT DISTINCT {} FROM {} WHERE {}").format(t.col("room_id"), t.ident, changed), (outage_started,))}
    return rooms


def plan(settings: Settings, client, scope: str = "auto") -> dict:
    """What to resync: the outbox's rooms plus the chat rows changed since the outage began, or
    everything (asked for, Redis lost its data, the outbox overflowed, or Redis came back without
    the cache). A small
    summary (it travels as XCom): resync and verify list the rooms again from it."""
    ops = ops_ident(settings)
    with connection(settings) as conn:
        outage = conn.execute(J("SELECT id, started_at, overflowed, data_lost FROM {}.redis_outages "
                                "WHERE ended_at IS NULL").format(ops)).fetchone()
        upto = one(conn.execute(J("SELECT coalesce(max(id), 0) FROM {}.cache_outbox").format(ops)))[0]
        rooms = _rooms_touched(conn, settings, outage[1] if outage else None, upto)
        chat_rooms = one(conn.execute(J("SELECT count(*) FROM {}").format(
            load_mapping(settings.mapping_path)["chat_rooms"].ident)))[0]
    cached = client.scard(cache.index_key(settings))
    reason = None
    if scope == "all":
        reason = "asked for"
    elif outage and outage[3]:
        reason = f"Redis lost its data ({outage[3]})"
    elif outage and outage[2]:
        reason = f"the outbox overflowed (more than {settings.cache_outbox_max_rows} keys)"
    elif chat_rooms and not cached:
        reason = "Redis came back without the cache"
    return {"outage_id": outage[0] if outage else None, "outage_started": outage[1].isoformat() if outage else None,
            "outbox_upto": upto, "scope": "all" if reason else "rooms", "why_all": reason,
            "rooms": None if reason else len(rooms), "cached_rooms_before": cached}


def _rooms(settings: Settings, planned: dict) -> list[int] | None:
    """The rooms a plan names (None: all), listed again from the database."""
    if planned["scope"] == "all":
        return None
    started = planned["outage_started"] and datetime.fromisoformat(planned["outage_started"])
    with connection(settings) as conn:
        return sorted(_rooms_touched(conn, settings, started, planned["outbox_upto"]))


def resync(settings: Settings, client, planned: dict) -> dict:
    return cache.refresh(settings, client, _rooms(settings, planned)).to_dict()


VERIFY_ROUNDS = 3


def verify(settings: Settings, client, planned: dict) -> dict:
    """The resynced rooms against the chat tables. A room written by a worker between the resync
    and this check can differ for a moment (the chat tables commit first, the cache follows):
    such rooms are resynced and checked again, VERIFY_ROUNDS times at most."""
    result = cache.verify(settings, _rooms(settings, planned), client=client)
    for _ in range(VERIFY_ROUNDS - 1):
        if not result.total:
            break
        differing = sorted(result.rooms)
        log.info("cache verify: %d rooms differ after the resync; resyncing them again", len(differing))
        cache.refresh(settings, client, differing)
        again = cache.verify(settings, differing, client=client)
        result.counts, result.examples, result.rooms = again.counts, again.examples, again.rooms
    if result.total:
        raise ChatsyncError(f"the cache still differs from the chat tables after the resync: {result.to_dict()}")
    return result.to_dict()


def close(settings: Settings, planned: dict, resynced: dict, verified: dict) -> dict:
    """Empty the outbox up to what was resynced (keys queued since stay for the next recovery),
    close the outage, clear the local cache, and say the cache is whole again."""
    from psycopg.types.json import Jsonb

    ops = ops_ident(settings)
    with connection(settings) as conn, conn.transaction():
        done = conn.execute(J("DELETE FROM {}.cache_outbox WHERE id <= %s").format(ops),
                            (planned["outbox_upto"],)).rowcount
        if planned["outage_id"]:
            conn.execute(J("UPDATE {}.redis_outages SET ended_at = clock_timestamp(), resync_scope = %s, "
                           "resynced = %s, verified = %s WHERE id = %s").format(ops),
                         (planned["scope"], Jsonb(resynced), Jsonb(verified), planned["outage_id"]))
    LOCAL.clear()
    out = {"outage_id": planned["outage_id"], "scope": planned["scope"], "outbox_cleared": done,
           "resynced": resynced, "verified": verified}
    if planned["outage_id"]:
        rooms = "" if planned["rooms"] is None else f", {planned['rooms']} rooms"
        alerts.resolve("redis_unreachable", f"Redis is back; cache resynced ({planned['scope']}{rooms}) and verified",
                       outage_id=planned["outage_id"])
    log.info(alerts.structured("redis_recovered", **{k: v for k, v in out.items() if k != "verified"}))
    return out


def with_client(settings: Settings, step, *args):
    """Run ``step(settings, client, *args)`` on a Redis client of its own, closed afterwards (what
    each task of chat_redis_recovery does)."""
    client = cache.client_for(settings)
    try:
        return step(settings, client, *args)
    finally:
        client.close()


def recover(settings: Settings, client=None, *, scope: str = "auto", max_wait_seconds: float = 300.0,
            wait_for_lock: bool = True) -> dict | None:
    """The whole procedure, under a lock (None when another recovery holds it and wait_for_lock
    is false: that one does the work)."""
    if client is None:
        return with_client(settings, lambda s, c: recover(s, c, scope=scope, max_wait_seconds=max_wait_seconds,
                                                          wait_for_lock=wait_for_lock))
    control = locks.control(settings)
    if not control.take(locks.RECOVERY_LOCK, "the Redis recovery lock", wait=wait_for_lock):
        return None
    try:
        tries = reconnect(settings, client, max_wait_seconds)
        planned = plan(settings, client, scope)
        resynced = resync(settings, client, planned)
        out = close(settings, planned, resynced, verify(settings, client, planned))
        return {**out, "reconnect_tries": tries}
    finally:
        control.release(locks.RECOVERY_LOCK)
