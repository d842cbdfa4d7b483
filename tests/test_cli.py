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
