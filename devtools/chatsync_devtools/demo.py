"""``chatsync demo`` / ``make demo``: the whole pipeline on one machine, for real.

Embedded Postgres and Redis (unless CHATSYNC_DATABASE_URL is set), the schemas, a simulated
platform with drift of every kind, then ``chat_consistency_hourly`` run through Airflow
(``airflow dags test``), and a readable summary read back from the run record.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from chatsync.config import Settings
from chatsync.db import runs
from chatsync.db.connection import connection, one
from chatsync.model.rules import KINDS

log = logging.getLogger("chatsync.cli")


def demo_settings() -> Settings:
    """The demo's settings: CHATSYNC_DATABASE_URL when set, else the embedded services."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings
    from chatsync_devtools import embedded

    services = embedded.start(default_home() / "services")
    log.info("CHATSYNC_DATABASE_URL not set: using the embedded Postgres at %s", services.database_url)
    return Settings.from_env(database_url=services.database_url,
                             redis_url=settings.redis_url or services.redis_url)


DAG_ID = "chat_consistency_hourly"


def default_home() -> Path:
    """Where the demo keeps its embedded services and Airflow home: CHATSYNC_HOME, else .chatsync/
    in the current folder (the checkout, for `make demo`)."""
    return Path(os.environ.get("CHATSYNC_HOME") or Path.cwd() / ".chatsync")


def dag_folder(home: Path) -> Path:
    """A DAG folder holding the hourly DAG's file, as a user's deployment has it (dags/ of the
    repository: one import and one call)."""
    folder = home / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{DAG_ID}.py").write_text(f"from chatsync.airflow.dags.{DAG_ID} import {DAG_ID}\n\n{DAG_ID}()\n")
    return folder


def airflow_connection_json(database_url: str) -> str:
    """The chatsync_db Airflow connection for a libpq URL (socket directories included)."""
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    conn: dict[str, str | int] = {"conn_type": "postgres", "host": params.get("host", "localhost"),
            "login": params.get("user", "postgres"), "schema": params.get("dbname", "postgres")}
    if params.get("port"):
        conn["port"] = int(params["port"])
    if params.get("password"):
        conn["password"] = params["password"]
    return json.dumps(conn)


def airflow_env(home: Path, settings: Settings) -> dict[str, str]:
    env = os.environ.copy()
    env.update({
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder(home / "airflow")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "airflow" / "plugins"),  # the plugin: an entry point
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_CHATSYNC_DB": airflow_connection_json(settings.require_database()),
    })
    if settings.redis_url:
        env["CHATSYNC_REDIS_URL"] = settings.redis_url
    return env


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(rooms: int, members: int, drift: float, seed: int) -> tuple[int, dict]:
    from chatsync.db.migrations import migrate
    from chatsync_devtools.demo import demo_settings
    from chatsync_devtools.simulate import simulate

    home = default_home()
    home.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    _step("services")
    t0 = time.perf_counter()
    settings = demo_settings()
    timings["services"] = time.perf_counter() - t0
    embedded = not os.environ.get("CHATSYNC_DATABASE_URL")
    print(f"Postgres: {'embedded (pgserver)' if embedded else 'CHATSYNC_DATABASE_URL'} {settings.database_url}")
    print(f"Redis:    {settings.redis_url or '-'}")

    _step("schemas (chatsync init --reference-schema)")
    t0 = time.perf_counter()
    applied = migrate(settings, reference_schema=True)
    timings["init"] = time.perf_counter() - t0
    print(f"migrations applied now: {', '.join(applied) or 'none (already up to date)'}")

    _step(f"simulate {rooms} rooms, ~{members} members each, drift {drift:.2%} (seed {seed})")
    report = simulate(settings, rooms=rooms, members=members, drift=drift, seed=seed)
    timings["simulate"] = report.seconds
    print(f"room side: {report.rooms} rooms, {report.participants} participants; injected drift:")
    for kind in KINDS:
        print(f"  {kind:<22} {report.injected[kind]:>6}")

    _step(f"Airflow: airflow dags test {DAG_ID} (scope full)")
    env = airflow_env(home, settings)
    airflow = str(Path(sys.executable).with_name("airflow"))
    log_path = home / "demo-airflow.log"
    t0 = time.perf_counter()
    with log_path.open("w") as log_file:
        subprocess.run([airflow, "db", "migrate"], env=env, stdout=log_file, stderr=subprocess.STDOUT, check=True)
        timings["airflow db migrate"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        dag_test = subprocess.run([airflow, "dags", "test", DAG_ID, "-c", json.dumps({"scope": "full"})],
                                  env=env, stdout=log_file, stderr=subprocess.STDOUT)
        timings["airflow dags test"] = time.perf_counter() - t1
    print(f"Airflow log: {log_path}")

    events = _event_road(settings, seed) if settings.redis_url else None
    if events is None:
        print("\n(no Redis configured: set CHATSYNC_REDIS_URL to include the events and the cache)")

    with connection(settings) as conn:
        run_id = one(conn.execute("SELECT max(run_id) FROM chatsync.runs WHERE kind = 'check' "
                              "AND triggered_by LIKE %s", (f"airflow:{DAG_ID}/%",)))[0]
        run = runs.get(conn, settings.ops_schema, run_id) if run_id else None
        by_action = dict(conn.execute("SELECT action, count(*) FROM chatsync.repair_audit WHERE run_id = %s "
                                      "GROUP BY action", (run_id,)).fetchall()) if run_id else {}
    timings["total"] = time.perf_counter() - t_all
    summary = _summary(report, run, by_action, dag_test.returncode, timings, log_path)
    summary["events"] = events
    _print_summary(summary)
    ok = dag_test.returncode == 0 and run is not None and run["status"] == "validated"
    ok = ok and (events is None or (events["cache_differences"] == 0 and events["synced"] == events["published"]))
    return (0 if ok else 1), summary


def _event_road(settings: Settings, seed: int, n: int = 500) -> dict:
    """The main road: room changes published as events, one worker syncs chat tables and cache."""
    from datetime import datetime

    from chatsync.events import cache
    from chatsync.events.worker import Worker
    from chatsync_devtools.room_service import emit

    _step(f"event sync: {n} room changes published on {settings.events_stream}, `chatsync worker` syncs them")
    resync = cache.resync(settings)
    print(f"cache resync: {resync.rooms} rooms, {resync.participants} participants in {resync.seconds:.2f}s")
    since = datetime.now(timezone.utc)
    client = cache.client_for(settings)
    try:
        published = emit(settings, client, n, seed=seed)
    finally:
        client.close()
    worker = Worker(settings, "demo", block_ms=100)
    try:
        stats = worker.run(until_idle=True, max_seconds=120)
    finally:
        worker.close()
    from chatsync.ops.metrics import sync_delays

    with connection(settings) as conn:
        road = sync_delays(conn, settings, start=since, worker="demo")
    synced, applied = road["events"], road["applied"]
    verify = cache.verify(settings)
    out = {"published": published.events, "by_type": published.by_type, "synced": synced, "applied": applied,
           "dead_letters": stats.dead_letters, "seconds": round(stats.seconds, 2),
           "delay_p50_s": None if road["p50_s"] is None else round(road["p50_s"], 3),
           "delay_p99_s": None if road["p99_s"] is None else round(road["p99_s"], 3),
           "cache_differences": verify.total}
    print(f"published {out['published']} events: " + ", ".join(f"{k.removeprefix('room.')} {v}"
                                                             for k, v in out["by_type"].items()))
    print(f"worker: {synced} synced ({applied} changed the chat side), {out['dead_letters']} dead letters, "
          f"in {out['seconds']}s; sync delay p50 {out['delay_p50_s']}s, p99 {out['delay_p99_s']}s")
    print(f"cache verify: {verify.total} differences between Redis and the chat tables")
    return out


def _summary(report, run, by_action, returncode, timings, log_path) -> dict:
    validation = (run or {}).get("validation") or {}
    return {
        "injected": report.injected,
        "run_id": run and run["run_id"],
        "status": run and run["status"],
        "detected": run and run["counts"],
        "repaired": run and run["repaired"],
        "repaired_by_action": by_action,
        "validation": {"passed": validation.get("passed"), "failed": validation.get("failed", []),
                       "evaluated": validation.get("evaluated")},
        "data_docs": validation.get("docs_index"),
        "step_seconds": run and run["step_durations"],
        "demo_seconds": {k: round(v, 2) for k, v in timings.items()},
        "airflow_exit_code": returncode,
        "airflow_log": str(log_path),
    }


def _print_summary(s: dict) -> None:
    _step(f"result of run {s['run_id']}: {s['status']}")
    detected = s["detected"] or {}
    print(f"  {'kind':<22} {'injected':>9} {'detected':>9}")
    for kind in KINDS:
        print(f"  {kind:<22} {s['injected'][kind]:>9} {detected.get(kind, 0):>9}")
    print(f"repaired rows: {s['repaired']} {s['repaired_by_action']}")
    v = s["validation"]
    verdict = "passed" if v["passed"] else "FAILED"
    print(f"validation (Great Expectations): {verdict}, {v['evaluated']} expectations")
    for f in v["failed"]:
        print(f"  failed: {f}")
    print(f"Data Docs: {s['data_docs']}")
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in (s["step_seconds"] or {}).items())
    print(f"pipeline steps: {steps}")
    print("demo: " + ", ".join(f"{k} {v:.1f}s" for k, v in s["demo_seconds"].items()))
    if s["airflow_exit_code"] != 0:
        print(f"airflow dags test exited {s['airflow_exit_code']}: see {s['airflow_log']}")
