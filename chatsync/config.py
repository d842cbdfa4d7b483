"""Settings and thresholds: the one place every tunable lives.

Each field is overridable by the environment as ``CHATSYNC_<FIELD>`` (upper case) and, inside
Airflow, by the Variable ``chatsync_<field>``. Bad values fail with a ConfigError naming the
variable and the value.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from chatsync.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    """Where the demo keeps its embedded services and Airflow home (CHATSYNC_HOME)."""
    return Path(os.environ.get("CHATSYNC_HOME") or REPO_ROOT / ".chatsync")


WAL_COMPRESSION_CHOICES = ("default", "off", "pglz", "lz4", "zstd")


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # libpq URL or conninfo; None -> embedded demo services
    redis_url: str | None = None
    ops_schema: str = "chatsync"
    mapping_path: str = str(Path(__file__).with_name("mapping.yaml"))
    sql_dir: str = str(REPO_ROOT / "include" / "sql")
    gx_dir: str = str(REPO_ROOT / "great_expectations")
    events_stream: str = "chatsync:events"
    redis_prefix: str = "chatsync:"

    # Repair threshold: above either, the run hands over to the major-inconsistency procedure.
    repair_max_fraction: float = 0.01
    repair_max_changes: int = 1000
    repair_batch_rows: int = 50_000
    # Parallel connections for detect (big full/range scans split by room-id range: PostgreSQL
    # cannot parallelise a FULL OUTER JOIN itself) and repair (batches). 0 = one per CPU, up to 8.
    workers: int = 0
    detect_parallel_min_rows: int = 250_000
    # The hourly DAG splits a full scope of more rows than this into room-id shards, one mapped
    # task (and transaction) each, so a Celery/Kubernetes deployment spreads them over workers.
    detect_shard_rows: int = 2_000_000
    detect_max_shards: int = 32
    # Full scans of at least this many rows first compare per-room fingerprints hashed from both
    # tables and diff only the rooms that differ, unless more than fingerprint_max_room_fraction
    # of the rooms do. 0 = never: measured at 10M rows and 1 % drift, hashing 20M rows costs more
    # than the row diff it saves, spread or concentrated (README, Scale).
    fingerprint_min_rows: int = 0
    fingerprint_max_room_fraction: float = 0.25
    # With fingerprints maintained by triggers (chatsync fingerprints install) a full scan diffs
    # only the keys changed since the last one, unless more than this fraction of the rows changed
    # (measured at 10M rows, 1.1 % changed: 3.3 s against 7-8 s for the sharded scan of the same
    # tables, so the two cost the same near 2.5 %) ...
    fingerprint_max_changed_fraction: float = 0.02
    # ... and from this many changed keys it splits the rooms over `workers` connections.
    detect_parallel_min_keys: int = 5_000
    repair_parallel_min_rows: int = 2_000
    # The repair's transactions compress the full-page images they write to the WAL with this
    # method when the database role may set it (superuser, or GRANT SET ON PARAMETER
    # wal_compression): at 1M participants, 73 MB of WAL became 37 MB and the repair ~9 % faster
    # (README, Benchmark). "default" leaves the server's setting.
    repair_wal_compression: str = "lz4"
    # Incremental scope re-reads this much before the last watermark (commit lag, clock skew).
    incremental_overlap_seconds: int = 120

    # Alert thresholds from the seed.
    sync_delay_ms: int = 5000
    error_rate: float = 0.01
    inconsistency_count: int = 10
    error_rate_min_events: int = 20  # below this many events in the window, no error-rate alert
    health_window_minutes: int = 15  # the window the thresholds are evaluated over
    alert_repeat_minutes: int = 60  # a condition still breached is re-sent after this (0: never)

    # Maintenance: regressions, recurring keys, index care, retention (days, counted back from
    # the end of the DAG run's data interval, so a backfill deletes what it would have then).
    reports_dir: str = str(REPO_ROOT / "reports")
    regression_factor: float = 1.5  # a day's figure above 1.5x its previous-7-days value
    recurring_runs: int = 3  # a key found by this many runs in 7 days is escalated
    reindex_max_leaf_density: float = 60.0  # a B-tree whose leaves are emptier than this % is rebuilt
    reindex_min_bytes: int = 1_048_576  # smaller indexes are left alone
    retention_batch_rows: int = 5000  # rows per delete transaction
    retention_sync_log_days: int = 30
    retention_dead_letters_days: int = 90
    retention_metrics_days: int = 90
    retention_alert_log_days: int = 180
    retention_findings_days: int = 90  # resolved findings only
    rollback_window_days: int = 30  # audit rows younger than this are kept (rollback needs them)

    # Redis connection loss: keys the cache missed wait in a Postgres outbox; past this many the
    # recovery resyncs everything instead. Reconnection backs off up to redis_reconnect_max_seconds.
    cache_outbox_max_rows: int = 100_000
    redis_reconnect_max_seconds: float = 30.0

    # Transient-error retries inside one task/command (Airflow task retries come on top).
    retry_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    lock_timeout_ms: int = 10_000

    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_sources(cls, *sources: Mapping[str, str], **explicit: Any) -> "Settings":
        """Build settings from ordered sources (later wins) of ``CHATSYNC_*`` style names."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            env_name = "CHATSYNC_" + f.name.upper()
            for source in sources:
                if env_name in source and source[env_name] not in (None, ""):
                    values[f.name] = _coerce(f, env_name, source[env_name])
        for name, value in explicit.items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.check()
        return settings

    @classmethod
    def from_env(cls, **explicit: Any) -> "Settings":
        return cls.from_sources(os.environ, **explicit)

    def check(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"CHATSYNC_{name.upper()}={getattr(self, name)!r}: {why}")

        if not 0 < self.repair_max_fraction <= 1:
            raise bad("repair_max_fraction", "must be a fraction in (0, 1]")
        for name in ("repair_max_changes", "repair_batch_rows", "sync_delay_ms",
                     "inconsistency_count", "retry_attempts", "lock_timeout_ms", "health_window_minutes",
                     "cache_outbox_max_rows", "detect_shard_rows", "detect_max_shards"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive whole number")
        if not 0 < self.fingerprint_max_room_fraction <= 1:
            raise bad("fingerprint_max_room_fraction", "must be a fraction in (0, 1]")
        if not 0 <= self.fingerprint_max_changed_fraction <= 1:
            raise bad("fingerprint_max_changed_fraction", "must be a fraction in [0, 1]")
        if not 0 <= self.error_rate <= 1:
            raise bad("error_rate", "must be a fraction in [0, 1]")
        for name in ("incremental_overlap_seconds", "workers", "error_rate_min_events", "alert_repeat_minutes",
                     "recurring_runs", "reindex_min_bytes", "retention_batch_rows", "retention_sync_log_days",
                     "retention_dead_letters_days", "retention_metrics_days", "retention_alert_log_days",
                     "retention_findings_days", "rollback_window_days", "detect_parallel_min_rows",
                     "repair_parallel_min_rows", "fingerprint_min_rows", "detect_parallel_min_keys"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        if self.repair_wal_compression not in WAL_COMPRESSION_CHOICES:
            raise bad("repair_wal_compression", f"must be one of {', '.join(WAL_COMPRESSION_CHOICES)}")
        if not self.ops_schema.isidentifier():
            raise bad("ops_schema", "must be a plain identifier")
        for name in ("mapping_path", "sql_dir"):
            if not Path(getattr(self, name)).exists():
                raise bad(name, "no such file or directory")

    def parallel_workers(self) -> int:
        return self.workers or min(os.cpu_count() or 1, 8)

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "no database configured: set CHATSYNC_DATABASE_URL (CLI) or the Airflow "
                "connection 'chatsync_db' (DAGs)"
            )
        return self.database_url


def _coerce(f: dataclasses.Field, name: str, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        what = "a whole number" if kind.startswith("int") else "a number"
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    return raw
