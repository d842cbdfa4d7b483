"""``chatsync bench --suite events``: the events and the cache, measured in one run.

On a scratch database (dropped at the end) and a private Redis key prefix (deleted at the end):
1. cache resync of every room (the simulated 1M participants by default);
2. steady load: the room-service simulator publishes ``events`` events at ``rate``/s while one
   ``chatsync worker`` process consumes; sync delay = processed_at − occurred_at, from the sync log;
3. backlog: ``events`` more are published with no worker running, then one worker drains them;
4. recovery: on a Redis server of its own, the same steady load while Redis restarts empty: the
   time from Redis back to the stream healed by the worker (the lost changes repaired, the cache
   rebuilt and verified), against the same steps run by hand one after the other.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.errors import ConfigError
from chatsync.events import cache
from chatsync_devtools.bench.consistency import RESULTS_DIR, drop_database, save, scratch_database

log = logging.getLogger("chatsync.bench")


TARGETS = {"p99_delay_seconds_max": 0.5, "drain_events_per_second_min": 5000, "resync_seconds_max": 5.0}


def _worker_process(settings: Settings, name: str, results_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CHATSYNC_DATABASE_URL": settings.require_database(),
           "CHATSYNC_REDIS_URL": settings.redis_url or "", "CHATSYNC_EVENTS_STREAM": settings.events_stream,
           "CHATSYNC_REDIS_PREFIX": settings.redis_prefix}
    # the worker logs a line per batch: to a file, a pipe nobody reads would fill and block it
    log_path = results_dir / f"worker_{name}_{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        return subprocess.Popen([sys.executable, "-m", "chatsync.cli", "worker", "--name", name, *extra],
                                env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)


def _delays(settings: Settings, worker: str) -> dict:
    from chatsync.ops.metrics import sync_delays

    with connection(settings) as conn:
        road = sync_delays(conn, settings, worker=worker)
    return {"events": road["events"], **{k: _r(road[k]) for k in ("p50_s", "p95_s", "p99_s", "max_s")},
            "processing_span_s": _r(road["span_s"])}


def _r(x):
    return None if x is None else round(float(x), 4)


def _wait_synced(settings: Settings, worker: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with connection(settings, autocommit=True) as conn:
        while True:
            n = one(conn.execute(sql.SQL("SELECT count(*) FROM {}.sync_log WHERE worker = %s").format(
                sql.Identifier(settings.ops_schema)), (worker,)))[0]
            if n >= expected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker} synced {n} of {expected} events in {timeout}s")
            time.sleep(0.2)


def run_events_bench(settings: Settings, participants: int, events: int, rate: float, seed: int = 7,
                     batch: int = 2000, results_dir: Path | None = None) -> dict:
    import redis

    from chatsync.db.migrations import migrate
    from chatsync_devtools.room_service import emit
    from chatsync_devtools.simulate import simulate

    if not settings.redis_url:
        raise ConfigError("the event benchmark needs Redis: set CHATSYNC_REDIS_URL")
    results_dir = results_dir or RESULTS_DIR
    server_url = settings.require_database()
    name = f"chatsync_bench_{os.getpid()}"
    prefix = f"chatsync_bench_{os.getpid()}:"
    url = scratch_database(server_url, name)
    s = replace(settings, database_url=url, redis_prefix=prefix, events_stream=prefix + "events")
    client = redis.Redis.from_url(settings.redis_url)
    started = time.perf_counter()
    out: dict = {"participants": None, "events": events, "rate": rate, "seed": seed, "batch": batch,
                 "scratch_database": name, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        migrate(s, reference_schema=True)
        report = simulate(s, rooms=max(participants // 50, 1), members=50, drift=0, seed=seed)
        out["participants"], out["rooms"] = report.participants, report.rooms
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            out["postgres"] = one(conn.execute("SHOW server_version"))[0]
        out["redis"] = client.info("server")["redis_version"]

        log.info("bench events: cache resync of %d participants", report.participants)
        out["resync"] = cache.resync(s).to_dict()

        log.info("bench events: %d events at %.0f/s with one worker running", events, rate)
        steady = _worker_process(s, "steady", results_dir, "--batch", "500", "--block-ms", "20")
        time.sleep(1.0)  # the worker is up and blocking on the stream
        published = emit(s, client, events, seed=seed, rate=rate)
        _wait_synced(s, "steady", events, timeout=600)
        steady.send_signal(signal.SIGTERM)
        steady.communicate(timeout=60)
        if steady.returncode != 0:
            raise RuntimeError(f"steady worker exited {steady.returncode}: see {results_dir}/worker_*.log")
        out["steady"] = {"published": published.to_dict(), **_delays(s, "steady")}

        log.info("bench events: %d events published with no worker, then drained", events)
        backlog = emit(s, client, events, seed=seed + 1, batch=500)
        t0 = time.perf_counter()
        drainer = _worker_process(s, "drain", results_dir, "--batch", str(batch), "--until-idle", "--json")
        drainer.communicate(timeout=1800)
        seconds = time.perf_counter() - t0
        if drainer.returncode != 0:
            raise RuntimeError(f"drain worker exited {drainer.returncode}: see {results_dir}/worker_*.log")
        drained = _delays(s, "drain")
        out["backlog"] = {"published": backlog.to_dict(), "events": drained["events"],
                          "seconds_incl_start": round(seconds, 3), "processing_span_s": drained["processing_span_s"],
                          "events_per_second": round(drained["events"] / seconds) if seconds else None}
        out["verify_after"] = cache.verify(s, client=client).to_dict()["total"]
        log.info("bench events: Redis restarted empty under %.0f events/s", rate)
        out["recovery"] = _recovery(s, events, rate, seed + 2, results_dir)
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()
        drop_database(server_url, name)
    out["targets"] = {
        "p99 sync delay under 0.5 s at the steady rate":
            "PASS" if out["steady"]["p99_s"] is not None
            and out["steady"]["p99_s"] < TARGETS["p99_delay_seconds_max"] else "MISS",
        "backlog drain >= 5,000 events/s":
            "PASS" if (out["backlog"]["events_per_second"] or 0) >= TARGETS["drain_events_per_second_min"] else "MISS",
        "cache resync of all participants under 5 s":
            "PASS" if out["resync"]["seconds"] < TARGETS["resync_seconds_max"] else "MISS",
    }
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    save(out, "bench_events", results_dir)
    return out


def _stream_row(settings: Settings) -> tuple:
    with connection(settings) as conn:
        return one(conn.execute(sql.SQL("SELECT healed_at, heal_run_id, losses FROM {}.event_streams WHERE stream = %s")
                            .format(sql.Identifier(settings.ops_schema)), (settings.events_stream,)))


def _recovery(settings: Settings, events: int, rate: float, seed: int, results_dir: Path) -> dict:
    """Redis restarted empty, a third of the way through `events` published at `rate` while a
    worker runs: how long until the worker has healed the stream, and until it has caught up
    with what was published meanwhile."""
    import tempfile
    import threading

    import redis

    from chatsync.consistency.detect import detect
    from chatsync.consistency.scope import Scope
    from chatsync_devtools.embedded import RedisServer
    from chatsync_devtools.room_service import emit

    own = RedisServer(Path(tempfile.mkdtemp(prefix="chatsync_bench_redis_")), persistent=False).start()
    s = replace(settings, redis_url=own.url)
    client = redis.Redis.from_url(own.url, socket_timeout=1, socket_connect_timeout=1)
    worker = None
    try:
        cache.resync(s)
        worker = _worker_process(s, "recovery", results_dir, "--batch", "500", "--block-ms", "20")
        published: dict = {}
        load = threading.Thread(target=lambda: published.update(report=emit(
            s, client, events, seed=seed, rate=rate, through_outages=True)))
        load.start()
        _wait_synced(s, "recovery", events // 3, timeout=600)  # steady state first
        own.kill()
        own.start()
        back, back_at = time.perf_counter(), datetime.now(timezone.utc)
        while not ((row := _stream_row(s)) and row[0] and row[0] > back_at):
            if worker.poll() is not None:
                raise RuntimeError(f"the recovery worker exited {worker.returncode}: see {results_dir}/worker_*.log")
            time.sleep(0.05)
        healed = time.perf_counter() - back

        def behind() -> tuple[int, int]:
            group = next((g for g in client.xinfo_groups(s.events_stream) if cache.text(g["name"]) == "chatsync"), {})
            return group.get("lag") or 0, group.get("pending") or 0
        while sum(behind()) > rate and load.is_alive():  # the backlog of the heal's time, down to 1 s of events
            time.sleep(0.05)
        caught_up = time.perf_counter() - back
        load.join()
        while behind() != (0, 0):
            time.sleep(0.05)
        with connection(s) as conn:
            ops = sql.Identifier(s.ops_schema)
            steps, repaired = one(conn.execute(sql.SQL("SELECT step_durations, repaired FROM {}.runs WHERE run_id = %s")
                                           .format(ops), (row[1],)))
            resynced, verified = one(conn.execute(sql.SQL("SELECT resynced, verified FROM {}.redis_outages "
                                                      "ORDER BY id DESC LIMIT 1").format(ops)))
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
        # the same steps by hand, one after the other, on the settled data
        t0 = time.perf_counter()
        remaining = detect(s, Scope("full"), triggered_by="bench").rows_to_change
        by_hand = {"detect_s": round(time.perf_counter() - t0, 3)}
        by_hand["resync_s"] = round(cache.refresh(s, client).seconds, 3)
        cache_left = cache.verify(s, client=client)
        by_hand["verify_s"] = round(cache_left.seconds, 3)
        report = published["report"].to_dict()
        return {"published_rate": report["rate"], "unpublished": report["unpublished"],
                "redis_back_to_healed_s": round(healed, 3), "redis_back_to_caught_up_s": round(caught_up, 3),
                "heal": {"detect_s": steps.get("detect"), "repair_s": steps.get("repair"), "rows_repaired": repaired,
                         "resync_s": (resynced or {}).get("seconds"), "verify_s": (verified or {}).get("seconds")},
                "by_hand": by_hand, "by_hand_total_s": round(sum(by_hand.values()), 3),
                "differences_after": remaining, "cache_differences_after": cache_left.total}
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        client.close()
        own.kill()


def format_table(out: dict) -> str:
    st, bl, rs = out["steady"], out["backlog"], out["resync"]
    lines = [
        f"chatsync bench --suite events: {out['participants']:,} participants, {out['rooms']:,} rooms, "
        f"PostgreSQL {out.get('postgres')}, Redis {out.get('redis')}",
        f"cache resync: {rs['rooms']:,} rooms, {rs['participants']:,} participants in {rs['seconds']:.2f}s",
        f"steady: {st['published']['events']:,} events published at {st['published']['rate']}/s; "
        f"sync delay p50 {st['p50_s']}s, p95 {st['p95_s']}s, p99 {st['p99_s']}s, max {st['max_s']}s",
        f"backlog: {bl['events']:,} events drained in {bl['seconds_incl_start']}s "
        f"(incl. worker start) = {bl['events_per_second']:,} events/s",
        f"cache differences after all of it: {out['verify_after']}",
        *_recovery_lines(out.get("recovery")),
        "targets:",
        *[f"  {v:5} {k}" for k, v in out["targets"].items()],
    ]
    return "\n".join(lines)


def _recovery_lines(rc: dict | None) -> list[str]:
    if not rc:
        return []
    h, hand = rc["heal"], rc["by_hand_total_s"]
    ratio = f" = {rc['redis_back_to_healed_s'] / hand:.2f}x" if hand else ""
    return [f"recovery: Redis restarted empty under {rc['published_rate']}/s ({rc['unpublished']} changes unpublished "
            f"while it was away): healed {rc['redis_back_to_healed_s']}s after it was back (full detect "
            f"{h['detect_s']}s, repair {h['repair_s']}s of {h['rows_repaired']} rows, cache resync {h['resync_s']}s, "
            f"verify {h['verify_s']}s), less than 1 s of events behind again after {rc['redis_back_to_caught_up_s']}s",
            f"the same steps by hand on the settled data (full detect, cache resync, verify): {hand}s{ratio}; "
            f"differences after: {rc['differences_after']} rows, {rc['cache_differences_after']} cache keys"]
