"""Settings and thresholds: the one place every tunable lives.

Each field is overridable by the environment as ``CHATSYNC_<FIELD>`` (upper case) and, inside
Airflow, by the Variable ``chatsync_<field>``. Bad values fail with a ConfigError naming the
variable and the value; so does a ``CHATSYNC_*`` variable that is no setting (a typo would
otherwise leave the default in force, silently), unless it is one of NOT_SETTINGS.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from chatsync.errors import ConfigError

DEFAULT_MAPPING = Path(__file__).parent / "model" / "mapping.yaml"  # the reference schema's (package data)


def data_home() -> Path:
    """Where chatsync keeps what it writes by default (reports, the GX context): beside Airflow's
    own files in ``$AIRFLOW_HOME/chatsync_data`` inside Airflow, else ``~/.chatsync``."""
    airflow_home = os.environ.get("AIRFLOW_HOME")
    return Path(airflow_home) / "chatsync_data" if airflow_home else Path.home() / ".chatsync"


WAL_COMPRESSION_CHOICES = ("default", "off", "pglz", "lz4", "zstd")
MAX_WHOLE_NUMBER = 2**63 - 1  # whole-number settings reach SQL (bigint) and Redis as 64-bit integers
MAX_LOCK_TIMEOUT_MS = 2**31 - 1  # PostgreSQL's limit for lock_timeout
MIN_METRICS_TOKEN_CHARS = 16  # a bearer token shorter than this is guessable
REDIS_SOCKET_TIMEOUT_SECONDS = 5  # a Redis reply (a blocking read's too) must come within this
MAX_FREEZE_TTL_SECONDS = 7 * 24 * 3600  # the longest lease of a write freeze
# Numbers as text, for fullmatch: ASCII only, where int() and float() also take '1_2', ' 12 ' and
# digits of other scripts, and float() 'nan' and 'inf'.
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
DECIMAL_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")

# CHATSYNC_* names in the environment that are not settings, yet no typo (a * stands for any rest).
NOT_SETTINGS = (
    "CHATSYNC_HOME",                  # where `chatsync demo` keeps its services (chatsync-devtools)
    "CHATSYNC_DB_PASSWORD",           # docker compose: the chatsync role's password, from .env
    "CHATSYNC_GX_CONNECTION_STRING",  # set by chatsync.validation.gx for Great Expectations
    "CHATSYNC_TEST_*",                # the test suite's own (tests/conftest.py)
    "CHATSYNC_FAULT_*",               # the test suite's fault injection (tests/support)
)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # libpq URL or conninfo; every command but `chatsync demo` needs it
    # The room side's database when it is not the chat side's (another database or server): read
    # only; chatsync keeps a copy of its mapped columns in the ops schema, refreshed by what differs.
    room_database_url: str | None = None
    redis_url: str | None = None
    ops_schema: str = "chatsync"
    mapping_path: str = str(DEFAULT_MAPPING)
    gx_dir: str | None = None
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
    # than the row diff it saves, spread or concentrated (docs/benchmarks.md).
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
    # (docs/benchmarks.md). "default" leaves the server's setting.
    repair_wal_compression: str = "lz4"
    # Incremental scope re-reads this much before the last watermark (commit lag, clock skew).
    incremental_overlap_seconds: int = 120

    # Alert thresholds.
    sync_delay_ms: int = 5000
    error_rate: float = 0.01
    inconsistency_count: int = 10
    error_rate_min_events: int = 20  # below this many events in the window, no error-rate alert
    health_window_minutes: int = 15  # the window the thresholds are evaluated over
    alert_repeat_minutes: int = 60  # a condition still breached is re-sent after this (0: never)
    # When set, /metrics answers only a request with `Authorization: Bearer <metrics_token>`
    # (Prometheus: `authorization: {credentials: ...}`); the health page needs an Airflow login.
    metrics_token: str | None = None

    # Maintenance: regressions, recurring keys, index care, retention (days, counted back from
    # the end of the DAG run's data interval, so a backfill deletes what it would have then).
    reports_dir: str | None = None
    reports_conn_id: str | None = None  # the Airflow connection of an object store in reports_dir
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

    # The event worker checks the stream's consumer group against its durable watermark this
    # often (and after every Redis error), to notice a Redis that lost the stream's data.
    stream_check_seconds: float = 5.0
    # A run created inside an Airflow task outlives that task's process; it counts as alive this
    # long (set from the DAG run's dagrun_timeout in Airflow; 0: only while its process holds it).
    run_lease_seconds: int = 0

    # Transient-error retries inside one task/command (Airflow task retries come on top).
    retry_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    lock_timeout_ms: int = 10_000

    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_sources(cls, *sources: Mapping[str, str], **explicit: Any) -> Settings:
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
    def from_env(cls, **explicit: Any) -> Settings:
        check_environment(os.environ)
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
        if self.lock_timeout_ms > MAX_LOCK_TIMEOUT_MS:
            raise bad("lock_timeout_ms", f"must be at most {MAX_LOCK_TIMEOUT_MS} (PostgreSQL's limit)")
        for name in ("retry_base_seconds", "retry_max_seconds", "redis_reconnect_max_seconds"):
            if getattr(self, name) < 0:  # a backoff sleeps that long: a negative sleep raises
                raise bad(name, "must not be negative")
        if not 0 < self.fingerprint_max_room_fraction <= 1:
            raise bad("fingerprint_max_room_fraction", "must be a fraction in (0, 1]")
        if not 0 <= self.fingerprint_max_changed_fraction <= 1:
            raise bad("fingerprint_max_changed_fraction", "must be a fraction in [0, 1]")
        if not 0 <= self.error_rate <= 1:
            raise bad("error_rate", "must be a fraction in [0, 1]")
        if not self.stream_check_seconds > 0:
            raise bad("stream_check_seconds", "must be a positive number of seconds")
        for name in ("incremental_overlap_seconds", "run_lease_seconds", "workers", "error_rate_min_events",
                     "alert_repeat_minutes",
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
        if not Path(self.mapping_path).exists():
            raise bad("mapping_path", "no such file or directory")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN_CHARS:
            # not quoted back: a secret
            raise ConfigError(f"CHATSYNC_METRICS_TOKEN: must be at least {MIN_METRICS_TOKEN_CHARS} characters "
                              "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        # the URLs are not quoted back: they may hold a password
        if self.database_url and (problem := _database_url_problem(self.database_url)):
            raise ConfigError(f"CHATSYNC_DATABASE_URL is not a valid database URL: {problem}")
        if self.room_database_url and (problem := _database_url_problem(self.room_database_url)):
            raise ConfigError(f"CHATSYNC_ROOM_DATABASE_URL is not a valid database URL: {problem}")
        if self.redis_url and (problem := _redis_url_problem(self.redis_url)):
            raise ConfigError(f"CHATSYNC_REDIS_URL is not a valid Redis URL: {problem}")

    def parallel_workers(self) -> int:
        return self.workers or min(os.cpu_count() or 1, 8)

    @property
    def two_databases(self) -> bool:
        """The room side lives in a database of its own (room_database_url set, and not the chat
        side's URL)."""
        return bool(self.room_database_url) and self.room_database_url != self.database_url

    def room_url(self) -> str:
        """The URL of the room side's database (the chat side's when it has none of its own)."""
        if self.two_databases and self.room_database_url:
            return self.room_database_url
        return self.require_database()

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "no database configured: set CHATSYNC_DATABASE_URL (CLI) or the Airflow "
                "connection 'chatsync_db' (DAGs)"
            )
        return self.database_url


def check_environment(env: Mapping[str, str]) -> None:
    """Refuse a CHATSYNC_* variable that is neither a setting nor one of NOT_SETTINGS, naming the
    closest known name."""
    known = ["CHATSYNC_" + f.name.upper() for f in dataclasses.fields(Settings) if f.name != "extra"]
    unknown = sorted(name for name in env if name.upper().startswith("CHATSYNC_") and name not in known
                     and not any(fnmatchcase(name, allowed) for allowed in NOT_SETTINGS))
    if unknown:
        candidates = known + [allowed for allowed in NOT_SETTINGS if "*" not in allowed]
        raise ConfigError(f"unknown environment variable{'s' if len(unknown) > 1 else ''}: "
                          + ", ".join(name + _did_you_mean(name, candidates) for name in unknown))


def _did_you_mean(name: str, candidates: list[str]) -> str:
    prefix = len("CHATSYNC_")  # compared without it: every name shares it, which makes all look alike
    close = difflib.get_close_matches(name.upper()[prefix:], [c[prefix:] for c in candidates], n=1)
    return f" (did you mean CHATSYNC_{close[0]}?)" if close else " (no chatsync setting has that name)"


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535


def _database_url_problem(url: str) -> str | None:
    """What libpq would refuse only when connecting: a malformed string, and a port that is no TCP
    port (which it reports like a server that does not answer: retried, then exit 3)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        return str(exc).strip()
    # a list of ports goes with a list of hosts; an empty one means the default
    bad = [port for port in str(params.get("port") or "").split(",") if port and not _is_port(port)]
    return f"port {bad[0]!r} is not a whole number in 1..65535" if bad else None


def _redis_url_problem(url: str) -> str | None:
    """What redis-py refuses only at Redis.from_url or when connecting (scheme, port, options), and
    what it would silently read otherwise: port 0 (as the default port), a database that is no
    number (as database 0)."""
    from urllib.parse import urlsplit

    from redis.connection import parse_url

    try:
        parse_url(url)
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if port == 0:
        return "port 0 is not a whole number in 1..65535"
    database = parts.path.removeprefix("/")
    if parts.scheme != "unix" and database and not (database.isascii() and database.isdigit()):
        return f"database {database!r} is not a whole number"
    return None


def _coerce(f: dataclasses.Field, name: str, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind.startswith("int"):
        if not WHOLE_NUMBER.fullmatch(raw):
            raise ConfigError(f"{name}={raw!r} is not a whole number")
        digits = raw.lstrip("-").lstrip("0")
        if len(digits) > len(str(MAX_WHOLE_NUMBER)) or int(digits or 0) > MAX_WHOLE_NUMBER:
            raise ConfigError(f"{name}={raw!r} is out of range (a 64-bit whole number: at most "
                              f"{MAX_WHOLE_NUMBER})")
        return int(raw)
    if kind.startswith("float"):
        if not DECIMAL_NUMBER.fullmatch(raw) or not math.isfinite(float(raw)):
            raise ConfigError(f"{name}={raw!r} is not a number")
        return float(raw)
    return raw
