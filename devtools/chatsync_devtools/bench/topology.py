"""``chatsync bench --topology two-databases``: the room side in a database of its own.

The simulator fills one scratch database (both sides); two more are copied from it (FILE_COPY
templates): a room database holding only the room tables and a chat database holding the chat
tables and chatsync's schema. Then, each in a fresh child process (its peak RSS its own):

  floor         ``count(*)`` of both participant tables
  same_db       chatsync's detect (full) with both sides in one database
  same_db_changed  the same after ``changed_rooms`` rooms changed on the room side (as two_changed)
  two_cold      the same across the two databases with the copy of the room side emptied first:
                the whole room side travels (a first pass)
  two_warm      across the two databases, the copy taken by an earlier pass: per-room
                fingerprints travel, no row (the hourly steady state, chat-side drift included)
  two_changed   the same after ``changed_rooms`` rooms changed on the room side since that pass:
                those rooms' rows travel (the change is undone after each run, untimed)
  two_fingerprints  two_warm with fingerprints maintained by triggers on the copy and the chat table
                (installed after the drift: the rooms it touched are row-diffed, as the log cannot
                explain them)
  fdw           postgres_fdw: today's one-database detect over foreign tables, and the transport
                (rows, per-room fingerprints) through foreign tables against the binary COPY stream
  reladiff      reladiff's hashdiff on the same two databases (participants, the compared columns),
                run by uvx from its own environment (pinned), tuned as its documentation advises

Bytes moved: what chatsync streamed out of the room database (binary COPY), and for reladiff
what its process read from both databases (``rchar`` of /proc/self/io: it reads both sides).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import one
from chatsync.model.mapping import ROOM_TABLES
from chatsync_devtools.bench.consistency import (
    MEMBERS_PER_ROOM,
    RESULTS_DIR,
    STEP_TIMEOUT_SECONDS,
    _bench_settings,
    _rss_mb,
    drop_database,
    save,
    scratch_database,
)

log = logging.getLogger("chatsync.bench")

RELADIFF = "reladiff[postgresql]==0.6.0"
RELADIFF_BISECTION_THRESHOLD = 131_072  # its docs: raise it when the network is fast (here: local)
RELADIFF_VIEW = "bench_reladiff_participants"  # the room side as the chat side spells it (banned)
TARGETS = {"two_vs_reladiff_min": 5.0, "two_vs_same_db_max": 2.0, "task_peak_rss_mb_max": 300}
# Read inside reladiff's process: its own peak RSS and the bytes it read (both databases' replies).
RELADIFF_WRAPPER = """
import atexit, json, sys
def read_bytes():
    return int(dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())['rchar'])
import psycopg2, reladiff.databases.postgresql
from reladiff.__main__ import main
start = read_bytes()  # after the imports: what follows is mostly the databases' replies
def report():
    status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)
    sys.stderr.write('RELADIFF_STATS ' + json.dumps({'peak_rss_mb': int(status['VmHWM'].split()[0]) / 1024,
                                                     'rchar': read_bytes() - start}) + '\\n')
atexit.register(report)
sys.argv = ['reladiff'] + sys.argv[1:]
main()
"""


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _detect_full(settings: Settings) -> dict:
    from chatsync.consistency.detect import detect
    from chatsync.consistency.scope import Scope
    from chatsync.roomside import transfer

    before = transfer.bytes_streamed()
    t0 = time.perf_counter()
    result = detect(settings, Scope("full"), triggered_by="bench")
    seconds = time.perf_counter() - t0
    with psycopg.connect(settings.require_database()) as conn:  # reladiff compares the participants only
        keys = one(conn.execute(sql.SQL("SELECT count(DISTINCT (room_id, user_id)) FROM {} WHERE run_id = %s "
                                        "AND user_id IS NOT NULL").format(
            sql.Identifier(settings.ops_schema, "inconsistencies")), (result.run_id,)))[0]
    return {"seconds": seconds, "findings": result.total, "keys": keys,
            "bytes": transfer.bytes_streamed() - before, "run_id": result.run_id}


def _forget(settings: Settings, run_id: int) -> None:
    with psycopg.connect(settings.require_database(), autocommit=True) as conn:
        for table in ("inconsistencies", "runs"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(
                sql.Identifier(settings.ops_schema, table)), (run_id,))


def _empty_copy(settings: Settings) -> None:
    with psycopg.connect(settings.require_database(), autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}, {}, {}").format(*(sql.Identifier(settings.ops_schema, t) for t in (
            "mirror_room_rooms", "mirror_room_participants", "mirror_fingerprints"))))
        conn.execute("VACUUM ANALYZE")


def _change_rooms(settings: Settings, rooms: int, round_: int) -> None:
    """Change one permission bit of every participant of `rooms` rooms on the room side."""
    with psycopg.connect(settings.room_url(), autocommit=True) as conn:
        conn.execute("UPDATE room.room_participants SET permissions = permissions # 1, updated_at = clock_timestamp() "
                     "WHERE room_id IN (SELECT id FROM room.rooms ORDER BY hashint8extended(id, %s) LIMIT %s)",
                     (round_, rooms))


def _step(settings: Settings, step: str, repeat: int, changed_rooms: int) -> dict:
    """Run one step `repeat` times (each preparation untimed) and keep the median."""
    from chatsync.consistency import fingerprints
    from chatsync.roomside import refresh

    if step in ("two_warm", "two_changed", "two_fingerprints"):
        refresh.sync(settings)  # the earlier pass that took the copy
        with psycopg.connect(settings.require_database(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # as autovacuum leaves a copy between hourly passes
    if step == "two_fingerprints":
        fingerprints.install(settings)
    runs = []
    for i in range(repeat):
        if step == "two_cold":
            _empty_copy(settings)
        elif step in ("two_changed", "same_db_changed"):
            _change_rooms(settings, changed_rooms, i)
        done = _detect_full(settings)
        runs.append(done)
        _forget(settings, done["run_id"])
        if step in ("two_changed", "same_db_changed"):
            _change_rooms(settings, changed_rooms, i)  # the same bit again: the room side as it was
    last = runs[-1]
    return {"seconds": _median([r["seconds"] for r in runs]), "seconds_each": [r["seconds"] for r in runs],
            "findings": last["findings"], "keys": last["keys"], "bytes": int(_median([r["bytes"] for r in runs]))}


FDW_SCHEMA = "bench_room_fdw"


def _fdw(settings: Settings, repeat: int) -> dict:
    """postgres_fdw, the transport a user might pick instead of streaming through the task: the
    room tables as foreign tables in the chat database. Measured on the same rows: the room
    participants moved into a chat-database table through the foreign table, and by chatsync's
    binary COPY stream; the per-room fingerprints through the foreign table (is the aggregate
    pushed down?) and by chatsync's stream; and today's one-database detect over the foreign
    tables. Needs a role that may create the extension and a user mapping."""
    import tempfile

    import yaml

    from chatsync.roomside import refresh, transfer

    room = psycopg.conninfo.conninfo_to_dict(settings.room_url())
    chat = psycopg.connect(settings.require_database(), autocommit=True)
    try:
        chat.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        chat.execute("DROP SERVER IF EXISTS bench_room CASCADE")
        options = {k: str(room[k]) for k in ("host", "port", "dbname") if room.get(k)}
        chat.execute(sql.SQL("CREATE SERVER bench_room FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in
                               {**options, "fetch_size": "10000"}.items())))
        user = {"user": str(room.get("user", "postgres")), **({"password": str(room["password"])}
                                                              if room.get("password") else {})}
        chat.execute(sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER bench_room OPTIONS ({})").format(
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in user.items())))
        chat.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(FDW_SCHEMA)))
        chat.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(FDW_SCHEMA)))
        chat.execute(sql.SQL("IMPORT FOREIGN SCHEMA room FROM SERVER bench_room INTO {}").format(
            sql.Identifier(FDW_SCHEMA)))
    except psycopg.Error as exc:
        chat.close()
        return {"seconds": None, "skipped": f"postgres_fdw unavailable here: {' '.join(str(exc).split())}"}
    shape = next(x for x in refresh.shapes(settings) if x.entity.has_user)
    foreign = replace(shape.source, schema=FDW_SCHEMA)
    fdw_shape = replace(shape, source=foreign)
    target = sql.SQL("pg_temp.bench_rows ({})").format(shape.column_list())
    chat.execute(sql.SQL("CREATE TEMP TABLE bench_rows (LIKE {})").format(shape.copy.ident))
    chat.execute("CREATE TEMP TABLE bench_fp (room_id bigint, row_count bigint, hash bigint)")
    out: dict = {}

    def timed(name: str, fn) -> None:
        times = []
        for _ in range(repeat):
            chat.execute("TRUNCATE pg_temp.bench_rows, pg_temp.bench_fp")
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = _median(times)

    every = sql.SQL("TRUE")
    timed("rows_fdw", lambda: chat.execute(sql.SQL("INSERT INTO {} {}").format(target, fdw_shape.source_select(every))))
    with psycopg.connect(settings.room_url()) as room_conn:
        timed("rows_copy", lambda: transfer.stream(room_conn, shape.source_select(every), None, chat, target,
                                                    transfer.Moved()))
        timed("fingerprints_copy", lambda: transfer.stream(
            room_conn, shape.source_fingerprints(every), None, chat,
            sql.SQL("pg_temp.bench_fp (room_id, row_count, hash)"), transfer.Moved()))
    fp_fdw = sql.SQL("INSERT INTO pg_temp.bench_fp {}").format(fdw_shape.source_fingerprints(every))
    timed("fingerprints_fdw", lambda: chat.execute(fp_fdw))
    plan = "\n".join(r[0] for r in chat.execute(sql.SQL("EXPLAIN (VERBOSE) {}").format(
        fdw_shape.source_fingerprints(every))).fetchall())
    out["fingerprints_fdw_pushed_down"] = "Aggregate on" in plan
    # today's detect, both sides in "one" database: the room tables mapped to the foreign tables
    mapping = yaml.safe_load(Path(settings.mapping_path).read_text())
    for key in ROOM_TABLES:
        mapping[key]["table"] = f"{FDW_SCHEMA}.{mapping[key]['table'].split('.', 1)[1]}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(mapping, f)
    over_fdw = replace(settings, room_database_url=None, mapping_path=f.name)
    times, keys = [], 0
    for _ in range(repeat):
        done = _detect_full(over_fdw)
        times.append(done["seconds"])
        keys = done["keys"]
        _forget(over_fdw, done["run_id"])
    os.unlink(f.name)
    chat.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(FDW_SCHEMA)))
    chat.execute("DROP SERVER bench_room CASCADE")
    chat.close()
    return {"seconds": _median(times), "keys": keys, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                        for k, v in out.items()}}


def _floor(settings: Settings, repeat: int) -> dict:
    times = []
    with psycopg.connect(settings.require_database()) as conn:
        for _ in range(repeat):
            t0 = time.perf_counter()
            conn.execute("SELECT (SELECT count(*) FROM room.room_participants), "
                         "(SELECT count(*) FROM chat.chat_participants)").fetchone()
            times.append(time.perf_counter() - t0)
    return {"seconds": _median(times), "seconds_each": times}


def _child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m chatsync_devtools.bench.topology")
    p.add_argument("step")
    p.add_argument("--database-url", required=True)
    p.add_argument("--room-database-url")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--changed-rooms", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = replace(_bench_settings(Settings.from_env(), args.database_url),
                       room_database_url=args.room_database_url)
    import chatsync.consistency.detect  # noqa: F401 - counted in the baseline
    base = _rss_mb()
    if args.step == "floor":
        out = _floor(settings, args.repeat)
    elif args.step == "fdw":
        out = _fdw(settings, args.repeat)
    else:
        out = _step(settings, args.step, args.repeat, args.changed_rooms)
    out["baseline_rss_mb"], out["peak_rss_mb"] = base, _rss_mb()
    print(json.dumps(out, default=str))


def _run_child(step: str, url: str, room_url: str | None = None, repeat: int = 1, changed_rooms: int = 0) -> dict:
    cmd = [sys.executable, "-m", "chatsync_devtools.bench.topology", step, "--database-url", url,
           "--repeat", str(repeat), "--changed-rooms", str(changed_rooms)]
    if room_url:
        cmd += ["--room-database-url", room_url]
    log.info("bench: %s (x%d)", step, repeat)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark step {step} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _uvx() -> str:
    for candidate in (Path(".uv/bin/uvx"), Path(sys.executable).with_name("uvx")):
        if candidate.exists():
            return str(candidate)
    return "uvx"


def _reladiff(room_url: str, chat_url: str, threads: int, timeout: float, repeat: int) -> dict:
    """reladiff hashdiff across the two databases: the participants, keyed (room_id, user_id),
    comparing role, permissions and banned; the keys it reports are counted."""
    def uri(url: str) -> str:
        d = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items() if v is not None}
        auth = d.get("user", "postgres") + (f":{d['password']}" if d.get("password") else "")
        return f"postgresql://{auth}@{d.get('host', '127.0.0.1')}:{d.get('port', '5432')}/{d['dbname']}"

    options = ["-k", "room_id", "-k", "user_id", "-c", "role", "-c", "permissions", "-c", "banned",
               "-a", "hashdiff", "-j", str(threads), "--bisection-factor", "32",
               "--bisection-threshold", str(RELADIFF_BISECTION_THRESHOLD), "--assume-unique-key",
               "--skip-sort-results", "--json"]
    cmd = [_uvx(), "--quiet", "--from", RELADIFF, "python", "-c", RELADIFF_WRAPPER,
           uri(room_url), f"room.{RELADIFF_VIEW}", uri(chat_url), "chat.chat_participants", *options]
    subprocess.run([_uvx(), "--quiet", "--from", RELADIFF, "python", "-c", "import reladiff"],
                   check=True, capture_output=True, timeout=600)  # its environment, installed untimed
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"skipped": f"exceeded the time limit of {timeout:.0f}s", "options": " ".join(options)}
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"reladiff failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        keys = set()
        for line in done.stdout.splitlines():  # ["+" or "-", [room_id, user_id, compared values...]]
            if line.startswith("["):
                _sign, values = json.loads(line)
                keys.add(tuple(values[:2]))
        stats: dict = next((json.loads(line.split(" ", 1)[1]) for line in done.stderr.splitlines()
                      if line.startswith("RELADIFF_STATS ")), {})
        runs.append({"seconds": seconds, "keys": len(keys), "peak_rss_mb": stats.get("peak_rss_mb"),
                     "bytes": stats.get("rchar")})
    return {"seconds": _median([float(r["seconds"] or 0) for r in runs]), "seconds_each": [r["seconds"] for r in runs],
            "keys": runs[-1]["keys"], "peak_rss_mb": runs[-1]["peak_rss_mb"], "bytes": runs[-1]["bytes"],
            "options": " ".join(options), "version": RELADIFF}


def _split_databases(server_url: str, base: str, one_url: str) -> tuple[str, str]:
    """A room database and a chat database, copied from the one-database scratch database."""
    room_url = scratch_database(server_url, f"{base}_room", template=base)
    chat_url = scratch_database(server_url, f"{base}_chat", template=base)
    with psycopg.connect(room_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA chat CASCADE")
        conn.execute("DROP SCHEMA chatsync CASCADE")
        conn.execute(sql.SQL("CREATE VIEW room.{} AS SELECT room_id, user_id, role, permissions, "
                             "banned_at IS NOT NULL AS banned FROM room.room_participants").format(
            sql.Identifier(RELADIFF_VIEW)))
        conn.execute("VACUUM ANALYZE")
    with psycopg.connect(chat_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA room CASCADE")
        conn.execute("VACUUM ANALYZE")
    return room_url, chat_url


def run_topology_bench(settings: Settings, participants: int, drift: float, seed: int = 42, repeat: int = 3,
                       drift_rooms: float = 1.0, members: int = MEMBERS_PER_ROOM, keep: bool = False,
                       skip_reladiff: bool = False, reladiff_timeout: float = 900.0,
                       changed_room_fraction: float = 0.01, results_dir: Path | None = None) -> dict:
    from chatsync.db.migrations import migrate
    from chatsync_devtools.simulate import simulate

    server_url = settings.require_database()
    base = f"chatsync_bench_{os.getpid()}"
    names = [base, f"{base}_room", f"{base}_chat"]
    started = time.perf_counter()
    try:
        one_url = scratch_database(server_url, base)
        single = _bench_settings(settings, one_url)
        migrate(single, reference_schema=True)
        rooms = max(participants // members, 1)
        report = simulate(single, rooms=rooms, members=members, drift=drift, seed=seed, drift_rooms=drift_rooms)
        with psycopg.connect(one_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            server = one(conn.execute("SHOW server_version"))[0]
        room_url, chat_url = _split_databases(server_url, base, one_url)
        migrate(replace(single, database_url=chat_url, room_database_url=room_url))  # the copies' tables
        changed = max(1, round(report.rooms * changed_room_fraction))
        _run_child("floor", one_url)  # warm the cache once, untimed
        steps = {"floor": _run_child("floor", one_url, repeat=repeat),
                 "same_db": _run_child("same_db", one_url, repeat=repeat),
                 "same_db_changed": _run_child("same_db_changed", one_url, repeat=repeat, changed_rooms=changed)}
        for step in ("two_cold", "two_warm", "two_changed", "two_fingerprints", "fdw"):
            steps[step] = _run_child(step, chat_url, room_url, repeat=repeat, changed_rooms=changed)
        if not skip_reladiff:
            steps["reladiff"] = _reladiff(room_url, chat_url, threads=max(4, 2 * (os.cpu_count() or 1)),
                                          timeout=reladiff_timeout, repeat=repeat)
    finally:
        if not keep:
            for name in names:
                drop_database(server_url, name)
    out = {"topology": "two-databases", "participants": report.participants, "rooms": report.rooms,
           "drift": drift, "drift_rooms": drift_rooms, "seed": seed, "repeat": repeat, "postgres": server,
           "changed_rooms": changed, "injected": report.injected, "scratch_databases": names,
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "steps": steps, "total_seconds": round(time.perf_counter() - started, 1)}
    out["ratios"] = _ratios(steps)
    out["targets"] = _verdicts(out)
    save(out, "bench_two_databases", results_dir or RESULTS_DIR)
    return out


def _ratios(steps: dict) -> dict:
    def div(a, b):
        return round(a / b, 2) if a is not None and b else None

    floor, same = steps["floor"]["seconds"], steps["same_db"]["seconds"]
    reladiff = steps.get("reladiff", {}).get("seconds")
    out = {f"{k}_vs_floor": div(steps[k]["seconds"], floor) for k in ("same_db", "two_cold", "two_warm",
                                                                     "two_changed", "two_fingerprints", "fdw")}
    out.update({f"{k}_vs_same_db": div(steps[k]["seconds"], same) for k in ("two_cold", "two_warm",
                                                                         "two_fingerprints", "fdw")})
    out["two_changed_vs_same_db_changed"] = div(steps["two_changed"]["seconds"], steps["same_db_changed"]["seconds"])
    out.update({f"reladiff_vs_{k}": div(reladiff, steps[k]["seconds"]) for k in ("two_cold", "two_warm",
                                                                              "two_changed", "two_fingerprints")})
    out["reladiff_vs_floor"] = div(reladiff, floor)
    return out


def _verdicts(out: dict) -> dict:
    r, steps = out["ratios"], out["steps"]

    def check(value, ok) -> str:
        return "n/a" if value is None else ("PASS" if ok(value) else "MISS")

    peak = max(steps[k]["peak_rss_mb"] for k in ("two_cold", "two_warm", "two_changed", "two_fingerprints"))
    return {
        "two-database detect (warm) >= 5x faster than tuned reladiff hashdiff":
            check(r["reladiff_vs_two_warm"], lambda v: v >= TARGETS["two_vs_reladiff_min"]),
        "two-database detect (first pass, whole copy) >= 5x faster than tuned reladiff hashdiff":
            check(r["reladiff_vs_two_cold"], lambda v: v >= TARGETS["two_vs_reladiff_min"]),
        "two-database detect (warm) <= 2x same-database detect":
            check(r["two_warm_vs_same_db"], lambda v: v <= TARGETS["two_vs_same_db_max"]),
        "two-database detect (rooms changed) <= 2x same-database detect on the same data":
            check(r["two_changed_vs_same_db_changed"], lambda v: v <= TARGETS["two_vs_same_db_max"]),
        f"chatsync process peak RSS < {TARGETS['task_peak_rss_mb_max']} MB":
            check(peak, lambda v: v < TARGETS["task_peak_rss_mb_max"]),
        "bytes moved when rooms changed <= 10% of the first pass's":
            check(steps["two_changed"]["bytes"] / max(steps["two_cold"]["bytes"], 1), lambda v: v <= 0.10),
    }


LABELS = {"floor": "count(*) both tables (floor)", "same_db": "chatsync detect, one database",
          "same_db_changed": "one database, {changed} rooms changed on the room side",
          "two_cold": "two databases, first pass (whole copy)", "two_warm": "two databases, copy current",
          "two_changed": "two databases, {changed} rooms changed on the room side",
          "two_fingerprints": "two databases, maintained fp",
          "fdw": "one-database detect over postgres_fdw",
          "reladiff": "reladiff hashdiff, two databases"}


def format_table(out: dict) -> str:
    layout = "spread" if out.get("drift_rooms", 1.0) >= 1 else f"in {out['drift_rooms']:.0%} of the rooms"
    lines = [f"chatsync bench --topology two-databases (keys: differing participants): {out['participants']:,} "
             f"participants, {out['rooms']:,} rooms, "
             f"drift {out['drift']} ({layout}), PostgreSQL {out['postgres']}, median of {out['repeat']}",
             f"{'step':52} {'seconds':>9} {'keys':>8} {'MB moved':>9} {'peak RSS MB':>12}"]
    for key, label in LABELS.items():
        s = out["steps"].get(key)
        if not s:
            continue
        if "skipped" in s:
            lines.append(f"{label:52} skipped: {s['skipped']}")
            continue
        moved = f"{s['bytes'] / 1e6:9.2f}" if s.get("bytes") is not None else f"{'':9}"
        keys = f"{s['keys']:>8,}" if s.get("keys") is not None else f"{'':8}"
        rss = f"{s['peak_rss_mb']:12.1f}" if s.get("peak_rss_mb") is not None else ""
        lines.append(f"{label.format(changed=out['changed_rooms']):52} {s['seconds']:9.3f} {keys} {moved} {rss}")
    if (fdw := out["steps"].get("fdw")) and "skipped" not in fdw:
        lines.append(f"transport, the room participants into the chat database: postgres_fdw {fdw['rows_fdw']:.3f}s, "
                     f"binary COPY stream {fdw['rows_copy']:.3f}s; their per-room fingerprints: postgres_fdw "
                     f"{fdw['fingerprints_fdw']:.3f}s (aggregate pushed down: "
                     f"{'yes' if fdw['fingerprints_fdw_pushed_down'] else 'no'}), COPY {fdw['fingerprints_copy']:.3f}s")
    if rd := out["steps"].get("reladiff"):
        lines.append(f"reladiff ({rd.get('version', RELADIFF)}): {rd.get('options')}; MB moved = bytes its process "
                     "read from both databases")
    lines.append("ratios:")
    lines += [f"  {k:34} {v}" for k, v in out["ratios"].items()]
    lines.append("targets:")
    lines += [f"  {v:5} {k}" for k, v in out["targets"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
