"""``chatsync bench --suite events``: the event road, measured in one run.

On a scratch database (dropped at the end) and a private Redis key prefix (deleted at the end):
1. cache resync of every room (the simulated 1M participants by default);
2. steady load: the room-service simulator publishes ``events`` events at ``rate``/s while one
   ``chatsync worker`` process consumes; sync delay = processed_at − occurred_at, from the sync log;
3. backlog: ``events`` more are published with no worker running, then one worker drains them.
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

import psycopg
from psycopg import sql

from chatsync import cache
from chatsync.bench import _drop_database, _save, _scratch_database
from chatsync.config import REPO_ROOT, Settings
from chatsync.db import connection
from chatsync.errors import ConfigError

log = logging.getLogger("chatsync.bench")
WORKER_LOGS = REPO_ROOT / "benchmarks" / "results" / "worker_*.log"
TARGETS = {"p99_delay_seconds_max": 0.5, "drain_events_per_second_min": 5000, "resync_seconds_max": 5.0}


def _worker_process(settings: Settings, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CHATSYNC_DATABASE_URL": settings.database_url, "CHATSYNC_REDIS_URL": settings.redis_url,
           "CHATSYNC_EVENTS_STREAM": settings.events_stream, "CHATSYNC_REDIS_PREFIX": settings.redis_prefix}
    # the worker logs a line per batch: to a file, a pipe nobody reads would fill and block it
    log_path = REPO_ROOT / "benchmarks" / "results" / f"worker_{name}_{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        return subprocess.Popen([sys.executable, "-m", "chatsync.cli", "worker", "--name", name, *extra],
                                env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)


def _delays(settings: Settings, worker: str) -> dict:
    from chatsync.metrics import sync_delays

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
            n = conn.execute(sql.SQL("SELECT count(*) FROM {}.sync_log WHERE worker = %s").format(
                sql.Identifier(settings.ops_schema)), (worker,)).fetchone()[0]
            if n >= expected:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker} synced {n} of {expected} events in {timeout}s")
            time.sleep(0.2)


def run_events_bench(settings: Settings, participants: int, events: int, rate: float, seed: int = 7,
                     batch: int = 2000) -> dict:
    import redis

    from chatsync.eventsim import emit
    from chatsync.migrations import migrate
    from chatsync.simulate import simulate

    if not settings.redis_url:
        raise ConfigError("the event benchmark needs Redis: set CHATSYNC_REDIS_URL")
    server_url = settings.require_database()
    name = f"chatsync_bench_{os.getpid()}"
    prefix = f"chatsync_bench_{os.getpid()}:"
    url = _scratch_database(server_url, name)
    s = replace(settings, database_url=url, redis_prefix=prefix, events_stream=prefix + "events")
    client = redis.Redis.from_url(s.redis_url)
    started = time.perf_counter()
    out: dict = {"participants": None, "events": events, "rate": rate, "seed": seed, "batch": batch,
                 "scratch_database": name, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        migrate(s, reference_schema=True)
        report = simulate(s, rooms=max(participants // 50, 1), members=50, drift=0, seed=seed)
        out["participants"], out["rooms"] = report.participants, report.rooms
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            out["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        out["redis"] = client.info("server")["redis_version"]

        log.info("bench events: cache resync of %d participants", report.participants)
        out["resync"] = cache.resync(s).to_dict()

        log.info("bench events: %d events at %.0f/s with one worker running", events, rate)
        steady = _worker_process(s, "steady", "--batch", "500", "--block-ms", "20")
        time.sleep(1.0)  # the worker is up and blocking on the stream
        published = emit(s, client, events, seed=seed, rate=rate)
        _wait_synced(s, "steady", events, timeout=600)
        steady.send_signal(signal.SIGTERM)
        steady.communicate(timeout=60)
        if steady.returncode != 0:
            raise RuntimeError(f"steady worker exited {steady.returncode}: see {WORKER_LOGS}")
        out["steady"] = {"published": published.to_dict(), **_delays(s, "steady")}

        log.info("bench events: %d events published with no worker, then drained", events)
        backlog = emit(s, client, events, seed=seed + 1, batch=500)
        t0 = time.perf_counter()
        drainer = _worker_process(s, "drain", "--batch", str(batch), "--until-idle", "--json")
        drainer.communicate(timeout=1800)
        seconds = time.perf_counter() - t0
        if drainer.returncode != 0:
            raise RuntimeError(f"drain worker exited {drainer.returncode}: see {WORKER_LOGS}")
        drained = _delays(s, "drain")
        out["backlog"] = {"published": backlog.to_dict(), "events": drained["events"],
                          "seconds_incl_start": round(seconds, 3), "processing_span_s": drained["processing_span_s"],
                          "events_per_second": round(drained["events"] / seconds) if seconds else None}
        out["verify_after"] = cache.verify(s, client=client).to_dict()["total"]
    finally:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()
        _drop_database(server_url, name)
    out["targets"] = {
        "p99 sync delay under 0.5 s at the steady rate":
            "PASS" if out["steady"]["p99_s"] is not None and out["steady"]["p99_s"] < TARGETS["p99_delay_seconds_max"] else "MISS",
        "backlog drain >= 5,000 events/s":
            "PASS" if (out["backlog"]["events_per_second"] or 0) >= TARGETS["drain_events_per_second_min"] else "MISS",
        "cache resync of all participants under 5 s":
            "PASS" if out["resync"]["seconds"] < TARGETS["resync_seconds_max"] else "MISS",
    }
    out["total_seconds"] = round(time.perf_counter() - started, 1)
    _save(out, "bench_events")
    return out


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
        "targets:",
        *[f"  {v:5} {k}" for k, v in out["targets"].items()],
    ]
    return "\n".join(lines)
