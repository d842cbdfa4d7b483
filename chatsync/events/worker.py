"""``chatsync worker``: room events from the Redis Stream to the chat tables and the cache.

One batch at a time: read (own pending entries first, then entries idle too long at a dead
consumer, then new ones), validate (bad entries → dead letters, with the reason), reconcile the
named keys from the room tables with the consistency engine (scope ``keys``: detect + audited
repair), record the sync log, refresh the cache of the touched rooms, and only then XACK.
A crash anywhere before the XACK leaves the entries pending; they are delivered again and,
since the worker reconciles from the truth, applying them twice gives the same result.

No entry can block the stream: a batch that fails because of an entry's data is applied in halves
until the entry that fails alone is found; that entry is dead-lettered with the error, the rest
applied, recorded and acknowledged. Other failures (Postgres or Redis away, a broken setup) leave
the batch pending; they are alerted and retried. Between batches the worker watches the stream itself
(chatsync.events.stream_recovery): a Redis that lost its data is noticed and healed without a restart.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import redis
from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.consistency.detect import detect
from chatsync.consistency.repair import repair
from chatsync.consistency.scope import Scope
from chatsync.db import runs
from chatsync.db.connection import connection, is_transient
from chatsync.db.retry import backoff_seconds, with_retry
from chatsync.db.statements import bytea_array_text, sql_file
from chatsync.errors import ChatsyncError, ValidationError
from chatsync.events import cache, redis_recovery, stream_recovery
from chatsync.events.envelope import Event, display_fields, parse, raw_entry
from chatsync.model.keys import Key
from chatsync.model.keys import keys as key_types
from chatsync.model.mapping import load_mapping
from chatsync.roomside import refresh as room_copy

log = logging.getLogger("chatsync.worker")


GROUP = "chatsync"
LIVE_WORKER_IDLE_MS = 30_000  # a consumer that asked for entries this recently is a running worker


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    applied: int = 0
    noop: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    claimed: int = 0
    failed_batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class BatchResult:
    entries: int = 0
    applied: int = 0
    noop: int = 0
    duplicates: int = 0
    dead_letters: list[dict] = field(default_factory=list)
    run_id: int | None = None
    rooms: set[Key] = field(default_factory=set)

    def merged(self, other: BatchResult) -> BatchResult:
        return BatchResult(self.entries + other.entries, self.applied + other.applied, self.noop + other.noop,
                           self.duplicates + other.duplicates, self.dead_letters + other.dead_letters,
                           other.run_id or self.run_id, self.rooms | other.rooms)


class StreamGone(ChatsyncError):
    """The stream or the consumer group is missing (NOGROUP): Redis may have lost its data."""


# Failures of one entry's data (a value a chat column, a constraint or a trigger refuses, SQLSTATE
# classes 22, 23, 27, 44, P0): that entry is isolated and dead-lettered. Any other failure that is
# not transient (a missing table or column, a permission, a full disk, Redis out of memory) is the
# deployment's: the batch stays pending and is alerted, so a broken setup never turns the stream
# into dead letters.
_ENTRY_SQLSTATE_CLASSES = ("22", "23", "27", "44", "P0")
_REDIS_SETUP_ERRORS = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS", "NOAUTH", "NOPERM",
                       "MISCONF", "NOGROUP")


def entry_specific(exc: BaseException) -> bool:
    """Whether exc comes from the entries being applied rather than from the deployment."""
    import psycopg
    import redis

    if isinstance(exc, ValidationError):
        return True
    if is_transient(exc) or isinstance(exc, ChatsyncError):
        return False
    if isinstance(exc, psycopg.Error):
        return (exc.sqlstate or "")[:2] in _ENTRY_SQLSTATE_CLASSES
    if isinstance(exc, redis.RedisError):
        return isinstance(exc, redis.ResponseError) and not str(exc).startswith(_REDIS_SETUP_ERRORS)
    return True  # an entry Python code could not handle


def stream_backlog(client, stream: str) -> dict:
    """The stream's length, the group's lag (entries not yet delivered) and its pending entries
    (delivered, not acknowledged); a stream that does not exist yet has an empty backlog."""
    if not client.exists(stream):
        return {"length": 0, "lag": None, "pending": 0}
    info: dict = next((g for g in client.xinfo_groups(stream) if cache.text(g["name"]) == GROUP), {})
    return {"length": client.xlen(stream), "lag": info.get("lag"), "pending": info.get("pending", 0)}


class Worker:
    def __init__(self, settings: Settings, name: str | None = None, *, batch_size: int = 500,
                 block_ms: int = 1000, claim_idle_ms: int = 30_000, client=None,
                 after_commit: Callable[[], None] | None = None):
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.client = client or cache.client_for(settings)
        self.stream = settings.events_stream
        self.after_commit = after_commit
        self.stats = WorkerStats()
        self.stopping = threading.Event()
        self.error_rate = alerts.ErrorRate(settings.error_rate)
        self._own_pending = True  # after a start or a failure, re-read what we were given before
        self.cache_behind = False  # keys went to the outbox: resync them once Redis answers
        self.redis_failures = 0
        self.unreachable_since: datetime | None = None  # Redis stayed away longer than the retries
        self.epoch = 0  # of the stream's durable record (stream_recovery)
        self.next_watch = 0.0  # monotonic time of the next stream check (0: at once)
        self.heal_failures = 0
        with connection(settings) as conn:  # a wrong mapping fails the start, not every batch
            room_copy.check_mapping(settings, conn)

    # -- stream ---------------------------------------------------------------------------------
    def _read(self, block: bool) -> list[tuple[str, dict]]:
        import redis

        try:
            return self._read_group(block)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise StreamGone(str(exc)) from exc
            raise

    def _read_group(self, block: bool) -> list[tuple[str, dict]]:
        if self._own_pending:
            reply = self.client.xreadgroup(GROUP, self.name, {self.stream: "0"}, count=self.batch_size)
            entries = reply[0][1] if reply else []
            trimmed = [i for i, f in entries if not f]  # deleted from the stream meanwhile
            if trimmed:
                self.client.xack(self.stream, GROUP, *trimmed)
            live = [(cache.text(i), f) for i, f in entries if f]
            if live:
                return live
            if not entries:
                self._own_pending = False
        claimed = self.client.xautoclaim(self.stream, GROUP, self.name, min_idle_time=self.claim_idle_ms,
                                         start_id="0-0", count=self.batch_size)
        entries = [(cache.text(i), f) for i, f in claimed[1] if f]
        if entries:
            self.stats.claimed += len(entries)
            log.info(alerts.structured("claimed", worker=self.name, entries=len(entries)))
            return entries
        reply = self.client.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=self.batch_size,
                                       block=self.block_ms if block else None)
        return [(cache.text(i), f) for i, f in reply[0][1]] if reply else []

    def backlog(self) -> dict:
        return stream_backlog(self.client, self.stream)

    # -- one batch ------------------------------------------------------------------------------
    def process_isolating(self, entries: list[tuple[str, dict]]) -> BatchResult:
        """process(), and when it fails because of an entry (entry_specific), the two halves on
        their own, down to the one entry that fails alone: dead-lettered with the error."""
        try:
            return self.process(entries)
        except Exception as exc:  # noqa: BLE001 - any other failure is raised: the batch stays pending
            if not entry_specific(exc):
                raise
            if len(entries) == 1:
                return self._give_up(entries[0], exc)
            half = len(entries) // 2
            log.warning("worker %s: a batch of %d entries failed (%s: %s): applying it in halves to find "
                        "the entry", self.name, len(entries), type(exc).__name__, exc)
            return self.process_isolating(entries[:half]).merged(self.process_isolating(entries[half:]))

    def _give_up(self, entry: tuple[str, dict], exc: BaseException) -> BatchResult:
        """The one entry that fails on its own: a dead letter naming the error, recorded, acked."""
        stream_id, fields = entry
        result = BatchResult(entries=1)
        self._dead_letter(result, stream_id, fields, f"cannot be applied: {type(exc).__name__}: {exc}"[:2000])
        with_retry(lambda: self._record([], result, [stream_id]), self.settings, f"worker {self.name}: dead letter")
        with_retry(lambda: self.client.xack(self.stream, GROUP, stream_id), self.settings, f"worker {self.name}: ack")
        return result

    def process(self, entries: list[tuple[str, dict]]) -> BatchResult:
        """Validate, reconcile, record, refresh the cache, acknowledge."""
        result = BatchResult(entries=len(entries))
        events: list[Event] = []
        seen: set[str] = set()
        as_read = dict(entries)  # a dead letter keeps the entry as read
        mapped = key_types(self.settings)  # ids are parsed as the mapped key columns' type
        for stream_id, fields in entries:
            try:
                event = parse(stream_id, fields, mapped)
            except ValidationError as exc:
                self._dead_letter(result, stream_id, fields, str(exc))
                continue
            if event.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event.event_id)
            events.append(event)
        events = self._drop_unknown_rooms(events, result, as_read)
        if events:
            result.run_id = with_retry(lambda: self._reconcile(events), self.settings,
                                       f"worker {self.name}: reconcile {len(events)} events")
        ids = [stream_id for stream_id, _ in entries]
        with_retry(lambda: self._record(events, result, ids), self.settings, f"worker {self.name}: sync log")
        if self.after_commit:
            self.after_commit()
        sys.audit("chatsync.step", "worker:before_ack")
        result.rooms = {e.room_id for e in events}
        if events:
            rooms = {e.room_id for e in events if not e.is_participant}
            keys = {(e.room_id, e.user_id) for e in events if e.is_participant}
            # Redis unreachable: the local cache and the outbox take the keys (redis_recovery)
            if redis_recovery.update_cache(self.settings, self.client, rooms, keys,
                                           source=f"worker:{self.name}") == "queued":
                self.cache_behind = True
        with_retry(lambda: self.client.xack(self.stream, GROUP, *ids), self.settings, f"worker {self.name}: ack")
        return result

    def _dead_letter(self, result: BatchResult, stream_id: str, fields: dict, reason: str) -> None:
        raw = display_fields(fields)  # readable (jsonb); raw_entry keeps the exact bytes
        result.dead_letters.append({"stream_id": stream_id, "event_id": raw.get("event_id"),
                                    "type": raw.get("type"), "reason": reason, "raw": raw,
                                    "raw_entry": raw_entry(fields)})
        log.warning(alerts.structured("dead_letter", worker=self.name, stream_id=stream_id,
                                      event_id=raw.get("event_id"), type=raw.get("type"), reason=reason))

    def _drop_unknown_rooms(self, events: list[Event], result: BatchResult, as_read: dict) -> list[Event]:
        if not events:
            return events
        rooms = load_mapping(self.settings.mapping_path)["room_rooms"]
        query = sql_file(self.settings, "events_missing_rooms", rooms=rooms.ident, room_id=rooms.col("id"))

        def missing() -> set[int]:
            with connection(self.settings, side="room") as conn:
                return {r[0] for r in conn.execute(query, {"rooms": sorted({e.room_id for e in events})})}
        gone = with_retry(missing, self.settings, f"worker {self.name}: room check")
        kept = []
        for e in events:
            if e.room_id in gone:
                self._dead_letter(result, e.stream_id, as_read[e.stream_id],
                                  f"room {e.room_id} does not exist on the room side")
            else:
                kept.append(e)
        return kept

    def _reconcile(self, events: list[Event]) -> int:
        scope = Scope("keys", rooms=tuple(sorted({e.room_id for e in events if not e.is_participant})),
                      participants=tuple(sorted({(e.room_id, e.user_id) for e in events
                                                 if e.is_participant and e.user_id is not None})))
        found = detect(self.settings, scope, triggered_by=f"worker:{self.name}")
        try:
            if found.rows_to_change:
                # events name their keys: no blind-repair threshold here (that is for full passes)
                repair(self.settings, found.run_id)
            with connection(self.settings) as conn:
                runs.update(conn, self.settings.ops_schema, found.run_id,
                            status="repaired" if found.rows_to_change else "consistent",
                            finished_at=datetime.now().astimezone())
        except Exception as exc:
            runs.fail_open(self.settings, found.run_id, exc)  # the retry (or the halves) make runs of their own
            raise
        return found.run_id

    def _record(self, events: list[Event], result: BatchResult, stream_ids: list[str]) -> None:
        """The sync log and the dead letters of a batch, and the newest entry it committed (the
        stream's durable watermark), in one transaction."""
        ops = sql.Identifier(self.settings.ops_schema)
        with connection(self.settings) as conn:
            if stream_ids:
                stream_recovery.record_committed(conn, self.settings, GROUP, self.epoch,
                                                 max(map(stream_recovery.parse_id, stream_ids)),
                                                 max((e.occurred_at for e in events), default=None))
            if events:
                counts = dict(conn.execute(sql_file(self.settings, "events_record_sync_log", ops=ops), {
                    "event_ids": [e.event_id for e in events], "stream_ids": [e.stream_id for e in events],
                    "types": [e.type for e in events], "room_ids": [e.room_id for e in events],
                    "user_ids": [e.user_id for e in events], "occurred": [e.occurred_at for e in events],
                    "run_id": result.run_id, "worker": self.name}).fetchall())
                result.applied, result.noop = counts.get("applied", 0), counts.get("noop", 0)
            if result.dead_letters:
                d = result.dead_letters
                conn.execute(sql_file(self.settings, "events_record_dead_letters", ops=ops), {
                    "stream_ids": [x["stream_id"] for x in d], "event_ids": [x["event_id"] for x in d],
                    "types": [x["type"] for x in d], "reasons": [x["reason"] for x in d],
                    "raws": [Jsonb(x["raw"]) for x in d],
                    "raw_entries": [bytea_array_text(x["raw_entry"]) for x in d], "worker": self.name})

    # -- the loop -------------------------------------------------------------------------------
    def step(self, block: bool = True) -> int:
        """Read and process one batch; returns how many entries it handled (0: nothing to do)."""
        try:
            entries = with_retry(lambda: self._read(block), self.settings, f"worker {self.name}: read")
        except StreamGone as exc:
            log.error("worker %s: %s: checking the stream", self.name, exc)
            self.watch()  # records the loss, recreates the group, heals
            entries = with_retry(lambda: self._read(block), self.settings, f"worker {self.name}: read")
        except Exception as exc:
            alerts.notify("sync_stream_unreadable", f"worker {self.name} cannot read {self.stream} after "
                          f"{self.settings.retry_attempts} attempts: {type(exc).__name__}: {exc}",
                          worker=self.name, stream=self.stream, transient=is_transient(exc))
            raise
        if not entries:
            return 0
        t0 = time.perf_counter()
        try:
            result = self.process_isolating(entries)
        except Exception as exc:
            self.stats.failed_batches += 1
            self._own_pending = True  # the batch stays pending: ours to retry first
            self.error_rate.record(failed=len(entries), worker=self.name)
            alerts.notify("sync_batch_failed", f"worker {self.name}: a batch of {len(entries)} events "
                          f"failed and stays pending: {type(exc).__name__}: {exc}",
                          worker=self.name, entries=len(entries), transient=is_transient(exc))
            raise
        s = self.stats
        s.batches += 1
        s.events += result.entries
        s.applied += result.applied
        s.noop += result.noop
        s.duplicates += result.duplicates
        s.dead_letters += len(result.dead_letters)
        self.error_rate.record(ok=result.applied + result.noop, failed=len(result.dead_letters),
                               worker=self.name)
        log.info(alerts.structured("batch", worker=self.name, entries=result.entries, applied=result.applied,
                                   noop=result.noop, duplicates=result.duplicates,
                                   dead_letters=len(result.dead_letters), run_id=result.run_id,
                                   seconds=round(time.perf_counter() - t0, 3)))
        return result.entries

    def watch(self) -> dict | None:
        """The stream against its durable record (a loss recorded, a missing group recreated),
        runs left open by dead processes closed, then a pending heal or cache recovery done.
        Redis errors are raised (the loop backs off); a heal that fails is retried next time
        without holding up the events. Returns what a heal did, if one ran."""
        unreachable = None
        if self.unreachable_since is not None:
            unreachable = (f"Redis was unreachable from {self.unreachable_since.isoformat(timespec='seconds')} "
                           f"for {(datetime.now().astimezone() - self.unreachable_since).total_seconds():.0f}s")
        state = stream_recovery.check(self.settings, self.client, GROUP, unreachable=unreachable)
        self.unreachable_since, self.epoch = None, state.epoch
        self.next_watch = time.monotonic() + self.settings.stream_check_seconds
        with connection(self.settings) as conn:
            runs.close_abandoned(conn, self.settings)
        if not state.heal_pending:
            if self.cache_behind:
                self._recover_cache()
            return None
        try:
            healed = stream_recovery.heal(self.settings, self.client, GROUP, self.name)
        except Exception as exc:  # noqa: BLE001 - the heal stays pending; events go on meanwhile
            self.heal_failures += 1
            log.exception("worker %s: healing the stream failed (try %d); retrying in %.0fs", self.name,
                          self.heal_failures, self.settings.stream_check_seconds)
            if self.heal_failures == 1:
                alerts.notify("stream_heal_failed", f"worker {self.name}: healing {self.stream} after a loss failed: "
                              f"{type(exc).__name__}: {exc}; retried every {self.settings.stream_check_seconds}s",
                              worker=self.name, stream=self.stream)
            return None
        self.heal_failures = 0
        if healed is not None:
            self.cache_behind, self.redis_failures = False, 0
        return healed

    def run(self, *, until_idle: bool = False, max_seconds: float | None = None,
            failure_pause: float = 1.0) -> WorkerStats:
        """Process batches until stop() (SIGTERM), until the stream is drained (until_idle), or
        until max_seconds. A failed batch is logged, alerted, and retried after a pause."""
        t0 = time.monotonic()
        log.info(alerts.structured("worker_start", worker=self.name, stream=self.stream, group=GROUP))
        while not self.stopping.is_set():
            if max_seconds is not None and time.monotonic() - t0 >= max_seconds:
                break
            try:
                if time.monotonic() >= self.next_watch:
                    self.watch()
                handled = self.step(block=not until_idle)
            except Exception as exc:  # noqa: BLE001 - logged and alerted in step(); keep serving
                pause = failure_pause
                self.next_watch = 0.0  # after any failure, look at the stream first (Redis back empty?)
                if redis_recovery.redis_down(exc):  # reconnect with exponential backoff and jitter
                    if not self.redis_failures:
                        redis_recovery.note_outage(self.settings, f"{type(exc).__name__}: {exc}")
                        self.unreachable_since = datetime.now().astimezone()
                    self.redis_failures += 1
                    self.cache_behind = True
                    pause = backoff_seconds(self.redis_failures, failure_pause,
                                            self.settings.redis_reconnect_max_seconds)
                log.exception("worker %s: batch failed; retrying in %.1fs", self.name, pause)
                self.stopping.wait(pause)
                continue
            if self.cache_behind:
                self._recover_cache()
            if handled == 0 and until_idle:
                break
        self.stats.seconds = time.monotonic() - t0
        log.info(alerts.structured("worker_stop", worker=self.name, **self.stats.to_dict()))
        return self.stats

    def _recover_cache(self) -> None:
        """Redis answers again after keys went to the outbox: resync them (unless another
        recovery, e.g. chat_redis_recovery, is at it right now: it does the same)."""
        try:
            out = redis_recovery.recover(self.settings, self.client, wait_for_lock=False, max_wait_seconds=5)
        except Exception:  # noqa: BLE001 - retried after the next batch; the outbox keeps the keys
            log.exception("worker %s: cache recovery failed; will retry", self.name)
            return
        self.cache_behind, self.redis_failures = False, 0
        if out:
            log.info("worker %s: cache recovered after a Redis outage: %s", self.name,
                     {k: out[k] for k in ("outage_id", "scope", "outbox_cleared")})

    def stop(self, *_) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.client.close()


def live_workers(client, stream: str, besides: str) -> list[str]:
    """The group's consumers other than ``besides`` that asked for entries within
    LIVE_WORKER_IDLE_MS: running `chatsync worker` processes."""
    if not client.exists(stream):
        return []
    try:
        consumers = client.xinfo_consumers(stream, GROUP)
    except redis.ResponseError:  # no group yet
        return []
    return sorted(name for c in consumers
                  if (name := cache.text(c["name"])) != besides and c["idle"] < LIVE_WORKER_IDLE_MS)


def drain(settings: Settings, name: str, max_seconds: float = 240.0, batch_size: int = 2000) -> dict:
    """Process the backlog until it is empty or max_seconds pass (the chat_events_drain DAG) when
    no worker runs; beside running workers it leaves the stream to them instead of holding an
    Airflow worker slot for minutes."""
    worker = Worker(settings, name, batch_size=batch_size, claim_idle_ms=60_000)
    try:
        if live := live_workers(worker.client, worker.stream, name):
            log.info("drain %s: %d worker(s) read the stream (%s): nothing to do", name, len(live), ", ".join(live))
            return {"skipped": f"workers running: {', '.join(live)}", "events": 0, "backlog": worker.backlog()}
        stats = worker.run(until_idle=True, max_seconds=max_seconds)
        return {**stats.to_dict(), "backlog": worker.backlog()}
    finally:
        worker.close()
