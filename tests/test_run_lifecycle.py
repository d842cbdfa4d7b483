"""A run's life when its process dies or loses its control connection: killed runs are closed as
abandoned by the next pass (saying what happened to the data), runs whose process lives or whose
Airflow lease runs are left alone, and a pass whose control connection is cut carries on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import sides_equal, wait_until

from chatsync.consistency.detect import detect
from chatsync.consistency.scope import Scope
from chatsync.db import locks, runs
from chatsync.ops import health
from chatsync.web.page import snapshot
from chatsync.web.prometheus import prometheus_text
from chatsync_devtools.simulate import simulate

CHATSYNC = str(Path(sys.executable).with_name("chatsync"))


def cli_env(settings, **extra) -> dict[str, str]:
    return {**os.environ, "CHATSYNC_DATABASE_URL": settings.database_url, "CHATSYNC_GX_DIR": settings.gx_dir,
            "CHATSYNC_REPAIR_MAX_FRACTION": "1.0", "CHATSYNC_REPAIR_MAX_CHANGES": "100000", **extra}


def paused_check(settings, tmp_path, point: str, seconds: float, *args: str) -> tuple[subprocess.Popen, int]:
    """`chatsync check --repair` stopped at a fault point: the process and the run it works on."""
    marker = tmp_path / f"paused-{point.replace(':', '-')}"
    env = cli_env(settings, CHATSYNC_FAULT_PAUSE_AT=point, CHATSYNC_FAULT_PAUSE_SECONDS=str(seconds),
                  CHATSYNC_FAULT_MARKER=str(marker), CHATSYNC_WORKERS="1", CHATSYNC_REPAIR_BATCH_ROWS="10")
    proc = subprocess.Popen([CHATSYNC, "check", "--repair", "--json", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def reached() -> bool:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        return marker.exists()
    wait_until(reached, 120, f"the pass to reach {point}")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        run_id = conn.execute("SELECT max(run_id) FROM chatsync.runs WHERE triggered_by = 'cli'").fetchone()[0]
    return proc, run_id


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def run_row(db, run_id: int) -> dict:
    cur = db.execute("SELECT status, finished_at, error FROM chatsync.runs WHERE run_id = %s", (run_id,))
    return dict(zip(("status", "finished_at", "error"), cur.fetchone()))


@pytest.mark.parametrize("point, left, says", [
    ("detect:before_finish", "running", "the detect did not finish: its partial findings were removed"),
    ("repair:after_commit", "repairing", "chat rows were repaired (audited) before it stopped"),
    ("check:before_validate", "repaired", "chat rows were repaired (audited), never validated"),
])
def test_a_killed_run_is_closed_as_abandoned_by_the_next_pass(point, left, says, db, clean_db, tmp_path):
    simulate(clean_db, rooms=40, members=10, drift=0.03, seed=41)
    proc, run_id = paused_check(clean_db, tmp_path, point, 120, "--no-validate")
    kill(proc)
    assert run_row(db, run_id)["status"] == left and run_row(db, run_id)["finished_at"] is None
    if left == "running":
        assert db.execute("SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s", (run_id,)).fetchone()[0]
    # the next pass closes it, whatever its scope, and says what happened to the data
    next_pass = subprocess.run([CHATSYNC, "check", "--repair", "--no-validate", "--json"], env=cli_env(clean_db),
                               capture_output=True, text=True, timeout=300)
    assert next_pass.returncode == 0, next_pass.stderr
    row = run_row(db, run_id)
    assert row["status"] == "abandoned" and row["finished_at"] is not None
    assert says in row["error"] and row["error"].startswith(f"abandoned: its process is gone (it was {left})")
    if left == "running":
        assert db.execute(
            "SELECT count(*) FROM chatsync.inconsistencies WHERE run_id = %s", (run_id,)
        ).fetchone()[0] == 0
    else:
        assert f"`chatsync rollback {run_id}`" in row["error"]
    assert sides_equal(db) == {"rooms": 0, "participants": 0}  # the next pass repaired the rest
    assert db.execute("SELECT count(*) FROM chatsync.runs WHERE finished_at IS NULL").fetchone()[0] == 0
    # counted on the health page and in the metrics
    snap = snapshot(clean_db)
    assert snap["figures"]["runs_abandoned"] == 1 and snap["figures"]["runs_open"] == 0
    assert b"chatsync_runs_abandoned 1.0" in prometheus_text(snap)
    if left == "repairing":  # its audited rows can still be rolled back
        undo = subprocess.run([CHATSYNC, "rollback", str(run_id), "--json"], env=cli_env(clean_db),
                              capture_output=True, text=True, timeout=120)
        assert undo.returncode == 0 and json.loads(undo.stdout)["restored"] > 0, undo.stderr


def test_a_run_whose_process_lives_is_not_abandoned(db, clean_db, tmp_path):
    simulate(clean_db, rooms=20, members=10, drift=0.03, seed=42)
    proc, run_id = paused_check(clean_db, tmp_path, "check:before_validate", 5, "--no-validate")
    try:
        other = detect(clean_db, Scope("full"), triggered_by="test")  # a pass of this process meanwhile
        assert run_row(db, run_id)["status"] == "repaired" and run_row(db, run_id)["finished_at"] is None
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert run_row(db, run_id)["status"] == "consistent" and run_row(db, run_id)["finished_at"] is not None
        assert run_row(db, other.run_id)["status"] == "detected"  # this process's own: open, alive
    finally:
        if proc.poll() is None:
            kill(proc)


def test_an_airflow_run_is_alive_until_its_lease_ends(db, clean_db):
    """A run begun in an Airflow task outlives the task's process; its lease (the DAG run's
    deadline) keeps it from being closed between tasks."""
    db.execute("INSERT INTO chatsync.runs (scope, triggered_by, status, lease_until) VALUES "
               "('full', 'airflow:chat_consistency_hourly/x', 'detected', now() + interval '1 hour'), "
               "('full', 'airflow:chat_consistency_hourly/y', 'repairing', now() - interval '1 second')")
    with psycopg.connect(clean_db.database_url) as conn:
        closed = runs.close_abandoned(conn, clean_db)
    assert [(r["triggered_by"], r["was"]) for r in closed] == [("airflow:chat_consistency_hourly/y", "repairing")]
    assert dict(db.execute("SELECT triggered_by, status FROM chatsync.runs").fetchall()) == {
        "airflow:chat_consistency_hourly/x": "detected", "airflow:chat_consistency_hourly/y": "abandoned"}
    assert health.figures(clean_db, *db.execute("SELECT now() - interval '1 minute', now() + interval '1 minute'")
                          .fetchone(), with_backlog=False)["runs_open"] == 1


def cut_control_connection(settings, pid: int) -> int:
    """pg_terminate_backend of the chatsync control connection of process pid."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name = %s",
                                (f"chatsync control {pid}",)).fetchall())


@pytest.mark.parametrize("point", ["repair:after_commit", "check:before_unlock"])
def test_the_pass_carries_on_when_its_control_connection_is_cut(point, db, clean_db, tmp_path):
    """The lock connection of `chatsync check --repair` terminated during the repair, or after the
    validation: the pass reconnects, takes its locks back and ends as it would have."""
    simulate(clean_db, rooms=40, members=10, drift=0.03, seed=43)
    proc, run_id = paused_check(clean_db, tmp_path, point, 2)
    assert cut_control_connection(clean_db, proc.pid) == 1
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["run_id"] == run_id and summary["consistent"] and summary["validation"]["passed"]
    assert run_row(db, run_id)["status"] == "validated"
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    if point == "repair:after_commit":
        assert "control connection lost: reconnecting and taking back" in err
    # nothing is left held: another pass or repair can start at once
    assert db.execute("SELECT pg_try_advisory_lock(%s) AND pg_try_advisory_lock(%s)",
                      (locks.CHECK_LOCK, locks.REPAIR_LOCK)).fetchone()[0]
    db.execute("SELECT pg_advisory_unlock_all()")
