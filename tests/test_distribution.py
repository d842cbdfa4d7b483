"""The distribution: `make dist`'s wheels installed into a fresh virtual environment work outside
the checkout (SQL, migrations, the GX template and the default mapping are package data; the
plugin registers through its entry point), and the product wheel carries none of the lab."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest
from conftest import ADMIN_URL, REPO
from psycopg import sql

pytestmark = pytest.mark.distribution
UV = REPO / ".uv" / "bin" / "uv"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    if not UV.exists():
        pytest.fail("the Makefile's uv (.uv/bin/uv) is missing: run `make install` first")
    out = tmp_path_factory.mktemp("dist")
    run([str(UV), "build", "--all-packages", "--wheel", "--out-dir", str(out), "--python", sys.executable],
        cwd=REPO)
    return {p.name.split("-")[0]: p for p in out.glob("*.whl")}


@pytest.fixture(scope="module")
def venv(wheels, tmp_path_factory) -> Path:
    """A fresh environment with both wheels, their dependencies pinned as uv.lock pins them."""
    folder = tmp_path_factory.mktemp("venv")
    requirements = folder / "requirements.txt"
    run([str(UV), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-emit-workspace", "--no-hashes",
         "--quiet", "-o", str(requirements)], cwd=REPO)
    env_dir = folder / "env"
    run([str(UV), "venv", "--quiet", "--python", sys.executable, str(env_dir)])
    python = env_dir / "bin" / "python"
    run([str(UV), "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements),
         str(wheels["chatsync"])])
    # the development package without its extras: the simulator needs nothing more
    run([str(UV), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheels["chatsync_devtools"])])
    return env_dir


@pytest.fixture
def scratch_database():
    name = f"chatsync_test_{os.getpid()}_wheel"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_product_wheel_holds_the_product_only(wheels):
    names = zipfile.ZipFile(wheels["chatsync"]).namelist()
    assert "chatsync/sql/migrations/001_ops_core.sql" in names
    assert "chatsync/sql/consistency/repair_batch.sql" in names
    assert "chatsync/model/mapping.yaml" in names
    assert "chatsync/validation/great_expectations/gx/great_expectations.yml" in names
    assert "chatsync/airflow/dags/chat_consistency_hourly.py" in names
    lab = [n for n in names if any(word in n for word in ("simulate", "room_service", "bench", "demo", "embedded",
                                                          "fault", "tests/"))]
    assert lab == []
    entry_points = zipfile.ZipFile(wheels["chatsync"]).read("chatsync-0.1.0.dist-info/entry_points.txt").decode()
    assert "[airflow.plugins]\nchatsync = chatsync.airflow.plugin:ChatsyncPlugin" in entry_points
    devtools = zipfile.ZipFile(wheels["chatsync_devtools"]).namelist()
    assert "chatsync_devtools/sql/simulate/simulate_fill_rooms.sql" in devtools


def test_the_installed_wheel_runs_outside_the_checkout(venv, scratch_database, tmp_path):
    """init, simulate, check with repair and validation, and Airflow finding the plugin: from a
    folder that is not the checkout, with nothing of the checkout on the path."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSYNC_", "AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"CHATSYNC_DATABASE_URL": scratch_database, "CHATSYNC_REPAIR_MAX_FRACTION": "0.5",
                "HOME": str(tmp_path / "home"),
                "AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"})
    chatsync = str(venv / "bin" / "chatsync")

    where = run([str(venv / "bin" / "python"), "-c", "import chatsync; print(chatsync.__file__)"], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout

    run([chatsync, "init", "--reference-schema"], cwd=work, env=env)
    simulated = json.loads(run([chatsync, "simulate", "--rooms", "40", "--members", "10", "--drift", "0.02",
                                "--json"], cwd=work, env=env).stdout)
    assert sum(simulated["injected"].values()) > 0
    checked = subprocess.run([chatsync, "check", "--repair", "--json"], cwd=work, env=env, capture_output=True,
                             text=True, timeout=900)
    assert checked.returncode == 0, checked.stderr[-4000:]
    summary = json.loads(checked.stdout)
    assert summary["counts"] == simulated["injected"]
    assert summary["repaired"] > 0 and summary["validation"]["passed"] is True
    # the GX context was made from the packaged template, in the data folder (not the checkout)
    assert list((tmp_path / "airflow" / "chatsync_data" / "gx").glob("*/gx/great_expectations.yml"))

    plugins = run([str(venv / "bin" / "airflow"), "plugins", "--output", "json"], cwd=work, env=env)
    assert any(p["name"] == "chatsync" for p in json.loads(plugins.stdout[plugins.stdout.index("["):]))

    # the repository's DAG files, copied into a DAG folder, parse against the installed package
    dags = tmp_path / "dags"
    shutil.copytree(REPO / "dags", dags)
    parse = ("import json, sys; from airflow.dag_processing.dagbag import DagBag; "
             "bag = DagBag(sys.argv[1]); "
             "print(json.dumps({'ids': sorted(bag.dag_ids), 'errors': bag.import_errors}))")
    parsed = run([str(venv / "bin" / "python"), "-c", parse, str(dags)], cwd=work,
                 env={**env, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    bag = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    ids = set(bag["ids"])
    assert {"chat_consistency_hourly", "chat_major_inconsistency", "chat_maintenance_daily"} <= ids


def test_without_a_database_only_the_demo_starts_one(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSYNC_", "PYTHON"))}
    done = subprocess.run([str(venv / "bin" / "chatsync"), "rollback", "42"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "CHATSYNC_DATABASE_URL" in done.stderr and "chatsync demo" in done.stderr
