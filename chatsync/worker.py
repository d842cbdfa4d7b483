"""``chatsync worker``: room events from the Redis Stream to the chat tables and the cache.

One batch at a time: read (own pending entries first, then entries idle too long at a dead
consumer, then new ones), validate (bad entries → dead letters, with the reason), reconcile the
named keys from the room tables with the consistency engine (scope ``keys``: detect + audited
repair), record the sync log, refresh the cache of the touched rooms, and only then XACK.
A crash anywhere before the XACK leaves the entries pending; they are delivered again and,
since the worker reconciles from the truth, applying them twice gives the same result.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync import alerts, cache, redis_recovery, runs
from chatsync.config import Settings
from chatsync.db import connection, is_transient, sql_file, with_retry
from chatsync.diff import Scope, detect
from chatsync.errors import ValidationError
from chatsync.events import Event, parse, raw_fields
from chatsync.mapping import load_mapping
from chatsync.repair import repair

log = logging.getLogger("chatsync.worker")
GROUP = "chatsync"
PAUSE_ENV = "CHATSYNC_FAULT_PAUSE_BEFORE_ACK_MS"  # fault injection (tests): sleep between commit and XACK


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
    rooms: set[int] = field(default_factory=set)


def stream_backlog(client, stream: str) -> dict:
    """The stream's length, the group's lag (entries not yet delivered) and its pending entries
    (delivered, not acknowledged); a stream that does not exist yet has an empty backlog."""
    if not client.exists(stream):
        return {"length": 0, "lag": None, "pending": 0}
    info = next((g for g in client.xinfo_groups(stream) if cache.text(g["name"]) == GROUP), {})
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
        self.pause_before_ack = int(os.environ.get(PAUSE_ENV, "0") or 0) / 1000
        self.stats = WorkerStats()
        self.stopping = threading.Event()
        self.error_rate = alerts.ErrorRate(settings.error_rate)
        self._own_pending = True  # after a start or a failure, re-read what we were given before
        self.cache_behind = False  # keys went to the outbox: resync them once Redis answers
        self.redis_failures = 0
        self._ensure_group()

    # -- stream ---------------------------------------------------------------------------------
    def _ensure_group(self) -> None:
        import redis

        def create():
            try:
                self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        with_retry(create, self.settings, f"create consumer group {GROUP} on {self.stream}")

    def _read(self, block: bool) -> list[tuple[str, dict]]:
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
    def process(self, entries: list[tuple[str, dict]]) -> BatchResult:
        """Validate, reconcile, record, refresh the cache, acknowledge."""
        result = BatchResult(entries=len(entries))
        events: list[Event] = []
        seen: set[str] = set()
        for stream_id, fields in entries:
            try:
                event = parse(stream_id, fields)
            except ValidationError as exc:
                self._dead_letter(result, stream_id, fields, str(exc))
                continue
            if event.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event.event_id)
            events.append(event)
        events = self._drop_unknown_rooms(events, result)
        if events:
            result.run_id = with_retry(lambda: self._reconcile(events), self.settings,
                                       f"worker {self.name}: reconcile {len(events)} events")
        with_retry(lambda: self._record(events, result), self.settings, f"worker {self.name}: sync log")
        if self.after_commit:
            self.after_commit()
        if self.pause_before_ack:
            time.sleep(self.pause_before_ack)
        result.rooms = {e.room_id for e in events}
        if events:
            rooms = {e.room_id for e in events if not e.is_participant}
            keys = {(e.room_id, e.user_id) for e in events if e.is_participant}
            # Redis unreachable: the local cache and the outbox take the keys (redis_recovery)
            if redis_recovery.update_cache(self.settings, self.client, rooms, keys,
                                           source=f"worker:{self.name}") == "queued":
                self.cache_behind = True
        ids = [stream_id for stream_id, _ in entries]
        with_retry(lambda: self.client.xack(self.stream, GROUP, *ids), self.settings, f"worker {self.name}: ack")
        return result

    def _dead_letter(self, result: BatchResult, stream_id: str, fields: dict, reason: str) -> None:
        raw = raw_fields(fields)
        result.dead_letters.append({"stream_id": stream_id, "event_id": raw.get("event_id"),
                                    "type": raw.get("type"), "reason": reason, "raw": raw})
        log.warning(alerts.structured("dead_letter", worker=self.name, stream_id=stream_id,
                                      event_id=raw.get("event_id"), type=raw.get("type"), reason=reason))

    def _drop_unknown_rooms(self, events: list[Event], result: BatchResult) -> list[Event]:
        if not events:
            return events
        rooms = load_mapping(self.settings.mapping_path)["room_rooms"]
        query = sql_file(self.settings, "events_missing_rooms", rooms=rooms.ident, room_id=rooms.col("id"))

        def missing() -> set[int]:
            with connection(self.settings) as conn:
                return {r[0] for r in conn.execute(query, {"rooms": sorted({e.room_id for e in events})})}
        gone = with_retry(missing, self.settings, f"worker {self.name}: room check")
        kept = []
        for e in events:
            if e.room_id in gone:
                self._dead_letter(result, e.stream_id, {"event_id": e.event_id, "type": e.type,
                                                        "room_id": e.room_id, "user_id": e.user_id,
                                                        "occurred_at": e.occurred_at.isoformat()},
                                  f"room {e.room_id} does not exist on the room side")
            else:
                kept.append(e)
        return kept

    def _reconcile(self, events: list[Event]) -> int:
        scope = Scope("keys", rooms=tuple(sorted({e.room_id for e in events if not e.is_participant})),
                      participants=tuple(sorted({(e.room_id, e.user_id) for e in events if e.is_participant})))
        found = detect(self.settings, scope, triggered_by=f"worker:{self.name}")
        if found.rows_to_change:
            # events name their keys: no blind-repair threshold here (that is for full passes)
            repair(self.settings, found.run_id)
        with connection(self.settings) as conn:
            runs.update(conn, self.settings.ops_schema, found.run_id,
                        status="repaired" if found.rows_to_change else "consistent",
                        finished_at=datetime.now().astimezone())
        return found.run_id

    def _record(self, events: list[Event], result: BatchResult) -> None:
        ops = sql.Identifier(self.settings.ops_schema)
        with connection(self.settings) as conn:
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
                    "raws": [Jsonb(x["raw"]) for x in d], "worker": self.name})

    # -- the loop -------------------------------------------------------------------------------
    def step(self, block: bool = True) -> int:
        """Read and process one batch; returns how many entries it handled (0: nothing to do)."""
        try:
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
            result = self.process(entries)
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
                handled = self.step(block=not until_idle)
            except Exception as exc:  # noqa: BLE001 - logged and alerted in step(); keep serving
                pause = failure_pause
                if redis_recovery.redis_down(exc):  # reconnect with exponential backoff and jitter
                    if not self.redis_failures:
                        redis_recovery.note_outage(self.settings, f"{type(exc).__name__}: {exc}")
                    self.redis_failures += 1
                    self.cache_behind = True
                    pause = random.uniform(0.5, 1.0) * min(self.settings.redis_reconnect_max_seconds,
                                                           failure_pause * 2 ** (self.redis_failures - 1))
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


def drain(settings: Settings, name: str, max_seconds: float = 240.0, batch_size: int = 2000) -> dict:
    """Process the backlog until it is empty or max_seconds pass (the chat_events_drain DAG)."""
    worker = Worker(settings, name, batch_size=batch_size, claim_idle_ms=60_000)
    try:
        stats = worker.run(until_idle=True, max_seconds=max_seconds)
        return {**stats.to_dict(), "backlog": worker.backlog()}
    finally:
        worker.close()

