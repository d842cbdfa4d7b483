"""Where the maintenance reports are kept: ``reports_dir`` as an Airflow ``ObjectStoragePath``.

A local folder by default; ``s3://bucket/prefix``, ``gs://...`` (any fsspec protocol Airflow's
providers bring) with the Airflow connection ``reports_conn_id``. The tasks that write a report
and the api-server that serves it then need not share a disk (Celery, Kubernetes).
"""

from __future__ import annotations

import re
from pathlib import Path

from chatsync.config import Settings, data_home
from chatsync.errors import ConfigError

MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def root(settings: Settings):
    """The reports' root: a ``pathlib.Path`` for a local folder (the same methods as
    ObjectStoragePath, without importing Airflow into a command-line run), else an
    ObjectStoragePath."""
    where = settings.reports_dir or str(data_home() / "reports")
    if "://" not in where:
        return Path(where)
    if where.startswith("file://"):
        return Path(where.removeprefix("file://"))
    from airflow.sdk import ObjectStoragePath

    try:
        return ObjectStoragePath(where, conn_id=settings.reports_conn_id)
    except Exception as exc:  # noqa: BLE001 - an unknown protocol, a missing provider, a bad connection
        raise ConfigError(f"CHATSYNC_REPORTS_DIR={settings.reports_dir!r}: cannot open it ({exc})") from None


def write(settings: Settings, parts: tuple[str, ...], data: str | bytes):
    """Write one report file under the root; returns its path."""
    path = root(settings).joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)  # a folder on disk; nothing on an object store
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def stored_file(settings: Settings, parts: tuple[str, ...]):
    """A stored file (a monthly report or chart, a Data Docs page), or None: each part of the path
    is checked as a plain name, so nothing outside reports_dir can be read."""
    if not parts or any(not FILE_NAME.fullmatch(part) or ".." in part for part in parts):
        return None
    path = root(settings).joinpath(*parts)
    return path if path.is_file() else None


def latest_monthly(settings: Settings) -> str | None:
    """The month (YYYY-MM) of the newest monthly report."""
    folder = root(settings) / "monthly"
    if not folder.exists():
        return None
    months = sorted(p.name for p in folder.iterdir() if MONTH.fullmatch(p.name) and (p / "report.html").exists())
    return months[-1] if months else None


def publish_site(settings: Settings, local: Path, name: str):
    """Copy a locally built static site (Great Expectations' Data Docs) under ``data_docs/<name>/``:
    the pages a past run wrote are there already and never change, so only new files and the
    index (which lists every run) travel. Returns the stored index."""
    target = root(settings) / "data_docs" / name
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        relative = path.relative_to(local).as_posix()
        stored = target / relative
        if relative == "index.html" or not stored.exists():
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(path.read_bytes())
    return target / "index.html"
