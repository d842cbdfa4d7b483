"""``chatsync bench --keys uuid``: the same data keyed by bigint and by uuid, measured in one run.

The simulator fills one scratch database (the reference schema, bigint keys); a second is copied
from it (a FILE_COPY template) and its room and user ids replaced by uuids made from them
(``bench_keys_to_uuid.sql``: random-looking, as uuid v4 keys are), ``chatsync init`` then giving
its ops tables uuid key columns. Both databases' application tables are rewritten (VACUUM FULL),
so neither carries the other's bloat. On each, in fresh child processes as ``chatsync bench``:

  floor        ``count(*)`` of both participant tables (reading the data once)
  foj          the bare FULL OUTER JOIN diff query, differing keys fetched
  detect       chatsync's detect, scope full
  bare_repair  the same changes as plain statements, no audit (rolled back)
  repair       chatsync's repair of the detect run

Each key type gets its ratios to its own floors (detect to floor and to the bare join, repair to
the bare repair); then uuid to bigint for every step, beside the tables' size ratio. The bare
statements pay what uuid keys cost the data itself (their width, and their random order: rows
keyed by uuid are not stored in key order). The target: uuid keys cost chatsync what their width
costs, no more: its uuid/bigint time within 1.1x of the participant tables' uuid/bigint size.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import one
from chatsync_devtools.bench.consistency import (
    MEMBERS_PER_ROOM,
    RESULTS_DIR,
    _bench_settings,
    _repeated_repairs,
    _run_child,
    drop_database,
    save,
    scratch_database,
)

log = logging.getLogger("chatsync.bench")
KEY_TYPES = ("bigint", "uuid")
APP_TABLES = ("room.rooms", "room.room_participants", "chat.chat_rooms", "chat.chat_participants")
STEPS = ("floor", "foj", "detect", "bare_repair", "repair")
TARGET_UUID_OVERHEAD_MAX = 1.1  # uuid/bigint time at most this times the uuid/bigint size of the data


def _settle(url: str) -> dict:
    """Rewrite the application tables (as a fresh load leaves them), analyse; their sizes in bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in APP_TABLES:
            conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(sql.SQL(table)))
        conn.execute("VACUUM ANALYZE")
        return {t: one(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)))[0] for t in APP_TABLES}


def _measure(server_url: str, name: str, url: str, repeat: int) -> dict:
    _run_child("floor", url, repeat=1)  # warm the cache once, untimed
    steps = {"floor": _run_child("floor", url, repeat), "foj": _run_child("foj", url, repeat),
             "detect": _run_child("detect", url, repeat)}
    steps.update(_repeated_repairs(server_url, name, url, steps["detect"]["run_id"], repeat))
    return steps


def _div(a, b):
    return round(a / b, 2) if a is not None and b else None


def run_keys_bench(settings: Settings, participants: int, drift: float, seed: int = 7, repeat: int = 3,
                   members: int = MEMBERS_PER_ROOM, drift_rooms: float = 1.0,
                   results_dir: Path | None = None) -> dict:
    from chatsync.db.migrations import migrate
    from chatsync.model import catalog
    from chatsync_devtools.simulate import simulate
    from chatsync_devtools.statements import sql_file

    server_url = settings.require_database()
    names = {k: f"chatsync_bench_{k}_{os.getpid()}" for k in KEY_TYPES}
    started = time.perf_counter()
    urls: dict[str, str] = {}
    try:
        urls["bigint"] = scratch_database(server_url, names["bigint"])
        bigint = _bench_settings(settings, urls["bigint"])
        migrate(bigint, reference_schema=True)
        report = simulate(bigint, rooms=max(participants // members, 1), members=members, drift=drift, seed=seed,
                          drift_rooms=drift_rooms)
        with psycopg.connect(urls["bigint"], autocommit=True) as conn:
            server = one(conn.execute("SHOW server_version"))[0]
        urls["uuid"] = scratch_database(server_url, names["uuid"], template=names["bigint"])
        uuid_settings = _bench_settings(settings, urls["uuid"])
        with psycopg.connect(urls["uuid"], autocommit=True) as conn:
            t0 = time.perf_counter()
            conn.execute(sql_file(uuid_settings, "bench_keys_to_uuid"))
            log.info("bench: the uuid copy's keys converted in %.1fs", time.perf_counter() - t0)
        catalog.forget()
        migrate(uuid_settings)  # the ops tables' key columns become uuid
        sizes = {k: _settle(urls[k]) for k in KEY_TYPES}
        steps = {k: _measure(server_url, names[k], urls[k], repeat) for k in KEY_TYPES}
    finally:
        for name in names.values():
            drop_database(server_url, name)
    found = {k: steps[k]["detect"]["rows"] for k in KEY_TYPES}
    if found["bigint"] != found["uuid"]:
        raise RuntimeError(f"the bigint and uuid copies of one data set gave different findings: {found}")
    ratios = {k: {"detect_vs_floor": _div(s["detect"]["seconds"], s["floor"]["seconds"]),
                  "detect_vs_foj": _div(s["detect"]["seconds"], s["foj"]["seconds"]),
                  "foj_vs_floor": _div(s["foj"]["seconds"], s["floor"]["seconds"]),
                  "repair_vs_bare_repair": _div(s["repair"]["seconds"], s["bare_repair"]["seconds"])}
              for k, s in steps.items()}
    participant_bytes = {k: sizes[k]["room.room_participants"] + sizes[k]["chat.chat_participants"]
                         for k in KEY_TYPES}
    uuid_vs_bigint = {"participant_tables_bytes": _div(participant_bytes["uuid"], participant_bytes["bigint"]),
                      **{step: _div(steps["uuid"][step]["seconds"], steps["bigint"][step]["seconds"])
                         for step in STEPS}}
    # what uuid keys cost chatsync beyond their width: its time ratio to the tables' size ratio
    overhead = {step: _div(uuid_vs_bigint[step], uuid_vs_bigint["participant_tables_bytes"])
                for step in ("detect", "repair")}
    out = {"keys": "uuid", "participants": report.participants, "rooms": report.rooms, "drift": drift,
           "drift_rooms": drift_rooms, "seed": seed, "repeat": repeat, "postgres": server,
           "injected": report.injected, "findings": found["uuid"],
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "table_bytes": sizes, "steps": steps, "ratios": ratios, "uuid_vs_bigint": uuid_vs_bigint,
           "overhead_uuid_vs_bigint": overhead,
           "targets": {f"uuid/bigint {step} time within {TARGET_UUID_OVERHEAD_MAX}x of the tables' size ratio ({v})":
                       "met" if v is not None and v <= TARGET_UUID_OVERHEAD_MAX else "MISSED"
                       for step, v in overhead.items()},
           "total_seconds": round(time.perf_counter() - started, 1)}
    save(out, "bench_keys", results_dir or RESULTS_DIR)
    log.info("bench: done in %.0fs", out["total_seconds"])
    return out


LABELS = {"floor": "floor: count(*) of both participant tables", "foj": "bare FULL OUTER JOIN diff",
          "detect": "chatsync detect (full)", "bare_repair": "bare repair statements (no audit)",
          "repair": "chatsync repair"}


def format_table(out: dict) -> str:
    lines = [f"chatsync bench --keys uuid: {out['participants']:,} participants, {out['rooms']:,} rooms, drift "
             f"{out['drift']}, {out['findings']:,} findings on each copy, PostgreSQL {out['postgres']}, median of "
             f"{out['repeat']}",
             f"{'step':44} {'bigint s':>9} {'uuid s':>9} {'uuid/bigint':>12}"]
    for step, label in LABELS.items():
        a, b = out["steps"]["bigint"][step]["seconds"], out["steps"]["uuid"][step]["seconds"]
        lines.append(f"{label:44} {a:9.3f} {b:9.3f} {out['uuid_vs_bigint'][step]:>12}")
    width = out["uuid_vs_bigint"]["participant_tables_bytes"]
    lines.append(f"{'participant tables, bytes':44} {'':9} {'':9} {width:>12}")
    lines.append("ratios to the floors:")
    for key_type, ratios in out["ratios"].items():
        lines.append(f"  {key_type:7} " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    lines.append("targets:")
    lines += [f"  {v:6} {k}" for k, v in out["targets"].items()]
    return "\n".join(lines)
