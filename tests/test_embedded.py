"""The demo's embedded services start from PyPI packages, keep their data, and stop cleanly."""

from __future__ import annotations

import psutil
import psycopg
import redis

from chatsync_devtools import embedded


def _postmaster_pid(data_dir) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


def test_embedded_postgres_and_redis(tmp_path):
    services = embedded.start(tmp_path)
    try:
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("16")
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        client = redis.Redis.from_url(services.redis_url)
        client.set("chatsync_test:embedded", "ok")
        assert client.get("chatsync_test:embedded") == b"ok"
        client.close()
        pid = _postmaster_pid(tmp_path)
        assert psutil.pid_exists(pid)
    finally:
        services.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    again = embedded.start(tmp_path)  # the data survives a restart
    try:
        with psycopg.connect(again.database_url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone()[0] == 42
    finally:
        again.stop()
