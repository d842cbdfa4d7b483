"""`chatsync bench` at a tiny size: every approach runs, they agree on the data, nothing is left."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import psycopg
import pytest
from test_cli import run as run_cli

pytestmark = pytest.mark.bench
RESULTS = Path(tempfile.mkdtemp(prefix="chatsync_bench_results_"))  # not the checkout's benchmarks/results


def run(settings, *args, **env):
    return run_cli(settings, *args, "--results-dir", str(RESULTS), **env)


def test_bench_runs_every_step_and_cleans_up(settings):
    code, out, err = run(settings, "bench", "--participants", "3000", "--drift", "0.02",
                         "--repeat", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    steps = result["steps"]
    assert set(steps) == {"floor", "foj", "pandas", "pandas_copy", "detect", "bare_repair", "repair", "airflow_tasks",
                          "incremental"}
    # the hourly DAG's task processes: the repaired run passes GX; GX costs more than the detect tasks
    tasks = steps["airflow_tasks"]
    assert tasks["validation_passed"] is True
    assert tasks["task_sdk_rss_mb"] <= tasks["detect_task_peak_rss_mb"] < tasks["validate_task_peak_rss_mb"]
    # after the repair, 1 % of the chat rows changed: the incremental scope finds exactly those
    assert steps["incremental"]["rows"] == steps["incremental"]["changed"] > 0
    injected = result["injected"]
    participant_kinds = ("missing_participant", "orphan_participant", "role_mismatch",
                         "permissions_mismatch", "ban_mismatch")
    assert steps["floor"]["rows"] >= 2 * 3000 * 0.9
    # the three participant diffs agree; the bare FULL OUTER JOIN counts keys, not (key, kind)
    assert steps["foj"]["rows"] == steps["pandas"]["rows"] == steps["pandas_copy"]["rows"]
    assert steps["detect"]["counts"] == injected
    assert steps["detect"]["rows"] == sum(injected.values())
    assert steps["foj"]["rows"] <= sum(injected[k] for k in participant_kinds)
    # the floor and chatsync's repair change the same rows
    assert steps["bare_repair"]["rows"] == steps["repair"]["rows"] == steps["detect"]["rows_to_change"]
    # both repairs ran twice (a copy of the scratch database, then the scratch database): the median is kept
    for step in ("bare_repair", "repair"):
        each = steps[step]["seconds_each"]
        assert len(each) == 2 and min(each) <= steps[step]["seconds"] <= max(each)
    for step in steps.values():
        assert step["seconds"] > 0 and step["peak_rss_mb"] > 0
    assert set(result["targets"].values()) <= {"PASS", "MISS"}
    assert result["ratios"]["detect_vs_foj"] > 0
    saved = Path(result["saved_to"])  # the result is kept as JSON where --results-dir says
    assert saved.parent == RESULTS and json.loads(saved.read_text())["steps"]["detect"]["counts"] == injected
    with psycopg.connect(settings.database_url) as conn:  # neither the scratch database nor its copies left
        assert conn.execute("SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)",
                            (result["scratch_database"],)).fetchone()[0] == 0


def test_bench_with_maintained_fingerprints_measures_the_fold_and_the_triggers_cost(settings):
    # the switch raised: at this size 2 % drift is above the default share of changed keys
    code, out, err = run(settings, "bench", "--participants", "3000", "--drift", "0.02", "--repeat", "1",
                         "--skip-pandas", "--fingerprints", "--json", CHATSYNC_FINGERPRINT_MAX_CHANGED_FRACTION="1")
    assert code == 0, err
    result = json.loads(out)
    steps = result["steps"]
    assert {"fold", "write_overhead", "detect"} <= set(steps) and "pandas" not in steps
    assert 0 < steps["fold"]["rows"] <= steps["detect"]["rows_to_change"]  # the drifted participant keys, logged
    assert steps["detect"]["counts"] == result["injected"]
    overhead = steps["write_overhead"]
    assert overhead["rows"] > 0 and overhead["ms_per_statement_with_triggers"] > 0
    assert overhead["ms_per_statement_without_triggers"] > 0


def test_two_database_bench_agrees_with_reladiff_and_postgres_fdw_and_cleans_up(settings):
    """Every approach of `--topology two-databases` finds the same differing participants: chatsync
    in one database, across two (first pass, copy current, maintained fingerprints), over
    postgres_fdw, and reladiff (run by uvx from its own environment)."""
    code, out, err = run(settings, "bench", "--topology", "two-databases", "--participants", "3000",
                         "--drift", "0.02", "--repeat", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    steps = result["steps"]
    keys = {name: steps[name]["keys"] for name in ("same_db", "two_cold", "two_warm", "two_fingerprints", "fdw",
                                                   "reladiff")}
    assert len(set(keys.values())) == 1 and keys["same_db"] > 0, keys
    # room-side changes: the same answers in both topologies, and only those rooms travel
    assert steps["two_changed"]["keys"] == steps["same_db_changed"]["keys"] > keys["same_db"]
    assert steps["two_warm"]["bytes"] < steps["two_changed"]["bytes"] < steps["two_cold"]["bytes"]
    assert steps["same_db"]["bytes"] == 0
    assert steps["reladiff"]["options"].startswith("-k room_id -k user_id")
    assert set(result["targets"].values()) <= {"PASS", "MISS"}
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = ANY(%s)",
                            (result["scratch_databases"],)).fetchone()[0] == 0


def test_events_bench_runs_every_phase_and_cleans_up(redis_settings):
    import redis

    code, out, err = run(redis_settings, "bench", "--suite", "events", "--participants", "2000",
                         "--events", "300", "--rate", "1000", "--json",
                         CHATSYNC_REDIS_URL=redis_settings.redis_url)
    assert code == 0, err
    result = json.loads(out)
    assert result["resync"]["participants"] == result["participants"] > 0
    assert result["steady"]["events"] == 300 and result["steady"]["published"]["events"] == 300
    assert (0 < result["steady"]["p50_s"] <= result["steady"]["p95_s"]
            <= result["steady"]["p99_s"] <= result["steady"]["max_s"])
    assert result["backlog"]["events"] == 300 and result["backlog"]["events_per_second"] > 0
    assert result["verify_after"] == 0
    recovery = result["recovery"]  # Redis restarted empty under the load: healed, caught up, equal
    assert 0 < recovery["redis_back_to_healed_s"] <= recovery["redis_back_to_caught_up_s"]
    assert recovery["differences_after"] == 0 and recovery["cache_differences_after"] == 0
    assert recovery["heal"]["detect_s"] > 0 and recovery["by_hand_total_s"] > 0
    assert "recovery: Redis restarted empty" in run(redis_settings, "bench", "--suite", "events", "--participants",
                                                    "500", "--events", "90", "--rate", "500",
                                                    CHATSYNC_REDIS_URL=redis_settings.redis_url)[1]
    assert set(result["targets"].values()) <= {"PASS", "MISS"}
    with psycopg.connect(redis_settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (result["scratch_database"],)).fetchone()[0] == 0
    client = redis.Redis.from_url(redis_settings.redis_url)
    assert not list(client.scan_iter(match=result["scratch_database"] + ":*"))
    client.close()


def test_a_step_childs_peak_memory_is_its_own_not_its_parents(settings):
    """ru_maxrss survives fork and exec: a step child started by a big process reported that
    process's RSS. The child's peak is its own (VmHWM), whatever the parent holds."""
    from chatsync_devtools.bench.consistency import _rss_mb, _run_child

    ballast = bytearray(400 * 1024 * 1024)  # this process: 400 MB more, every page touched
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    assert _rss_mb() > 400
    floor = _run_child("floor", settings.database_url)
    assert 0 < floor["peak_rss_mb"] < 200, floor  # a Python with psycopg: ~40 MB
    del ballast


def test_bench_with_findings_history_detects_and_repairs_the_same(settings):
    """--history puts earlier runs' resolved findings in the table first (what retention keeps):
    the run finds and repairs exactly the injected drift, none of the history."""
    code, out, err = run(settings, "bench", "--participants", "3000", "--drift", "0.02", "--repeat", "1",
                         "--skip-pandas", "--history", "25000", "--json")
    assert code == 0, err
    result = json.loads(out)
    steps = result["steps"]
    assert result["history_findings"] == 25000
    assert steps["detect"]["counts"] == result["injected"]
    assert steps["bare_repair"]["rows"] == steps["repair"]["rows"] == steps["detect"]["rows_to_change"]
