"""The two-database topology: the room side in a database (or server) of its own, read only.

Both topologies run on the same generated data and must give the same findings, repairs, audit,
rollback and validation; the room side's copy moves only the rooms that differ; faults of the
room database (unreachable, lost mid-stream, a role that can only SELECT) are survived or said.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from conftest import REPO, empty_tables, free_port, wait_until
from psycopg import sql

from chatsync.consistency.detect import detect
from chatsync.consistency.engine import check as check_pass
from chatsync.consistency.repair import repair
from chatsync.consistency.rollback import rollback
from chatsync.consistency.scope import Scope
from chatsync.errors import TransientError
from chatsync.roomside import refresh, transfer
from chatsync_devtools.simulate import simulate

ROOM_ROWS = {"rooms": "SELECT id, status, is_public, chat_enabled, archived_at IS NOT NULL FROM room.rooms",
             "participants": "SELECT room_id, user_id, role, permissions, banned_at IS NOT NULL "
                             "FROM room.room_participants"}
CHAT_ROWS = {"rooms": "SELECT room_id, status, is_public, chat_enabled, archived FROM chat.chat_rooms",
             "participants": "SELECT room_id, user_id, role, permissions, banned FROM chat.chat_participants"}


def check(settings, scope: Scope, **options) -> dict:
    return check_pass(settings, scope, **options).to_dict()


def differences(settings) -> dict[str, int]:
    """Independent of chatsync's SQL: rows that differ between the room database and the chat
    database, compared in Python."""
    out = {}
    with psycopg.connect(settings.room_url()) as room, psycopg.connect(settings.database_url) as chat:
        for name in ROOM_ROWS:
            truth = set(room.execute(ROOM_ROWS[name]).fetchall())
            copy = set(chat.execute(CHAT_ROWS[name]).fetchall())
            out[name] = len(truth ^ copy)
    return out


def findings(settings, run_id: int) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT kind, room_id, user_id, status FROM chatsync.inconsistencies WHERE run_id = %s "
                            "ORDER BY 1, 2, 3", (run_id,)).fetchall()


def audit(settings, run_id: int) -> list[tuple]:
    """The run's audit, without the timestamps a repair writes (clock_timestamp differs)."""
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT entity, action, room_id, user_id, before - 'updated_at', after - 'updated_at', "
            "rolled_back_by IS NOT NULL FROM chatsync.repair_audit WHERE run_id = %s ORDER BY 1, 2, 3, 4",
            (run_id,)).fetchall()


def chat_tables(settings) -> list[list[tuple]]:
    with psycopg.connect(settings.database_url) as conn:
        return [conn.execute("SELECT room_id, status, is_public, chat_enabled, archived FROM chat.chat_rooms "
                             "ORDER BY 1").fetchall(),
                conn.execute("SELECT room_id, user_id, role, permissions, banned FROM chat.chat_participants "
                             "ORDER BY 1, 2").fetchall()]


def on_room_side(settings, statement: str, params=None) -> None:
    with psycopg.connect(settings.room_url(), autocommit=True) as conn:
        conn.execute(statement, params)


def on_chat_side(settings, statement: str, params=None) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(statement, params)


def test_both_topologies_give_the_same_findings_repairs_audit_and_rollback(clean_db, two_db):
    one_db, two = replace(clean_db, repair_max_fraction=1.0), replace(two_db, repair_max_fraction=1.0)
    reports = [simulate(s, rooms=120, members=15, drift=0.03, seed=7) for s in (one_db, two)]
    assert reports[0].injected == reports[1].injected and reports[0].participants == reports[1].participants
    assert differences(two)["participants"] > 0

    results = [check(s, Scope("full"), do_repair=True) for s in (one_db, two)]
    assert [r["status"] for r in results] == ["validated", "validated"]
    assert results[0]["counts"] == results[1]["counts"] == reports[0].injected
    assert findings(one_db, results[0]["run_id"]) == findings(two, results[1]["run_id"])
    assert audit(one_db, results[0]["run_id"]) == audit(two, results[1]["run_id"])
    assert results[1]["validation"]["passed"] and differences(two) == {"rooms": 0, "participants": 0}
    assert chat_tables(one_db) == chat_tables(two)

    undone = [rollback(s, r["run_id"]) for s, r in zip((one_db, two), results)]
    assert undone[0].restored == undone[1].restored == results[0]["repaired"]
    assert chat_tables(one_db) == chat_tables(two)
    assert audit(one_db, results[0]["run_id"]) == audit(two, results[1]["run_id"])

    # every scope, after the same changes on each side of both topologies
    for s in (one_db, two):  # (room_url(): the one database's own URL in one_db)
        on_room_side(s, "UPDATE room.room_participants SET role = 'GUEST', updated_at = now() "
                        "WHERE (room_id, user_id) IN (SELECT room_id, user_id FROM room.room_participants "
                        "WHERE role = 'MEMBER' ORDER BY 1, 2 LIMIT 3)")
        on_room_side(s, "DELETE FROM room.room_participants WHERE (room_id, user_id) = "
                        "(SELECT room_id, user_id FROM room.room_participants WHERE role = 'MEMBER' ORDER BY 1 DESC, 2 "
                        "LIMIT 1)")
        on_chat_side(s, "UPDATE chat.chat_participants SET permissions = 4095, updated_at = now() "
                       "WHERE (room_id, user_id) = (SELECT min(room_id), min(user_id) FROM chat.chat_participants "
                       "WHERE room_id = (SELECT max(room_id) FROM chat.chat_participants))")
    rooms = tuple(r[0] for r in chat_tables(one_db)[0][:40])
    some_keys = tuple(r[:2] for r in chat_tables(one_db)[1][::7])
    for scope in (Scope("incremental"), Scope("rooms", rooms=rooms), Scope("keys", rooms=rooms[:5],
                  participants=some_keys), Scope("range", room_range=(rooms[3], rooms[30])), Scope("full")):
        runs = [detect(s, scope) for s in (one_db, two)]
        assert runs[0].counts == runs[1].counts, scope
        assert findings(one_db, runs[0].run_id) == findings(two, runs[1].run_id), scope


def test_only_the_rooms_that_differ_travel(two_db):
    s = replace(two_db, repair_max_fraction=1.0)
    simulate(s, rooms=300, members=20, drift=0.02, seed=3)
    start = transfer.bytes_streamed()
    cold = check(s, Scope("full"), do_repair=True, do_validate=False)
    cold_bytes = transfer.bytes_streamed() - start
    assert cold["repaired"] > 0 and differences(s) == {"rooms": 0, "participants": 0}

    start = transfer.bytes_streamed()
    moved = refresh.sync(s)
    assert moved is not None and moved.rooms_differing == 0 and moved.rows == 0  # nothing changed: fingerprints only
    assert moved.rooms_compared == 600  # 300 rooms, in each of the two tables
    quiet_bytes = transfer.bytes_streamed() - start

    on_room_side(s, "UPDATE room.room_participants SET permissions = permissions # 8, updated_at = now() "
                    "WHERE room_id IN (SELECT id FROM room.rooms ORDER BY id LIMIT 3)")
    warm = refresh.sync(s)
    rows_of_three = psycopg.connect(s.room_url()).execute(
        "SELECT count(*) FROM room.room_participants WHERE room_id IN (SELECT id FROM room.rooms ORDER BY id LIMIT 3)"
    ).fetchone()[0]
    assert warm is not None and warm.rooms_differing == 3 and warm.rows == rows_of_three
    # three rooms of 300 travelled (plus each room's fingerprint), not the table
    assert quiet_bytes < warm.bytes < quiet_bytes + cold_bytes * 0.05
    fixed = check(s, Scope("full"), do_repair=True, do_validate=False)
    assert fixed["counts"]["permissions_mismatch"] > 0 and differences(s) == {"rooms": 0, "participants": 0}
    with psycopg.connect(s.database_url) as conn:  # one fingerprint per room of the copy
        assert conn.execute("SELECT count(*) FROM chatsync.mirror_fingerprints WHERE entity = 'participant'"
                            ).fetchone()[0] == 300


def check_paused_at(point: str, seconds: float, monkeypatch, tmp_path, settings, **options):
    """A full pass in a thread, stopped `seconds` at the fault point `point`: returns the thread
    and its summary-to-be once the pass is there."""
    import chatsync_faults

    marker = tmp_path / "paused"
    monkeypatch.setenv("CHATSYNC_FAULT_PAUSE_AT", point)
    monkeypatch.setenv("CHATSYNC_FAULT_PAUSE_SECONDS", str(seconds))
    monkeypatch.setenv("CHATSYNC_FAULT_MARKER", str(marker))
    chatsync_faults.rearm(point)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(check(settings, Scope("full"), **options)))
    worker.start()
    wait_until(marker.exists, 60, f"the pass at {point}")
    return worker, result


def _copied_role(settings, room: int, user: int) -> str:
    return psycopg.connect(settings.database_url).execute(
        "SELECT role FROM chatsync.mirror_room_participants WHERE room_id = %s AND user_id = %s",
        (room, user)).fetchone()[0]


def test_a_room_row_changed_while_it_streams_is_caught_by_the_next_pass(two_db, monkeypatch, tmp_path):
    s = replace(two_db, repair_max_fraction=1.0)
    simulate(s, rooms=50, members=10, drift=0.0, seed=5)
    check(s, Scope("full"), do_repair=True, do_validate=False)  # the copy is taken
    room, user = psycopg.connect(s.room_url()).execute(
        "SELECT room_id, user_id FROM room.room_participants WHERE role = 'MEMBER' ORDER BY 1, 2 LIMIT 1").fetchone()
    on_room_side(s, "UPDATE room.room_participants SET role = 'SPEAKER', updated_at = now() "
                    "WHERE room_id = %s AND user_id = %s", (room, user))
    worker, result = check_paused_at("room_copy:rows", 3, monkeypatch, tmp_path, s, do_validate=False)
    # the stream's snapshot is taken (SPEAKER): the room side changes the row again meanwhile
    on_room_side(s, "UPDATE room.room_participants SET role = 'MODERATOR', updated_at = now() "
                    "WHERE room_id = %s AND user_id = %s", (room, user))
    worker.join(120)
    monkeypatch.delenv("CHATSYNC_FAULT_PAUSE_AT")
    assert result["counts"]["role_mismatch"] == 1
    assert _copied_role(s, room, user) == "SPEAKER"  # one snapshot's rows, whole: never a mix
    # the copy's fingerprint is the snapshot's, the room database's is not: the next pass streams the room again
    moved = refresh.sync(s)
    assert moved is not None and moved.rooms_differing == 1
    assert _copied_role(s, room, user) == "MODERATOR"
    again = check(s, Scope("full"), do_repair=True)
    assert again["status"] == "validated" and differences(s) == {"rooms": 0, "participants": 0}


def test_a_concurrent_chat_write_is_never_overwritten(two_db):
    s = replace(two_db, repair_max_fraction=1.0)
    simulate(s, rooms=40, members=10, drift=0.05, seed=11)
    found = detect(s)
    key = psycopg.connect(s.database_url).execute(
        "SELECT room_id, user_id FROM chatsync.inconsistencies WHERE run_id = %s AND kind = 'role_mismatch' "
        "ORDER BY 1, 2 LIMIT 1", (found.run_id,)).fetchone()
    on_chat_side(s, "UPDATE chat.chat_participants SET role = 'ADMIN', updated_at = now() "
                    "WHERE room_id = %s AND user_id = %s", key)
    fixed = repair(s, found.run_id)
    assert fixed.skipped >= 1
    assert psycopg.connect(s.database_url).execute(
        "SELECT role FROM chat.chat_participants WHERE room_id = %s AND user_id = %s", key).fetchone()[0] == "ADMIN"


def test_an_unreachable_room_database_is_retried_then_said_and_nothing_is_written(two_db):
    s = replace(two_db, room_database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
                retry_attempts=2, retry_base_seconds=0.01)
    with pytest.raises(TransientError, match="cannot connect to the room database"):
        detect(s)
    with psycopg.connect(s.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM chatsync.inconsistencies").fetchone()[0] == 0
    # the CLI: one line naming the room database, and the transient exit code
    env = {**os.environ, "CHATSYNC_DATABASE_URL": s.database_url, "CHATSYNC_ROOM_DATABASE_URL": s.room_database_url,
           "CHATSYNC_RETRY_ATTEMPTS": "2", "CHATSYNC_RETRY_BASE_SECONDS": "0.01"}
    done = subprocess.run([str(REPO / ".venv" / "bin" / "chatsync"), "check"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "room database" in done.stderr.strip().splitlines()[-1]


def test_a_room_role_that_can_only_select_is_enough(two_db):
    from chatsync.ops import grants

    role = f"chatsync_test_{os.getpid()}_reader"
    with psycopg.connect(two_db.room_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role))) if admin.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() else None
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for statement in grants.room_statements(two_db, role, admin.info.dbname):
            admin.execute(statement)
    text = grants.as_text(two_db, role)  # `chatsync grants ROLE`: both databases' parts
    chat_part, room_part = text.split("-- in the room database")
    assert '"room"."rooms"' not in chat_part and '"chat"."chat_participants"' in chat_part
    assert 'GRANT SELECT ON "room"."room_participants"' in room_part and "INSERT" not in room_part
    try:
        reader = replace(two_db, repair_max_fraction=1.0,
                         room_database_url=psycopg.conninfo.make_conninfo(two_db.room_url(), user=role))
        simulate(two_db, rooms=30, members=8, drift=0.05, seed=2)
        done = check(reader, Scope("full"), do_repair=True)
        assert done["status"] == "validated" and differences(two_db) == {"rooms": 0, "participants": 0}
        with psycopg.connect(reader.room_url()) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE room.rooms SET status = 'LIVE'")
    finally:
        with psycopg.connect(two_db.room_url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# -- a second PostgreSQL server, started here ------------------------------------------------------

def _pg_bin(name: str) -> str:
    """The machine's PostgreSQL server binaries (Debian keeps them out of PATH), else PATH's."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"no {name} on this machine")
    return str(found)


class Server:
    """A PostgreSQL server of the test's own: initdb in a temporary folder, pg_ctl on a free port."""

    def __init__(self, root: Path):
        self.data, self.port = root / "data", free_port()
        self.log = root / "server.log"
        user = ["-U", "postgres"]
        run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        self.run_as = run_as
        if run_as:
            shutil.chown(root, "postgres")
        subprocess.run([*run_as, _pg_bin("initdb"), "-D", str(self.data), *user, "-A", "trust", "--no-sync"],
                       check=True, capture_output=True, timeout=120)

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                        "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
                        *args], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture(scope="module")
def room_server():
    # not under pytest's own temporary folder: the server's user must reach its data folder
    root = Path(tempfile.mkdtemp(prefix=f"chatsync_test_{os.getpid()}_pg_"))
    server = Server(root)
    server.ctl("start")
    yield server
    server.ctl("stop", "-m", "immediate")
    shutil.rmtree(root, ignore_errors=True)


def test_two_servers_and_the_room_server_lost_mid_stream(two_databases, room_server, monkeypatch, tmp_path, caplog):
    from chatsync.db.migrations import migrate

    s = replace(two_databases, room_database_url=room_server.url, repair_max_fraction=1.0, retry_base_seconds=0.2)
    migrate(s, reference_schema=True)  # the room tables on the second server, the copies re-shaped
    empty_tables(s)
    report = simulate(s, rooms=80, members=12, drift=0.03, seed=9)
    worker, result = check_paused_at("room_copy:stream", 2, monkeypatch, tmp_path, s, do_repair=True)
    room_server.ctl("restart", "-m", "immediate")  # the room server dies mid-stream and comes back
    worker.join(180)
    monkeypatch.delenv("CHATSYNC_FAULT_PAUSE_AT")
    assert "retrying" in caplog.text  # the pass was retried, its staging discarded with its transaction
    assert result["status"] == "validated" and result["counts"] == report.injected
    assert differences(s) == {"rooms": 0, "participants": 0}
    moved = refresh.sync(s)
    assert moved is not None and moved.rooms_differing == 0  # the copy is whole: nothing half-applied
    # the room server stopped: said, retried as transient, nothing written
    room_server.ctl("stop", "-m", "immediate")
    try:
        quick = replace(s, retry_attempts=2, retry_base_seconds=0.01)
        with pytest.raises(TransientError, match="room database"):
            detect(quick)
    finally:
        room_server.ctl("start")
    with psycopg.connect(s.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE status = 'open'").fetchone()[0] == 0
    migrate(two_databases)  # the copies shaped after the session's room database again


# -- the event worker, the cache and the DAGs across two databases ----------------------------------

@pytest.fixture
def two_db_redis(two_db, redis_settings):
    """The two-database settings with the test session's Redis prefix and a stream of their own."""
    return replace(two_db, redis_url=redis_settings.redis_url, redis_prefix=redis_settings.redis_prefix + "two:",
                   events_stream=redis_settings.redis_prefix + "two:events", retry_base_seconds=0.05)


def test_the_worker_reads_the_truth_of_each_event_in_the_room_database(two_db_redis):
    import redis

    from chatsync.events import cache
    from chatsync.events.worker import Worker
    from chatsync_devtools.room_service import emit

    s = two_db_redis
    simulate(s, rooms=25, members=8, drift=0.0, seed=4)
    cache.resync(s)
    client = redis.Redis.from_url(s.redis_url)
    try:
        emit(s, client, 200, seed=6)  # room-side changes in the room database, then their events
        assert differences(s)["participants"] + differences(s)["rooms"] > 0
        Worker(s, "w-two", block_ms=100).run(until_idle=True, max_seconds=90)
        assert differences(s) == {"rooms": 0, "participants": 0}
        assert cache.verify(s).total == 0
        with psycopg.connect(s.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM chatsync.sync_log").fetchone()[0] == 200
    finally:
        client.close()


def test_the_hourly_dag_in_its_mapped_shards_across_two_databases(two_db, dagbag, monkeypatch):
    import json

    s = two_db
    report = simulate(s, rooms=100, members=50, drift=0.005, seed=21)
    for name, url in (("AIRFLOW_CONN_CHATSYNC_DB", s.database_url), ("AIRFLOW_CONN_CHATSYNC_ROOM_DB", s.room_url())):
        d = psycopg.conninfo.conninfo_to_dict(url)
        monkeypatch.setenv(name, json.dumps({"conn_type": "postgres", "host": d["host"], "port": int(d["port"]),
                                             "login": d["user"], "schema": d["dbname"]}))
    monkeypatch.setenv("CHATSYNC_GX_DIR", s.gx_dir)
    monkeypatch.setenv("CHATSYNC_DETECT_SHARD_ROWS", "2000")  # ~5,100 rows: three mapped detect parts
    dag_run = dagbag.get_dag("chat_consistency_hourly").test(run_conf={"scope": "full"})
    assert dag_run.state == "success"
    parts = [ti for ti in dag_run.get_task_instances() if ti.task_id == "detect_part"]
    assert len(parts) == 3 and {ti.state for ti in parts} == {"success"}
    assert differences(s) == {"rooms": 0, "participants": 0}
    with psycopg.connect(s.database_url) as conn:
        status, counts, validation = conn.execute(
            "SELECT status, counts, validation FROM chatsync.runs WHERE kind = 'check' ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    assert status == "validated" and counts == report.injected and validation["passed"] is True
