"""Redis losing the event stream: noticed by the worker, healed from the room side.

When Redis loses its data (a restart without persistence, a failover to a replica that was
behind), the entries no worker had committed are gone, and with them the
changes they named. The worker records in Postgres the newest entry it committed, in the same
transaction as the sync log, and the Redis server's run_id (``<ops>.event_streams``); ``check``
compares them with what Redis holds: at start, after every Redis error, when the group is
missing, and every ``stream_check_seconds``. A loss is one of:

- Redis restarted or failed over (its run_id changed): what it held in memory since its last
  save, or what the new primary had not received, may be gone;
- the stream or its consumer group is gone although entries were committed;
- the stream's last generated id is behind the newest committed entry (older data came back);
- Redis was unreachable for longer than the retries: events the application published
  meanwhile may have failed to reach the stream.

A group set back on purpose (``XGROUP SETID``, a replay) is no loss: its entries are still there.
Not seen here: entries the application trims (``MAXLEN``) or deletes before a worker reads them
(Redis keeps no reliable count of those), and events the application failed to publish while
the worker still reached Redis; the next full check finds what they named.
A loss is recorded before anything else (a pending heal on the stream's row; for the first three,
also an outage marked ``data_lost``, so the cache recovery rebuilds every room), so a worker
killed while healing leaves the heal to the next one. ``heal`` is one consistency pass of scope
``full`` with repair (the only scope that also sees what the room side deleted, such as a lost
``participant.removed``; a full detect costs about a second at 1M participants), then the Redis
recovery (the cache resynced and verified, the outage closed).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.db import locks
from chatsync.db.connection import connection
from chatsync.db.retry import with_retry
from chatsync.db.statements import ops_ident
from chatsync.events import cache, redis_recovery

log = logging.getLogger("chatsync.stream_recovery")
J = sql.SQL


StreamId = tuple[int, int]


def parse_id(value) -> StreamId:
    ms, _, seq = cache.text(value).partition("-")
    return int(ms), int(seq or 0)


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(frozen=True)
class StreamPosition:
    last_generated: StreamId  # the newest id the stream ever gave an entry
    last_delivered: StreamId | None  # the consumer group's position; None: no such group


def stream_position(client, stream: str, group: str) -> StreamPosition | None:
    """Where the stream and the consumer group stand; None when the stream does not exist."""
    import redis

    try:
        info = client.xinfo_stream(stream)
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    mine = next((g for g in groups if cache.text(g["name"]) == group), None)
    return StreamPosition(parse_id(info["last-generated-id"]), parse_id(mine["last-delivered-id"]) if mine else None)


def create_group(settings: Settings, client, stream: str, group: str) -> None:
    """The consumer group from the stream's first entry (created with the stream if needed)."""
    import redis

    def create():
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    with_retry(create, settings, f"create consumer group {group} on {stream}")


@dataclass
class StreamState:
    epoch: int
    heal_pending: bool
    loss: str | None = None  # a loss this check found


def server_run_id(client) -> str | None:
    """The Redis server's run_id (new at every start); None where INFO is not allowed (an ACL
    user without it: then only the stream's own state tells a loss)."""
    import redis

    try:
        return cache.text(client.info("server")["run_id"])
    except redis.ResponseError as exc:
        log.debug("no INFO for the Redis run_id: %s", exc)
        return None


def _row(conn, settings: Settings, stream: str, group: str):
    ops = ops_ident(settings)
    conn.execute(J("INSERT INTO {}.event_streams (stream, consumer_group) VALUES (%s, %s) "
                   "ON CONFLICT DO NOTHING").format(ops), (stream, group))
    return conn.execute(J("SELECT epoch, committed_ms, committed_seq, redis_run_id, heal_pending_since "
                          "FROM {}.event_streams WHERE stream = %s AND consumer_group = %s "
                          "FOR UPDATE").format(ops), (stream, group)).fetchone()


def _data_lost(stream: str, group: str, committed: StreamId, position: StreamPosition | None,
               run_id: str | None, known_run_id: str | None) -> str | None:
    """Why Redis no longer holds what the record says it held, or None."""
    if known_run_id and run_id and run_id != known_run_id:
        return (f"Redis restarted or failed over (server run_id {known_run_id[:12]} is now {run_id[:12]}): "
                "what it held since its last save, or what the new primary had not received, is lost")
    if committed == (0, 0):
        return None  # nothing committed yet: nothing to lose
    if position is None or position.last_delivered is None:
        return (f"the stream {stream} or its consumer group {group} is gone although entries up to "
                f"{format_id(committed)} were committed: Redis lost its data")
    if position.last_generated < committed:
        return (f"the stream {stream} went back from {format_id(committed)} to {format_id(position.last_generated)}: "
                "Redis came back with older data")
    return None


def check(settings: Settings, client, group: str, *, unreachable: str | None = None) -> StreamState:
    """Compare the stream with the durable record, record a loss, and (re)create a missing group.
    unreachable: why Redis was unreachable (an outage this process saw), itself a possible loss:
    the application's events of that time may not have reached the stream. A group set back on
    purpose (XGROUP SETID, a replay) is no loss: its entries are still there."""
    stream = settings.events_stream
    ops = ops_ident(settings)
    with connection(settings) as conn:
        epoch, c_ms, c_seq, known_run_id, pending = _row(conn, settings, stream, group)
        committed = (c_ms, c_seq)
        run_id = server_run_id(client)
        position = stream_position(client, stream, group)
        loss = data_lost = _data_lost(stream, group, committed, position, run_id, known_run_id)
        if position is None or position.last_delivered is None:
            create_group(settings, client, stream, group)
            position = stream_position(client, stream, group)
        if loss is None and unreachable:
            loss = f"{unreachable}: events published meanwhile may not have reached {stream}"
        where: dict[str, object] = {"stream": stream, "group": group, "run_id": run_id, "reason": loss}
        if data_lost:
            # the record starts again from what Redis holds now; a batch read before stays in the old epoch
            where["ms"], where["seq"] = position.last_delivered if position and position.last_delivered else (0, 0)
            conn.execute(J("UPDATE {}.event_streams SET epoch = epoch + 1, committed_ms = %(ms)s, "
                           "committed_seq = %(seq)s WHERE stream = %(stream)s AND consumer_group = %(group)s")
                         .format(ops), where)
            epoch += 1
        conn.execute(J("UPDATE {}.event_streams SET checked_at = clock_timestamp(), "
                       "redis_run_id = coalesce(%(run_id)s::text, redis_run_id), "
                       "losses = losses + (%(reason)s::text IS NOT NULL)::int, "
                       "heal_reason = CASE WHEN %(reason)s::text IS NULL THEN heal_reason "
                       "ELSE coalesce(heal_reason, %(reason)s::text) END, "
                       "heal_pending_since = CASE WHEN %(reason)s::text IS NULL THEN heal_pending_since "
                       "ELSE coalesce(heal_pending_since, clock_timestamp()) END "
                       "WHERE stream = %(stream)s AND consumer_group = %(group)s").format(ops), where)
        pending = pending is not None or loss is not None
    if data_lost:
        redis_recovery.note_outage(settings, data_lost, data_lost=data_lost)
    if loss:
        log.error(alerts.structured("stream_lost", stream=stream, group=group, reason=loss))
        alerts.notify("stream_lost", f"{loss}; healing: a full consistency pass repairs what the lost events "
                      "named, then the cache is resynced and verified", stream=stream, event="firing")
    return StreamState(epoch, pending, loss)


def record_committed(conn, settings: Settings, group: str, epoch: int, newest: StreamId,
                     occurred_at: datetime | None) -> None:
    """The newest entry a batch committed and its newest event time, in the batch's own
    transaction (no move if the epoch changed: the batch was read before a loss)."""
    conn.execute(J("UPDATE {}.event_streams SET "
                   "committed_ms = CASE WHEN (committed_ms, committed_seq) < (%(ms)s, %(seq)s) THEN %(ms)s "
                   "ELSE committed_ms END, "
                   "committed_seq = CASE WHEN (committed_ms, committed_seq) < (%(ms)s, %(seq)s) THEN %(seq)s "
                   "ELSE committed_seq END, "
                   "committed_occurred_at = greatest(committed_occurred_at, "
                   "least(%(occurred)s::timestamptz, clock_timestamp())) "  # a client clock ahead counts as now
                   "WHERE stream = %(stream)s AND consumer_group = %(group)s AND epoch = %(epoch)s")
                 .format(ops_ident(settings)),
                 {"ms": newest[0], "seq": newest[1], "occurred": occurred_at, "stream": settings.events_stream,
                  "group": group, "epoch": epoch})


def heal(settings: Settings, client, group: str, worker: str) -> dict | None:
    """The pending heal of the stream, if any and if no other worker is at it: a full pass with
    repair, then the cache rebuilt and verified. None when there was nothing to do here."""
    from chatsync.consistency.engine import check as consistency_pass
    from chatsync.consistency.scope import Scope

    stream, ops = settings.events_stream, ops_ident(settings)
    control = locks.control(settings)
    if not control.take(locks.STREAM_HEAL_LOCK, "the stream heal lock", wait=False):
        return None  # another worker heals
    try:
        with connection(settings) as conn:
            row = conn.execute(J("SELECT heal_pending_since, heal_reason, coalesce(committed_occurred_at, "
                                 "heal_pending_since) - make_interval(secs => %s) FROM {}.event_streams "
                                 "WHERE stream = %s AND consumer_group = %s").format(ops),
                               (settings.incremental_overlap_seconds, stream, group)).fetchone()
        if row is None or row[0] is None:
            return None
        since, reason, named_since = row
        log.warning("stream %s: healing after a loss (%s)", stream, reason)
        sys.audit("chatsync.step", "stream:before_heal")
        # what changed since the last committed event (minus the overlap) is what the lost events
        # named: repaired without the blind-repair limit, as the worker repairs what events name
        summary = consistency_pass(settings, Scope("full"), do_repair=True, do_validate=False,
                                   triggered_by=f"worker:{worker}:stream-heal", unlimited_since=named_since)
        if summary.decision == "major":
            alerts.notify("major_inconsistency", f"run {summary.run_id}: after a loss of the event stream, the full "
                          f"pass found more than a blind repair may change ({summary.message}); run "
                          "chat_major_inconsistency with this run", run_id=summary.run_id, event="firing")
        cache_out = redis_recovery.recover(settings, client, scope="auto", max_wait_seconds=60)
        with connection(settings) as conn:
            conn.execute(J("UPDATE {}.event_streams SET heal_pending_since = NULL, heal_reason = NULL, "
                           "healed_at = clock_timestamp(), heal_run_id = %s "
                           "WHERE stream = %s AND consumer_group = %s AND heal_pending_since = %s").format(ops),
                         (summary.run_id, stream, group, since))
        out = {"reason": reason, "detected_at": since.isoformat(), "run_id": summary.run_id,
               "counts": {k: v for k, v in summary.counts.items() if v}, "repaired": summary.repaired,
               "remaining": summary.remaining, "decision": summary.decision,
               "cache": None if cache_out is None else {k: cache_out[k] for k in ("scope", "outbox_cleared")},
               "seconds": round((datetime.now(since.tzinfo) - since).total_seconds(), 3)}
        log.warning(alerts.structured("stream_healed", stream=stream, **out))
        alerts.resolve("stream_lost", f"stream {stream} healed: run {summary.run_id} repaired {summary.repaired} "
                       f"rows, {summary.remaining} differences left; cache resynced and verified", stream=stream)
        return out
    finally:
        control.release(locks.STREAM_HEAL_LOCK)
