"""Shared fixtures: a fresh database per test session on the machine's real Postgres, a private
Redis key prefix, and a private Airflow home. Nothing here touches other databases or keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("CHATSYNC_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_DB = f"chatsync_test_{os.getpid()}"
TEST_DB_URL = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=TEST_DB)
REDIS_TEST_URL = os.environ.get("CHATSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_PREFIX = f"chatsync_test_{os.getpid()}:"
AIRFLOW_HOME = Path(tempfile.gettempdir()) / f"chatsync_airflow_{os.getpid()}"
# CHATSYNC_TEST_TOPOLOGY=two-databases: the suite's `settings` read the room side through a
# connection of its own and chatsync's copy of it (the two-database code path), the room tables
# staying in the test database so that every test can write them; tests/test_two_databases.py
# runs the topology on really separate databases and servers.
TWO_DATABASES = os.environ.get("CHATSYNC_TEST_TOPOLOGY", "one-database") == "two-databases"
ROOM_SIDE_URL = psycopg.conninfo.make_conninfo(TEST_DB_URL, application_name="chatsync room side")


FAULTS = REPO / "tests" / "support" / "faults"  # the fault hook (chatsync_faults) and its sitecustomize


def pytest_configure(config):
    # fault injection: in this process, and in every child process through sitecustomize
    sys.path.insert(0, str(FAULTS))
    import chatsync_faults

    chatsync_faults.install()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
    # Airflow reads its configuration when first imported: point it at a private home first.
    os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": TEST_DB}
    os.environ["AIRFLOW_CONN_CHATSYNC_DB"] = json.dumps(conn)
    if TWO_DATABASES:
        os.environ["AIRFLOW_CONN_CHATSYNC_ROOM_DB"] = json.dumps(
            {**conn, "extra": {"application_name": "chatsync room side"}})
    for name in list(os.environ):
        if name.startswith("CHATSYNC_") and name not in ("CHATSYNC_TEST_ADMIN_URL", "CHATSYNC_TEST_REDIS_URL",
                                                         "CHATSYNC_TEST_TOPOLOGY"):
            del os.environ[name]  # the developer's own settings must not leak into tests
    # reports and published Data Docs go to the session's own folder, not the checkout's reports/
    os.environ["CHATSYNC_REPORTS_DIR"] = str(AIRFLOW_HOME / "reports")


def _admin(sql_text: sql.Composable) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql_text)


@pytest.fixture(scope="session")
def database_url():
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEST_DB)))
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEST_DB)))
    yield TEST_DB_URL
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEST_DB)))
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(database_url, tmp_path_factory):
    from chatsync.config import Settings
    from chatsync.db.migrations import migrate

    gx_dir = tmp_path_factory.mktemp("gx") / "great_expectations"
    shutil.copytree(REPO / "chatsync" / "validation" / "great_expectations", gx_dir,
                    ignore=shutil.ignore_patterns("uncommitted", "validation_results", "data_docs"))
    s = Settings.from_env(database_url=database_url, gx_dir=str(gx_dir),
                          room_database_url=ROOM_SIDE_URL if TWO_DATABASES else None)
    migrate(s, reference_schema=True)
    return s


TABLES = ("room.room_participants", "room.rooms", "chat.chat_participants", "chat.chat_rooms")


OPS_TABLES = ("metrics", "repair_audit", "inconsistencies", "runs", "sync_log", "dead_letters",
              "metric_buckets", "alert_state", "alert_log", "maintenance_reports", "maintenance_actions",
              "table_sizes", "freezes", "deploy_checks", "correction_plans", "redis_outages", "cache_outbox",
              "room_fingerprints", "room_fingerprint_deltas", "fingerprint_maintenance",
              "fingerprint_changed_keys", "mirror_fingerprints", "room_domain_violations")


def empty_tables(settings) -> None:
    """Empty the application tables (on both sides' databases) and chatsync's own."""
    from chatsync.consistency import fingerprints

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        fingerprints.remove_if_installed(conn, settings)  # a test may have installed them
        conn.execute("TRUNCATE chat.chat_participants, chat.chat_rooms")
        tables = [sql.Identifier(settings.ops_schema, t) for t in OPS_TABLES]
        if settings.two_databases:
            tables += [sql.Identifier(settings.ops_schema, f"mirror_{t}") for t in ("room_rooms", "room_participants")]
        else:
            conn.execute("TRUNCATE room.room_participants, room.rooms")
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tables)))
    if settings.two_databases:
        with psycopg.connect(settings.room_database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE room.room_participants, room.rooms")


@pytest.fixture
def clean_db(settings):
    """Empty application and ops tables before the test (the schema stays)."""
    empty_tables(settings)
    return settings


ROOM_DB, CHAT_DB = f"{TEST_DB}_room", f"{TEST_DB}_chat"


@pytest.fixture(scope="session")
def two_databases(tmp_path_factory):
    """Settings of the two-database topology: the room side in a database of its own (read only
    for chatsync), the chat side and chatsync's schema in another, both on the test server."""
    from chatsync.config import Settings
    from chatsync.db.migrations import migrate

    for name in (ROOM_DB, CHAT_DB):
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    gx_dir = tmp_path_factory.mktemp("gx2") / "great_expectations"
    shutil.copytree(REPO / "chatsync" / "validation" / "great_expectations", gx_dir,
                    ignore=shutil.ignore_patterns("uncommitted", "validation_results", "data_docs"))
    s = Settings.from_env(database_url=psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=CHAT_DB),
                          room_database_url=psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=ROOM_DB),
                          gx_dir=str(gx_dir))
    migrate(s, reference_schema=True)
    yield s
    for name in (ROOM_DB, CHAT_DB):
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def two_db(two_databases):
    """The two-database settings, every table emptied first."""
    empty_tables(two_databases)
    return two_databases


@pytest.fixture
def db(clean_db):
    """An autocommit connection to the test database, after cleaning it."""
    with psycopg.connect(clean_db.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def airflow_db(database_url):
    """Airflow's metadata database (SQLite in the private AIRFLOW_HOME), migrated once."""
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy(), timeout=300)
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    """Every DAG of dags/, parsed once as Airflow's DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"), bundle_name="chatsync-tests")


def wait_until(condition, timeout: float, what: str, every: float = 0.05):
    """Poll condition() until it returns something true (returned), failing after timeout
    seconds with what was awaited: tests wait for a state, never for a fixed time."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    """A TCP port nobody listens on, for the local servers tests start (SMTP, webhook, Redis, web)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sides_equal(conn) -> dict[str, int]:
    """Independent check of the rules (not chatsync's SQL): rows that differ, per table pair."""
    rooms = conn.execute("""
        SELECT count(*) FROM (
          (SELECT id, status, is_public, chat_enabled, archived_at IS NOT NULL FROM room.rooms
           EXCEPT SELECT room_id, status, is_public, chat_enabled, archived FROM chat.chat_rooms)
          UNION ALL
          (SELECT room_id, status, is_public, chat_enabled, archived FROM chat.chat_rooms
           EXCEPT SELECT id, status, is_public, chat_enabled, archived_at IS NOT NULL FROM room.rooms)) d
    """).fetchone()[0]
    participants = conn.execute("""
        SELECT count(*) FROM (
          (SELECT room_id, user_id, role, permissions, banned_at IS NOT NULL FROM room.room_participants
           EXCEPT SELECT room_id, user_id, role, permissions, banned FROM chat.chat_participants)
          UNION ALL
          (SELECT room_id, user_id, role, permissions, banned FROM chat.chat_participants
           EXCEPT SELECT room_id, user_id, role, permissions, banned_at IS NOT NULL FROM room.room_participants)) d
    """).fetchone()[0]
    return {"rooms": rooms, "participants": participants}


@pytest.fixture
def with_settings(settings):
    """Build a variant of the session settings (e.g. a lower repair threshold)."""
    def make(**changes):
        return replace(settings, **changes)
    return make


@pytest.fixture
def redis_settings(settings):
    """Settings with the machine's real Redis and a key prefix private to this test session.
    Keys under the prefix are deleted afterwards, one by one (SCAN + DEL): nothing else is touched."""
    import redis

    s = replace(settings, redis_url=REDIS_TEST_URL, redis_prefix=REDIS_PREFIX,
                events_stream=REDIS_PREFIX + "events")
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield s
    for key in client.scan_iter(match=REDIS_PREFIX + "*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def world(db, redis_settings, request):
    """A small room side copied to the chat side, the cache built, a stream of this test's own."""
    import hashlib

    from chatsync.events import cache
    from chatsync_devtools.simulate import simulate

    tag = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    s = replace(redis_settings, events_stream=f"{redis_settings.redis_prefix}{tag}:events",
                redis_prefix=f"{redis_settings.redis_prefix}{tag}:", retry_base_seconds=0.05)
    simulate(s, rooms=30, members=8, drift=0, seed=1)
    cache.resync(s)
    return s
