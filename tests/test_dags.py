"""The DAGs as Airflow sees them: they import cleanly and fast, and the hourly one runs for real."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

from conftest import REPO, sides_equal

HOURLY = "chat_consistency_hourly"


def test_every_dag_file_imports_without_error(dagbag):
    assert dagbag.import_errors == {}
    files = sorted(Path(REPO / "dags").glob("*.py"))
    assert files, "no DAG files found"
    parsed = {Path(s.file).name: s.dag_num for s in dagbag.dagbag_stats}
    for f in files:
        assert f.name in parsed, f"{f.name} was not parsed"
        assert parsed[f.name] >= 1, f"{f.name} defines no DAG"


def test_dag_files_do_not_import_heavy_libraries():
    # parse in a clean interpreter: Great Expectations and pandas must stay inside tasks
    import subprocess
    import sys

    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            "bad = [m for m in ('great_expectations', 'pandas') if m in sys.modules]; "
            "print(','.join(bad))")
    for f in sorted((REPO / "dags").glob("*.py")):
        out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "", f"{f.name} imports {out.stdout.strip()} at parse time"


def test_every_task_runs_in_the_chatsync_db_pool(dagbag):
    """Each task opens database connections: one pool bounds them all, mapped shards included."""
    for dag_id, dag in dagbag.dags.items():
        if dag_id.startswith("chat_"):
            assert {t.pool for t in dag.tasks} == {"chatsync_db"}, dag_id


def test_hourly_dag_shape(dagbag):
    dag = dagbag.get_dag(HOURLY)
    assert dag is not None
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert set(dag.task_ids) == {"plan_detect", "detect_part", "detect", "discard_partial_detect", "choose_path",
                                 "nothing_to_do", "too_many", "start_major_procedure", "repair",
                                 "validate", "record_metrics", "check_health", "outcome"}
    assert dag.get_task("choose_path").downstream_task_ids == {"nothing_to_do", "too_many", "repair"}
    assert dag.get_task("detect_part").downstream_task_ids == {"detect", "discard_partial_detect"}
    assert dag.get_task("discard_partial_detect").trigger_rule == "one_failed"
    for task_id in ("plan_detect", "detect_part", "detect"):
        assert dag.get_task(task_id).retries >= 1
        assert dag.get_task(task_id).retry_exponential_backoff


def test_hourly_dag_end_to_end_repairs_simulated_drift(dagbag, db, clean_db, monkeypatch, capfd):
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    report = simulate(clean_db, rooms=100, members=50, drift=0.005, seed=21)
    assert sides_equal(db)["participants"] > 0
    monkeypatch.setenv("CHATSYNC_DETECT_SHARD_ROWS", "2000")  # ~5,100 rows: three mapped detect parts
    dag = dagbag.get_dag(HOURLY)
    t0 = time.perf_counter()
    dag_run = dag.test(run_conf={"scope": "full"})
    print(f"dag.test took {time.perf_counter() - t0:.1f}s")
    assert dag_run.state == "success"
    parts = [ti for ti in dag_run.get_task_instances() if ti.task_id == "detect_part"]
    assert sorted(ti.map_index for ti in parts) == [0, 1, 2] and {ti.state for ti in parts} == {"success"}
    labels = sorted(ti.rendered_map_index for ti in parts)  # the UI's names for the shards, in plain words
    assert len(labels) == 3 and all(re.fullmatch(r"shard [123] of 3: rooms (below \d+|\d+ to \d+|from \d+)", x)
                                    for x in labels), labels
    assert "XCom not found" not in capfd.readouterr().out  # the detect task reads the shards' results by index
    assert next(ti for ti in dag_run.get_task_instances() if ti.task_id == "discard_partial_detect").state == "skipped"
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    run = db.execute("SELECT run_id, status, counts, repaired, validation, step_durations, triggered_by "
                     "FROM chatsync.runs WHERE kind = 'check' ORDER BY run_id DESC LIMIT 1").fetchone()
    run_id, status, counts, repaired, validation, durations, triggered_by = run
    assert status == "validated"
    assert counts == report.injected
    assert repaired == report.changed_keys
    assert validation["passed"] is True
    assert set(durations) >= {"detect", "repair", "validate"}
    assert triggered_by.startswith("airflow:chat_consistency_hourly/")
    metrics = dict(db.execute("SELECT name, count(*) FROM chatsync.metrics WHERE run_id = %s GROUP BY name",
                              (run_id,)).fetchall())
    assert metrics["inconsistencies_detected"] == 8
    assert metrics["time_to_resolution_seconds"] >= 1
    assert metrics["step_seconds"] >= 3
    # the validated repair updated the chat tables' Assets, naming the run
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = {(e.asset.uri, e.source_task_id, e.extra["run_id"], e.extra["validation_passed"])
                  for e in session.query(AssetEvent).filter(AssetEvent.source_run_id == dag_run.run_id)}
    assert events == {("chatsync://chat-side/chat_rooms", "validate", run_id, True),
                      ("chatsync://chat-side/chat_participants", "validate", run_id, True)}


def test_missing_connection_fails_at_once_without_retry(dagbag, clean_db, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CHATSYNC_DB")
    dag = dagbag.get_dag(HOURLY)
    dag_run = dag.test(run_conf={"scope": "full"})
    assert dag_run.state == "failed"
    detect_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "plan_detect")
    assert detect_ti.state == "failed"
    assert detect_ti.try_number == 1  # a configuration error is not retried


def test_events_drain_dag_shape(dagbag):
    dag = dagbag.get_dag("chat_events_drain")
    assert dag is not None and dag.catchup is False and dag.max_active_runs == 1
    assert dag.task_ids == ["drain"]
    assert dag.dagrun_timeout <= timedelta(minutes=5)


def test_events_drain_dag_syncs_the_backlog(dagbag, db, redis_settings, monkeypatch):
    import redis

    from chatsync.events import cache
    from chatsync_devtools.room_service import emit
    from chatsync_devtools.simulate import simulate

    simulate(redis_settings, rooms=20, members=6, drift=0, seed=2)
    cache.resync(redis_settings)
    client = redis.Redis.from_url(redis_settings.redis_url)
    emit(redis_settings, client, 150, seed=4)
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_REDIS", redis_settings.redis_url)
    monkeypatch.setenv("CHATSYNC_EVENTS_STREAM", redis_settings.events_stream)
    monkeypatch.setenv("CHATSYNC_REDIS_PREFIX", redis_settings.redis_prefix)
    dag_run = dagbag.get_dag("chat_events_drain").test()
    assert dag_run.state == "success"
    assert db.execute("SELECT count(*), count(DISTINCT worker) FROM chatsync.sync_log").fetchone() == (150, 1)
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert cache.verify(redis_settings).total == 0
    assert client.xpending(redis_settings.events_stream, "chatsync")["pending"] == 0
    client.close()


def test_events_drain_leaves_the_stream_to_running_workers(dagbag, db, redis_settings, monkeypatch):
    """Beside a running `chatsync worker` (a consumer that asked for entries just now) the drain
    holds no Airflow worker slot: it ends at once and leaves the backlog to the workers."""
    import redis

    from chatsync.events.worker import GROUP
    from chatsync_devtools.room_service import emit
    from chatsync_devtools.simulate import simulate

    simulate(redis_settings, rooms=10, members=4, drift=0, seed=3)
    client = redis.Redis.from_url(redis_settings.redis_url)
    stream = redis_settings.events_stream
    emit(redis_settings, client, 40, seed=5)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    client.xreadgroup(GROUP, "worker-on-host-a", {stream: ">"}, count=1)  # a worker's read, just now
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_REDIS", redis_settings.redis_url)
    monkeypatch.setenv("CHATSYNC_EVENTS_STREAM", stream)
    monkeypatch.setenv("CHATSYNC_REDIS_PREFIX", redis_settings.redis_prefix)
    dag_run = dagbag.get_dag("chat_events_drain").test()
    assert dag_run.state == "success"
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "drain")
    assert ti.xcom_pull(task_ids="drain")["skipped"] == "workers running: worker-on-host-a"
    assert db.execute("SELECT count(*) FROM chatsync.sync_log").fetchone()[0] == 0  # left to the worker
    client.close()
