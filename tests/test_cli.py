"""The chatsync CLI as a user runs it: real processes, JSON on stdout, the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_detect_repair import SMALL_CASE, SMALL_COUNTS

CHATSYNC = str(Path(sys.executable).with_name("chatsync"))


def run(settings, *args, **env):
    full_env = {**os.environ, "CHATSYNC_DATABASE_URL": settings.database_url,
                "CHATSYNC_GX_DIR": settings.gx_dir, **env}
    proc = subprocess.run([CHATSYNC, *args], capture_output=True, text=True, env=full_env, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_init_is_idempotent(clean_db):
    code, out, _ = run(clean_db, "init", "--reference-schema", "--json")
    assert code == 0
    assert json.loads(out) == {"applied": [], "ops_schema": "chatsync", "reference_schema": True}


def test_check_exit_codes_and_json(db, clean_db):
    db.execute(SMALL_CASE)
    lenient = {"CHATSYNC_REPAIR_MAX_FRACTION": "1.0"}
    code, out, err = run(clean_db, "check", "--no-validate", "--json", **lenient)
    assert code == 1, err
    summary = json.loads(out)
    assert summary["counts"] == SMALL_COUNTS and summary["repaired"] == 0

    code, out, err = run(clean_db, "check", "--repair", "--json", **lenient)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["repaired"] == 9 and summary["remaining"] == 0
    assert summary["validation"]["passed"] is True, summary["validation"]
    repaired_run = summary["run_id"]

    code, out, err = run(clean_db, "rollback", str(repaired_run), "--json")
    assert code == 0, err
    assert json.loads(out)["restored"] == 9

    code, out, _ = run(clean_db, "check", "--rooms", "3", "--no-validate", "--json")
    assert code == 1
    assert {k: v for k, v in json.loads(out)["counts"].items() if v} == {"missing_chat_room": 1,
                                                                         "missing_participant": 1}


def test_threshold_exit_code(db, clean_db):
    db.execute(SMALL_CASE)
    code, out, _ = run(clean_db, "check", "--repair", "--no-validate", "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["decision"] == "major" and summary["repaired"] == 0


@pytest.mark.parametrize("args, env, message", [
    (["check", "--scope", "sideways"], {}, "invalid choice"),
    (["check", "--rooms", "a,b"], {}, "comma-separated room ids"),
    (["simulate", "--rooms", "0", "--members", "5", "--drift", "0.1"], {}, "positive"),
    (["check"], {"CHATSYNC_MAPPING_PATH": "/nonexistent.yaml"}, "CHATSYNC_MAPPING_PATH"),
    (["check"], {"CHATSYNC_REPAIR_MAX_CHANGES": "many"}, "CHATSYNC_REPAIR_MAX_CHANGES='many' is not a whole number"),
    (["rollback", "999999"], {}, "run 999999 does not exist"),
])
def test_bad_usage_exits_2_with_a_clear_message(clean_db, args, env, message):
    code, _, err = run(clean_db, *args, **env)
    assert code == 2
    assert message in err


def _writes(db) -> tuple:
    """What a command could have written: runs (check, rollback), freezes, chat flags."""
    return db.execute("SELECT (SELECT count(*) FROM chatsync.runs), (SELECT count(*) FROM chatsync.freezes), "
                      "(SELECT count(*) FROM chat.chat_rooms WHERE writes_frozen)").fetchone()


@pytest.mark.parametrize("args", [
    ["check", "--rooms", "-5"], ["check", "--rooms", "99999999999999999999"], ["check", "--rooms", "\u0661\u0662"],
    ["check", "--rooms", "1_2"], ["check", "--rooms", "3, 9223372036854775808"],
    ["cache", "verify", "--rooms", "-5"], ["cache", "resync", "--rooms", "\u0661\u0662"],
    ["freeze", "1_2", "--reason", "x"], ["freeze", "99999999999999999999", "--reason", "x"],
    ["unfreeze", "-5"], ["unfreeze", "\u0661\u0662"],
    ["publish", "room.archived", "1_2"], ["publish", "room.participant.added", "3", "-5"],
    ["rollback", "\u0661"], ["rollback", "9223372036854775808"], ["rollback", "0"],
])
def test_ids_are_ascii_digits_within_bigint(db, clean_db, args):
    db.execute(SMALL_CASE)
    before = _writes(db)
    code, out, err = run(clean_db, *args, CHATSYNC_REDIS_URL="redis://127.0.0.1:6379/0")
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "id" in err, err
    assert _writes(db) == before


@pytest.mark.parametrize("args, message", [
    (["worker", "--batch", "99999999999999999999", "--until-idle"], "argument --batch"),
    (["worker", "--block-ms", "6000"], "argument --block-ms: expected a positive number (from 1 to 4000)"),
    (["worker", "--max-seconds", "nan"], "argument --max-seconds: expected a number, got 'nan'"),
    (["worker", "--max-seconds", "-1"], "argument --max-seconds: expected a number above 0"),
    (["bench", "--suite", "events", "--rate", "0"], "argument --rate: expected a number above 0"),
    (["simulate", "--rooms", "\u0663", "--members", "2", "--drift", "0"], "argument --rooms: expected a whole number"),
    (["freeze", "2", "--reason", "x", "--ttl", "99999999999999999999"],
     "argument --ttl: expected a number of seconds (from 1 to 604800)"),
])
def test_numbers_that_would_fail_later_are_refused_at_once(clean_db, args, message):
    """Each of these used to pass the parser and then fail on every read (a blocking read longer
    than the socket timeout, a COUNT Redis refuses), never end (NaN seconds) or divide by zero."""
    proc = subprocess.run([CHATSYNC, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "CHATSYNC_DATABASE_URL": clean_db.database_url,
                               "CHATSYNC_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_drift_rooms_takes_its_own_default(clean_db):
    code, out, err = run(clean_db, "simulate", "--rooms", "3", "--members", "2", "--drift", "0", "--drift-rooms", "1",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["rooms"] == 3


@pytest.mark.parametrize("command, env, message", [
    (["check", "--no-validate"], {"CHATSYNC_DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:notaport/x"},
     "CHATSYNC_DATABASE_URL is not a valid database URL: port 'notaport' is not a whole number in 1..65535"),
    (["check", "--no-validate"], {"CHATSYNC_DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:99999/x"},
     "CHATSYNC_DATABASE_URL is not a valid database URL: port '99999'"),
    (["cache", "verify"], {"CHATSYNC_REDIS_URL": "redis://:s3cret@127.0.0.1:notaport/0"},
     "CHATSYNC_REDIS_URL is not a valid Redis URL"),
    (["cache", "verify"], {"CHATSYNC_REDIS_URL": "redis://:s3cret@127.0.0.1:99999/0"},
     "CHATSYNC_REDIS_URL is not a valid Redis URL"),
    (["cache", "verify"], {"CHATSYNC_REDIS_URL": "redis://:s3cret@127.0.0.1:6379/zero"},
     "CHATSYNC_REDIS_URL is not a valid Redis URL: database 'zero' is not a whole number"),
    (["check", "--no-validate"], {"CHATSYNC_REPAIR_MAX_CHANGE": "5"},
     "unknown environment variable: CHATSYNC_REPAIR_MAX_CHANGE (did you mean CHATSYNC_REPAIR_MAX_CHANGES?)"),
    (["check", "--no-validate"], {"CHATSYNC_LOCK_TIMEOUT_MS": "99999999999"},
     "CHATSYNC_LOCK_TIMEOUT_MS=99999999999: must be at most 2147483647"),
    (["check", "--no-validate"], {"CHATSYNC_METRICS_TOKEN": "hunter2"},
     "CHATSYNC_METRICS_TOKEN: must be at least 16 characters"),
])
def test_bad_environment_exits_2_on_one_line_before_any_write(db, clean_db, command, env, message):
    db.execute(SMALL_CASE)
    before = _writes(db)
    code, out, err = run(clean_db, *command, **env)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "s3cret" not in err and "hunter2" not in err, err
    assert _writes(db) == before


def test_a_server_that_does_not_answer_stays_transient(clean_db):
    quick = {"CHATSYNC_RETRY_ATTEMPTS": "2", "CHATSYNC_RETRY_BASE_SECONDS": "0.01"}
    code, _, err = run(clean_db, "check", "--no-validate", CHATSYNC_DATABASE_URL="postgresql://postgres@127.0.0.1:1/x",
                       **quick)
    assert code == 3 and "cannot connect" in err, err
    code, _, err = run(clean_db, "cache", "verify", CHATSYNC_REDIS_URL="redis://127.0.0.1:1/0", **quick)
    assert code == 3 and "Connection refused" in err, err


@pytest.mark.parametrize("args", [["rollback", "42"], ["check", "--no-validate"], ["init"], ["cache", "verify"],
                                  ["freeze", "7", "--reason", "x"], ["worker", "--until-idle"]])
def test_without_a_database_named_only_the_demo_starts_one(args, tmp_path):
    """No CHATSYNC_DATABASE_URL: one line naming the variable, exit 2, and no embedded server
    started (CHATSYNC_HOME stays empty)."""
    env = {k: v for k, v in os.environ.items() if k != "CHATSYNC_DATABASE_URL"}
    env["CHATSYNC_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([CHATSYNC, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no database named: set CHATSYNC_DATABASE_URL" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home").exists()
