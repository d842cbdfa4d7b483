"""docker-compose.yml cannot run here (no Docker engine): check it parses and wires what the
README promises: the official Airflow 3 image, Postgres, Redis, an init service running the
migrations before any Airflow component, and no secret written in the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_COMPONENTS = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def test_services_are_named_and_present():
    assert {"postgres", "redis", "airflow-init", *AIRFLOW_COMPONENTS} <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["redis"]["image"].startswith("redis:")
    assert [SERVICES[name]["command"] for name in AIRFLOW_COMPONENTS] == [
        "api-server", "scheduler", "dag-processor", "triggerer"]


def test_image_is_the_official_airflow_3_at_the_locked_version():
    dockerfile = (REPO / "Dockerfile").read_text()
    image = re.search(r"^ARG AIRFLOW_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    locked = next(p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]
                  if p["name"] == "apache-airflow")
    assert image == f"apache/airflow:{locked}-python3.11"
    assert image.startswith("apache/airflow:3.")
    assert "uv export --frozen" in dockerfile  # the same lock as the tests
    for name in ("airflow-init", *AIRFLOW_COMPONENTS):
        assert SERVICES[name]["build"] == "."


def test_init_runs_both_migrations_before_airflow_starts():
    command = " ".join(SERVICES["airflow-init"]["command"])
    assert "airflow db migrate" in command and "chatsync.cli init --reference-schema" in command
    assert 'airflow pools set chatsync_db 16 "chatsync\'s database connections"' in command  # the tasks' pool
    for name in AIRFLOW_COMPONENTS:
        assert SERVICES[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        assert SERVICES[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_connections_and_mounts_match_the_project_layout():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW_CONN_CHATSYNC_DB"].startswith("postgresql://chatsync:${CHATSYNC_DB_PASSWORD}@postgres")
    assert env["AIRFLOW_CONN_CHATSYNC_REDIS"].startswith("redis://redis:6379")
    mounts = {v.split(":")[0] for v in SERVICES["airflow-scheduler"]["volumes"]}
    for folder in ("./dags", "./plugins"):
        assert folder in mounts and (REPO / folder).is_dir()
    init_script = REPO / "docker" / "initdb" / "10_chatsync.sh"
    assert init_script.is_file() and init_script.stat().st_mode & 0o111


def test_no_secret_in_the_repository_files():
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|FERNET_KEY)\w*:\s*\S", line):
            assert "${" in line, f"literal secret in docker-compose.yml: {line.strip()}"
    for url in re.findall(r"\w+://[^\s\"']+", text):
        if "@" in url:
            assert "${" in url.split("@")[0], f"credentials written in {url}"
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert all(v in ("", "change-me") or k == "AIRFLOW_UID" for k, v in example.items())


def test_a_celery_profile_with_two_workers():
    workers = {n: s for n, s in SERVICES.items() if s.get("profiles") == ["celery"] and n.startswith("airflow-")}
    assert set(workers) == {"airflow-worker-1", "airflow-worker-2"}
    assert all(s["command"] == "celery worker" and s["build"] == "." for s in workers.values())
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert ("AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up -d"
            in (REPO / "docker-compose.yml").read_text())


def test_the_event_worker_runs_as_a_service_beside_airflow():
    """The sub-second event path needs a running worker: compose starts one (two in the celery
    profile), after the migrations, restarted if it dies, each with a name of its own."""
    workers = {n: s for n, s in SERVICES.items() if "chatsync.cli worker" in " ".join(s.get("command") or [])}
    assert set(workers) == {"chatsync-worker", "chatsync-worker-2"}
    assert "profiles" not in workers["chatsync-worker"] and workers["chatsync-worker-2"]["profiles"] == ["celery"]
    for service in workers.values():
        # $$ is compose's escape: the shell in the container expands its own HOSTNAME
        assert '--name "$${HOSTNAME}"' in service["command"][-1] and service["restart"] == "always"
        assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        env = service["environment"]
        assert env["CHATSYNC_DATABASE_URL"].startswith("postgresql://chatsync:${CHATSYNC_DB_PASSWORD}@postgres")
        assert env["CHATSYNC_REDIS_URL"] == SERVICES["airflow-scheduler"]["environment"]["AIRFLOW_CONN_CHATSYNC_REDIS"]


def _compose_client() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not _compose_client(), reason="no docker compose client here: the parse checks above stand")
def test_docker_compose_accepts_the_file():
    done = subprocess.run(["docker", "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **{k: "x" for k in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD",
                                                                  "CHATSYNC_DB_PASSWORD", "AIRFLOW_FERNET_KEY",
                                                                  "AIRFLOW_JWT_SECRET")}})
    assert done.returncode == 0, done.stderr
