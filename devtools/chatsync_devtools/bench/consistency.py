"""``chatsync bench``: chatsync's detect and repair against the baselines, measured in one run.

On a scratch database (created on the configured server, dropped at the end) the simulator
builds the reference schema with N participants and the given drift. Then, each in a fresh
child process so that its peak memory is its own:

  floor    ``count(*)`` of both participant tables (reading the data once, nothing compared)
  foj      the bare FULL OUTER JOIN diff query, differing keys fetched
  pandas   both tables read with ``pd.read_sql`` (SQLAlchemy), outer merge, compare
  pandas_copy  the same with the fastest load there is (COPY ... CSV into ``read_csv``)
  write_overhead  with --fingerprints: what the triggers add to the application's single-row
           UPDATEs (1,000 with the triggers firing and skipped, rolled back)
  fold     with --fingerprints: the fold chat_sync_health runs between hourly runs
  detect   chatsync's detect, scope full (both entities, findings stored by kind)
  detect_sharded  the same as the hourly DAG's mapped parts (plan, one part per room-id shard,
           finish), the parts one after another; only from detect_shard_rows participants on
  bare_repair  the same changes as one plain INSERT/UPDATE/DELETE, no audit (rolled back)
  repair   chatsync's repair of the detect run: batches, row locks, re-check, audit, bookkeeping
  airflow_tasks  the peak RSS of the hourly DAG's task processes: the Task SDK, then the detect
           tasks, then GX validation of the repaired run

The floor, the joins, the detects and the two repairs run ``--repeat`` times and keep the median:
the reads on the same data, the repairs on copies of the scratch database (a repair changes what
it repairs); pandas, the fold, the incremental scope and the Airflow task processes run once.
Memory is the child's peak RSS, and "work" memory is that peak minus the child's RSS once its
imports are done. Postgres' own memory is not counted for anyone (``work_mem`` bounds it for all).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import one
from chatsync.errors import ConfigError

log = logging.getLogger("chatsync.bench")


RESULTS_DIR = Path("benchmarks") / "results"  # of the current folder (the checkout); --results-dir to change
MEMBERS_PER_ROOM = 50
TARGETS = {  # the goals the benchmark checks (at 1M; the spread across sizes up to 10M)
    "detect_vs_foj_max": 1.5,
    "pandas_vs_detect_time_min": 10.0,
    "pandas_vs_detect_memory_min": 20.0,
    "repair_rows_per_second_min": 50_000,
    "detect_vs_floor_max_spread": 4.0,
    "detect_vs_floor_max_concentrated": 3.0,
    "repair_rows_per_second_min_10m": 100_000,
    "task_peak_rss_mb_max": 300,
}
STEP_TIMEOUT_SECONDS = 3600
WORK_MB_RESOLUTION = 1.0
HISTORY_FINDINGS_PER_RUN = 10_000  # --history: earlier runs of this many resolved findings each


def _rss_mb() -> float:
    """This process's peak RSS in MB. On Linux from VmHWM: ru_maxrss keeps the parent's RSS
    across fork and exec, so every step child reported at least the bench process's own (62.5 MB
    for each step with the embedded server's modules loaded; the detect child's own is 39 MB)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux and BSD: KiB


def _median_time(fn, repeat: int, between=None) -> tuple[float, Any]:
    """The median time of `repeat` calls of fn; `between` (untimed) runs before each call after the first."""
    times, out = [], None
    for i in range(repeat):
        if i and between:
            between()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _step_floor(settings: Settings, repeat: int, **_) -> dict:
    from chatsync.db.connection import connection
    from chatsync_devtools.statements import sql_file

    with connection(settings) as conn:
        query = sql_file(settings, "bench_floor_count")
        seconds, rows = _median_time(lambda: one(conn.execute(query))[0], repeat)
    return {"seconds": seconds, "rows": rows}


def _step_foj(settings: Settings, repeat: int, **_) -> dict:
    from chatsync.db.connection import connection
    from chatsync_devtools.statements import sql_file

    with connection(settings) as conn:
        query = sql_file(settings, "bench_bare_full_outer_join")
        seconds, rows = _median_time(lambda: len(conn.execute(query).fetchall()), repeat)
    return {"seconds": seconds, "rows": rows}


def _pandas_diff(room, chat) -> int:
    merged = room.merge(chat, on=["room_id", "user_id"], how="outer", suffixes=("_r", "_c"), indicator=True)
    differs = merged["_merge"] != "both"
    for column in ("role", "permissions", "banned"):
        differs |= merged[f"{column}_r"].ne(merged[f"{column}_c"])
    return int(differs.sum())


def _step_pandas(settings: Settings, repeat: int, **_) -> dict:
    """What a data engineer writes first: pd.read_sql of both tables, outer merge, compare."""
    import pandas as pd
    import sqlalchemy

    from chatsync.validation.gx import sqlalchemy_url

    base = _rss_mb()
    engine = sqlalchemy.create_engine(sqlalchemy_url(settings.require_database()))

    def run() -> int:
        with engine.connect() as conn:
            room = pd.read_sql(sqlalchemy.text(_pandas_query(settings, "bench_pandas_room_side")), conn)
            chat = pd.read_sql(sqlalchemy.text(_pandas_query(settings, "bench_pandas_chat_side")), conn)
        return _pandas_diff(room, chat)

    seconds, rows = _median_time(run, repeat)
    engine.dispose()
    return {"seconds": seconds, "rows": rows, "baseline_rss_mb": base}


def _step_pandas_copy(settings: Settings, repeat: int, **_) -> dict:
    """pandas with the fastest load there is: COPY ... CSV into read_csv."""
    import io

    import pandas as pd

    from chatsync.db.connection import connection

    base = _rss_mb()

    def read(conn, name: str) -> pd.DataFrame:
        buffer = io.BytesIO()
        query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(
            sql.SQL(_pandas_query(settings, name)))
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                buffer.write(chunk)
        buffer.seek(0)
        return pd.read_csv(buffer)

    def run() -> int:
        with connection(settings) as conn:
            room, chat = read(conn, "bench_pandas_room_side"), read(conn, "bench_pandas_chat_side")
        return _pandas_diff(room, chat)

    seconds, rows = _median_time(run, repeat)
    return {"seconds": seconds, "rows": rows, "baseline_rss_mb": base}


def _pandas_query(settings: Settings, name: str) -> str:
    from chatsync_devtools.statements import sql_file

    return sql_file(settings, name).as_string(None).strip().rstrip(";")


def _forget_runs(conn, settings: Settings, run_ids: list[int]) -> None:
    """Drop benchmark runs and their findings (no foreign key cascades from runs to findings)."""
    for table in ("inconsistencies", "runs"):
        conn.execute(sql.SQL("DELETE FROM {} WHERE run_id = ANY(%s)").format(
            sql.Identifier(settings.ops_schema, table)), (run_ids,))


def _step_detect(settings: Settings, repeat: int, **_) -> dict:
    from chatsync.consistency.detect import detect
    from chatsync.consistency.scope import Scope
    from chatsync.db.connection import connection

    run_ids: list[int] = []

    def once():
        result = detect(settings, Scope("full"), triggered_by="bench")
        run_ids.append(result.run_id)
        return result

    with connection(settings, autocommit=True) as conn:
        # Each repetition meets what the first met: the previous one's run is forgotten and, with
        # maintained fingerprints, the changed keys it diffed and removed are put back.
        changed_keys = sql.Identifier(settings.ops_schema, "fingerprint_changed_keys")
        conn.execute(sql.SQL("CREATE TEMP TABLE bench_changed_keys AS SELECT * FROM {}").format(changed_keys))

        def reset() -> None:
            _forget_runs(conn, settings, run_ids[-1:])
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM pg_temp.bench_changed_keys "
                                 "ON CONFLICT DO NOTHING").format(changed_keys))

        seconds, result = _median_time(once, repeat, between=reset)
    return {"seconds": seconds, "rows": result.total, "run_id": result.run_id,
            "rows_to_change": result.rows_to_change, "counts": result.counts}


def _detect_as_the_dag(settings: Settings) -> tuple[dict, int]:
    """The hourly DAG's detect of a full scope: plan, one part per room-id shard, finish; the
    parts one after another, as on one worker slot (a cluster runs them side by side).
    Returns the detect task's result and the number of parts."""
    from chatsync.consistency import steps
    from chatsync.consistency.scope import Scope

    parts = steps.plan_step(settings, Scope("full"), "bench")
    return steps.finish_step(settings, parts, [steps.shard_step(settings, p) for p in parts]), len(parts)


def _step_detect_sharded(settings: Settings, repeat: int, **_) -> dict:
    from chatsync.db.connection import connection

    run_ids: list[int] = []
    n_parts: list[int] = []

    def once():
        found, parts = _detect_as_the_dag(settings)
        run_ids.append(found["run_id"])
        n_parts.append(parts)
        return found

    seconds, found = _median_time(once, repeat)
    with connection(settings) as conn:  # only the plain detect's run goes on to the repair
        _forget_runs(conn, settings, run_ids)
    return {"seconds": seconds, "rows": sum(found["counts"].values()), "parts": n_parts[-1]}


def _step_airflow_tasks(settings: Settings, run_id: int, **_) -> dict:
    """The hourly DAG's steps as its Airflow task processes run them: the Task SDK loaded first,
    then the detect tasks (plan, parts, finish) and, last, validate (Great Expectations) on the
    repaired run. ru_maxrss only grows, so the peak after the detect tasks is theirs."""
    import airflow.sdk  # noqa: F401 - loaded by every Airflow 3 task process

    from chatsync.consistency import engine
    from chatsync.db.connection import connection

    with_sdk = _rss_mb()
    found, _parts = _detect_as_the_dag(settings)
    detect_peak = _rss_mb()
    with connection(settings) as conn:
        _forget_runs(conn, settings, [found["run_id"]])
    t0 = time.perf_counter()
    outcome = engine.validate_run(settings, run_id)
    return {"seconds": time.perf_counter() - t0, "rows": len(outcome.get("failed", [])),
            "validation_passed": outcome["passed"], "task_sdk_rss_mb": with_sdk,
            "detect_task_peak_rss_mb": detect_peak, "validate_task_peak_rss_mb": _rss_mb()}


def _step_fold(settings: Settings, **_) -> dict:
    """What chat_sync_health does between hourly runs when fingerprints are maintained: fold the
    triggers' log into the fingerprints (the detect after it then only diffs the keys)."""
    from chatsync.consistency.fingerprints import fold_pending

    t0 = time.perf_counter()
    waiting = fold_pending(settings)
    return {"seconds": time.perf_counter() - t0, "rows": sum(waiting.values())}


def _step_write_overhead(settings: Settings, repeat: int, **_) -> dict:
    """What the fingerprint triggers add to the application's writes: 1,000 single-row UPDATEs
    (the shape of an application write) with the triggers firing and skipped
    (session_replication_role = replica), each batch rolled back, alternated. (A 10,000-row
    statement was measured too: the difference stayed inside its own run-to-run noise.)"""
    from chatsync.db.connection import connection

    update_one = ("UPDATE chat.chat_participants SET permissions = permissions # 2, updated_at = clock_timestamp() "
           "WHERE room_id = %s AND user_id = %s")
    with connection(settings) as conn:
        # every 97th key in scan order (a sample of pages finds none in a small table)
        keys = conn.execute("SELECT room_id, user_id FROM chat.chat_participants "
                            "WHERE (room_id * 7919 + user_id) % 97 = 0 LIMIT 1000").fetchall()
        superuser = one(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))[0]
        conn.rollback()
        if not superuser:  # only a superuser may skip triggers
            raise ConfigError("the write_overhead step needs a superuser connection (session_replication_role)")

        def timed(triggers: bool) -> float:
            with conn.transaction(force_rollback=True):
                if not triggers:
                    conn.execute("SET LOCAL session_replication_role = replica")
                t0 = time.perf_counter()
                for key in keys:
                    conn.execute(update_one, key)
                return time.perf_counter() - t0

        runs: dict[bool, list[float]] = {True: [], False: []}
        for i in range(1 + max(repeat, 5)):  # a warm-up round, then alternated in both orders
            for triggers in ((False, True) if i % 2 else (True, False)):
                runs[triggers].append(timed(triggers))
    on, off = (statistics.median(runs[t][1:]) for t in (True, False))
    return {"seconds": on, "rows": len(keys), "without_triggers_seconds": off,
            "ms_per_statement_with_triggers": round(1e3 * on / max(len(keys), 1), 3),
            "ms_per_statement_without_triggers": round(1e3 * off / max(len(keys), 1), 3)}


def _step_bare_repair(settings: Settings, run_id: int, **_) -> dict:
    from chatsync.db.connection import connection
    from chatsync_devtools.statements import sql_file

    with connection(settings, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # both write steps start from the same clean buffers
    with connection(settings) as conn:
        t0 = time.perf_counter()
        rows = one(conn.execute(sql_file(settings, "bench_bare_repair", ops=sql.Identifier(settings.ops_schema)),
                            {"run_id": run_id}))[0]
        seconds = time.perf_counter() - t0
        conn.rollback()  # leave the drift for chatsync's repair
    with connection(settings, autocommit=True) as conn:
        conn.execute("VACUUM chat.chat_participants, chat.chat_rooms")  # no dead rows left for it
    return {"seconds": seconds, "rows": rows}


def _step_repair(settings: Settings, run_id: int, **_) -> dict:
    from chatsync.consistency.repair import repair
    from chatsync.db.connection import connection

    with connection(settings, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    result = repair(settings, run_id)
    return {"seconds": result.seconds, "rows": result.repaired, "by_action": result.by_action,
            "batches": result.batches}


def _step_incremental(settings: Settings, run_id: int, **_) -> dict:
    """Incremental scope after 1 % of the chat rows changed since a consistent run."""
    from chatsync.consistency.detect import detect
    from chatsync.consistency.scope import Scope
    from chatsync.db.connection import connection

    with connection(settings, autocommit=True) as conn:
        # the bench runs no GX: the repaired run stands for the consistent run that sets the watermark
        conn.execute(sql.SQL("UPDATE {}.runs SET status = 'validated' WHERE run_id = %s").format(
            sql.Identifier(settings.ops_schema)), (run_id,))
        time.sleep(1.1)  # changes strictly after the watermark
        changed = conn.execute("UPDATE chat.chat_participants SET permissions = permissions # 1, "
                               "updated_at = clock_timestamp() WHERE (room_id * 7919 + user_id) % 100 = 0").rowcount
        conn.execute("VACUUM ANALYZE chat.chat_participants")
    result = detect(replace(settings, incremental_overlap_seconds=0), Scope("incremental"), triggered_by="bench")
    return {"seconds": result.seconds, "rows": result.rows_to_change, "changed": changed}


STEPS: dict[str, Callable[..., dict]] = {
         "floor": _step_floor, "foj": _step_foj, "pandas": _step_pandas, "pandas_copy": _step_pandas_copy,
         "detect": _step_detect, "detect_sharded": _step_detect_sharded, "airflow_tasks": _step_airflow_tasks,
         "fold": _step_fold, "write_overhead": _step_write_overhead,
         "bare_repair": _step_bare_repair, "repair": _step_repair, "incremental": _step_incremental}


def _child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m chatsync_devtools.bench.consistency")
    p.add_argument("step", choices=sorted(STEPS))
    p.add_argument("--database-url", required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--run-id", type=int)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = _bench_settings(Settings.from_env(), args.database_url)
    import chatsync.db.connection  # noqa: E401,F401 - counted in the baseline
    base = _rss_mb()
    out = STEPS[args.step](settings, repeat=args.repeat, run_id=args.run_id)
    out.setdefault("baseline_rss_mb", base)
    out["peak_rss_mb"] = _rss_mb()
    # ru_maxrss moves in pages and allocator arenas: below 1 MB the growth is noise
    out["work_mb"] = max(out["peak_rss_mb"] - out["baseline_rss_mb"], WORK_MB_RESOLUTION)
    print(json.dumps(out, default=str))


def _bench_settings(settings: Settings, url: str) -> Settings:
    # the benchmark repairs everything it finds: no major-inconsistency stop
    return replace(settings, database_url=url, repair_max_fraction=1.0, repair_max_changes=2**62)


def _run_child(step: str, url: str, repeat: int = 1, run_id: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "chatsync_devtools.bench.consistency", step, "--database-url", url,
           "--repeat", str(repeat)]
    if run_id is not None:
        cmd += ["--run-id", str(run_id)]
    log.info("bench: %s (x%d)", step, repeat)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark step {step} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scratch_database(url: str, name: str, template: str | None = None) -> str:
    """A new, empty database `name` on the server (or a copy of `template`, to which no session
    may be connected); its URL."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:  # FILE_COPY (PostgreSQL 15+) copies files instead of logging every block
                create += sql.SQL(" TEMPLATE {}{}").format(sql.Identifier(template), sql.SQL(
                    " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(create)
    except psycopg.Error as exc:
        raise ConfigError(f"the benchmark needs to create a scratch database {name!r} on the "
                          f"configured server: {str(exc).strip()}") from exc
    return psycopg.conninfo.make_conninfo(url, dbname=name)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _repeated_repairs(server_url: str, name: str, url: str, run_id: int, repeat: int) -> dict:
    """The bare repair then chatsync's repair, `repeat` times on the same data, medians kept.
    A repair changes the data, so the first repeat - 1 trials run on copies of the scratch
    database (each dropped after) and the last on the scratch database itself, which the later
    steps go on with. Each trial runs both steps in the same order, so the bare statement warms
    the same pages for chatsync's repair in every trial."""
    trials = []
    for i in range(1, repeat):
        copy = f"{name}_r{i}"
        log.info("bench: repair trial %d/%d on %s, a copy of the scratch database", i, repeat, copy)
        copy_url = scratch_database(server_url, copy, template=name)
        try:
            trials.append({step: _run_child(step, copy_url, run_id=run_id) for step in ("bare_repair", "repair")})
        finally:
            drop_database(server_url, copy)
    log.info("bench: repair trial %d/%d on the scratch database", repeat, repeat)
    trials.append({step: _run_child(step, url, run_id=run_id) for step in ("bare_repair", "repair")})
    out = {}
    for step in ("bare_repair", "repair"):
        each = [trial[step] for trial in trials]
        if len({s["rows"] for s in each}) != 1:  # copies of one database: the same changes each time
            raise RuntimeError(f"benchmark step {step} changed different row counts on copies of one database: "
                               f"{[s['rows'] for s in each]}")
        merged = dict(each[-1])
        merged["seconds_each"] = [s["seconds"] for s in each]
        merged["seconds"] = statistics.median(merged["seconds_each"])
        merged["peak_rss_mb"] = max(s["peak_rss_mb"] for s in each)
        merged["work_mb"] = max(s["work_mb"] for s in each)
        out[step] = merged
    return out


def run_bench(settings: Settings, participants: int, drift: float, seed: int = 42,
              skip_pandas: bool = False, repeat: int = 3, keep: bool = False, drift_rooms: float = 1.0,
              members: int = MEMBERS_PER_ROOM, maintained_fingerprints: bool = False, history: int = 0,
              results_dir: Path | None = None) -> dict:
    from chatsync.db.migrations import migrate
    from chatsync_devtools.simulate import simulate
    from chatsync_devtools.statements import sql_file

    server_url = settings.require_database()
    name = f"chatsync_bench_{os.getpid()}"
    url = scratch_database(server_url, name)
    started = time.perf_counter()
    try:
        bench = _bench_settings(settings, url)
        migrate(bench, reference_schema=True)
        rooms = max(participants // members, 1)
        report = simulate(bench, rooms=rooms, members=members, drift=drift, seed=seed,
                          drift_rooms=drift_rooms, maintain_fingerprints=maintained_fingerprints)
        with psycopg.connect(url, autocommit=True) as conn:
            if history:  # earlier runs' resolved findings, as retention keeps them
                runs_of_history = math.ceil(history / HISTORY_FINDINGS_PER_RUN)
                conn.execute(sql_file(bench, "bench_findings_history", ops=sql.Identifier(bench.ops_schema)),
                             {"runs": runs_of_history, "per_run": math.ceil(history / runs_of_history),
                              "rooms": rooms})
            conn.execute("VACUUM ANALYZE")  # visibility map and statistics as in a settled database
            server = one(conn.execute("SHOW server_version"))[0]
        _run_child("floor", url, repeat=1)  # warm the cache once, untimed
        results = {"floor": _run_child("floor", url, repeat), "foj": _run_child("foj", url, repeat)}
        if not skip_pandas:
            results["pandas"] = _run_child("pandas", url, 1)
            results["pandas_copy"] = _run_child("pandas_copy", url, 1)
        # with maintained fingerprints, chat_sync_health folds the log between runs; the detect
        # then diffs the waiting keys (each repetition meets them again: see _step_detect)
        if maintained_fingerprints:
            try:
                results["write_overhead"] = _run_child("write_overhead", url, repeat)
            except RuntimeError as exc:  # e.g. not a superuser: the rest still runs
                log.warning("bench: the triggers' write overhead was not measured: %s", exc)
            results["fold"] = _run_child("fold", url)
        if participants >= bench.detect_shard_rows and not maintained_fingerprints:
            results["detect_sharded"] = _run_child("detect_sharded", url, repeat)
        results["detect"] = _run_child("detect", url, repeat)
        results.update(_repeated_repairs(server_url, name, url, results["detect"]["run_id"], repeat))
        results["airflow_tasks"] = _run_child("airflow_tasks", url, run_id=results["detect"]["run_id"])
        results["incremental"] = _run_child("incremental", url, run_id=results["detect"]["run_id"])
    finally:
        if not keep:
            drop_database(server_url, name)
    out = {
        "participants": report.participants, "rooms": report.rooms, "drift": drift, "drift_rooms": drift_rooms,
        "maintained_fingerprints": maintained_fingerprints, "history_findings": history,
        "seed": seed,
        "scratch_database": name, "kept": keep,
        "injected": report.injected, "postgres": server, "repeat": repeat,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "steps": results, "ratios": _ratios(results), "total_seconds": round(time.perf_counter() - started, 1),
    }
    out["targets"] = {**_verdicts(out["ratios"]), **_scale_verdicts(out)}
    save(out, "bench", results_dir or RESULTS_DIR)
    log.info("bench: done in %.0fs", out["total_seconds"])
    return out


def _ratios(r: dict) -> dict:
    def div(a, b):
        return round(a / b, 2) if a is not None and b else None

    repair, bare = r["repair"], r["bare_repair"]
    pandas = r.get("pandas", {})
    return {
        "foj_vs_floor": div(r["foj"]["seconds"], r["floor"]["seconds"]),
        "detect_vs_floor": div(r["detect"]["seconds"], r["floor"]["seconds"]),
        "incremental_1pct_vs_floor": div(r.get("incremental", {}).get("seconds"), r["floor"]["seconds"]),
        "detect_vs_foj": div(r["detect"]["seconds"], r["foj"]["seconds"]),
        "sharded_detect_vs_detect": div(r.get("detect_sharded", {}).get("seconds"), r["detect"]["seconds"]),
        "pandas_vs_detect_time": div(pandas.get("seconds"), r["detect"]["seconds"]),
        "pandas_vs_detect_peak_memory": div(pandas.get("peak_rss_mb"), r["detect"]["peak_rss_mb"]),
        "pandas_vs_detect_work_memory": div(pandas.get("work_mb"), r["detect"]["work_mb"]),
        "pandas_copy_vs_detect_time": div(r.get("pandas_copy", {}).get("seconds"), r["detect"]["seconds"]),
        "pandas_copy_vs_detect_peak_memory": div(r.get("pandas_copy", {}).get("peak_rss_mb"),
                                                 r["detect"]["peak_rss_mb"]),
        "repair_rows_per_second": round(repair["rows"] / repair["seconds"]) if repair["seconds"] else None,
        "bare_repair_rows_per_second": round(bare["rows"] / bare["seconds"]) if bare["seconds"] else None,
        "repair_vs_bare_repair": div(repair["seconds"], bare["seconds"]),
    }


def _check(value, ok) -> str:
    return "n/a" if value is None else ("PASS" if ok(value) else "MISS")


def _verdicts(ratios: dict) -> dict:
    return {
        "detect within 1.5x of bare FULL OUTER JOIN":
            _check(ratios["detect_vs_foj"], lambda v: v <= TARGETS["detect_vs_foj_max"]),
        "detect >= 10x faster than pandas":
            _check(ratios["pandas_vs_detect_time"], lambda v: v >= TARGETS["pandas_vs_detect_time_min"]),
        "detect >= 20x less memory than pandas (peak RSS)":
            _check(ratios["pandas_vs_detect_peak_memory"], lambda v: v >= TARGETS["pandas_vs_detect_memory_min"]),
        "detect >= 20x less memory than pandas (work memory)":
            _check(ratios["pandas_vs_detect_work_memory"], lambda v: v >= TARGETS["pandas_vs_detect_memory_min"]),
        "repair with audit >= 50,000 rows/s":
            _check(ratios["repair_rows_per_second"], lambda v: v >= TARGETS["repair_rows_per_second_min"]),
    }


def _scale_verdicts(out: dict) -> dict:
    """The goals at scale, for runs of 10M participants or more."""
    if out["participants"] < 10_000_000:
        return {}
    ratios, steps = out["ratios"], out["steps"]
    spread = out["drift_rooms"] >= 1
    limit = TARGETS["detect_vs_floor_max_spread" if spread else "detect_vs_floor_max_concentrated"]
    peak = max(s["peak_rss_mb"] for k, s in steps.items() if k in ("detect", "detect_sharded", "repair", "incremental"))
    tasks = steps.get("airflow_tasks", {})
    return {
        f"detect <= {limit:g}x the floor ({'spread' if spread else 'concentrated'} drift)":
            _check(ratios["detect_vs_floor"], lambda v: v <= limit),
        "repair with audit >= 100,000 rows/s":
            _check(ratios["repair_rows_per_second"], lambda v: v >= TARGETS["repair_rows_per_second_min_10m"]),
        f"chatsync step peak RSS < {TARGETS['task_peak_rss_mb_max']} MB":
            _check(peak, lambda v: v < TARGETS["task_peak_rss_mb_max"]),
        f"Airflow detect task peak RSS < {TARGETS['task_peak_rss_mb_max']} MB":
            _check(tasks.get("detect_task_peak_rss_mb"), lambda v: v < TARGETS["task_peak_rss_mb_max"]),
        f"Airflow validate task (Great Expectations) peak RSS < {TARGETS['task_peak_rss_mb_max']} MB":
            _check(tasks.get("validate_task_peak_rss_mb"), lambda v: v < TARGETS["task_peak_rss_mb_max"]),
    }


LABELS = {"floor": "(a) count(*) both tables (floor)", "foj": "(b) bare FULL OUTER JOIN",
          "pandas": "(c) pandas read_sql + merge", "pandas_copy": "    pandas COPY+read_csv + merge",
          "write_overhead": "    app single-row UPDATEs, triggers on",
          "fold": "    fold of the trigger log (between runs)",
          "detect": "(d) chatsync detect (full)",
          "detect_sharded": "    the same as the DAG's mapped shards",
          "bare_repair": "    bare INSERT/UPDATE/DELETE (floor)", "repair": "(e) chatsync repair + audit",
          "incremental": "    chatsync detect (incremental, 1% changed)",
          "airflow_tasks": "    GX validate, as an Airflow task process"}


def format_table(out: dict) -> str:
    layout = "spread" if out.get("drift_rooms", 1.0) >= 1 else f"in {out['drift_rooms']:.0%} of the rooms"
    source = ("fingerprints maintained by triggers" if out.get("maintained_fingerprints")
              else "no maintained fingerprints")
    lines = [f"chatsync bench: {out['participants']:,} participants, {out['rooms']:,} rooms, drift "
             f"{out['drift']} ({layout}), {source}, PostgreSQL {out['postgres']}, median of "
             f"{out['repeat']}",
             f"{'step':44} {'seconds':>9} {'rows':>10} {'peak RSS MB':>12} {'work MB':>8}"]
    for key, label in LABELS.items():
        s = out["steps"].get(key)
        if s:
            lines.append(f"{label:44} {s['seconds']:9.3f} {s['rows']:>10,} {s['peak_rss_mb']:12.1f} "
                         f"{s['work_mb']:8.1f}")
    if each := out["steps"]["repair"].get("seconds_each"):
        rows = out["steps"]["repair"]["rows"]
        lines.append("chatsync repair, each trial: " + ", ".join(f"{rows / s:,.0f}" for s in each if s) + " rows/s")
    if tasks := out["steps"].get("airflow_tasks"):
        lines.append(f"Airflow task processes (Task SDK loaded: {tasks['task_sdk_rss_mb']:.0f} MB): detect tasks peak "
                     f"{tasks['detect_task_peak_rss_mb']:.0f} MB, validate (GX) peak "
                     f"{tasks['validate_task_peak_rss_mb']:.0f} MB")
    if w := out["steps"].get("write_overhead"):
        lines.append(f"Fingerprint triggers on application writes: a single-row UPDATE takes "
                     f"{w['ms_per_statement_with_triggers']} ms against {w['ms_per_statement_without_triggers']} ms "
                     f"without")
    lines.append("ratios:")
    lines += [f"  {k:32} {v}" for k, v in out["ratios"].items()]
    lines.append("targets:")
    lines += [f"  {v:5} {k}" for k, v in out["targets"].items()]
    return "\n".join(lines)


def save(out: dict, stem: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}_{out['participants']}_{datetime.now():%Y%m%dT%H%M%S}.json"
        path.write_text(json.dumps(out, indent=2, default=str))
        out["saved_to"] = str(path)
    except OSError as exc:  # a read-only checkout still prints its numbers
        log.warning("could not save the benchmark result: %s", exc)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
