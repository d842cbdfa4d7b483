"""Airflow glue: settings from connections and Variables, and error kinds -> task behaviour.

Imported by DAG files, so it must stay light: Airflow itself is imported inside the functions
that run in tasks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta, timezone

from chatsync.config import Settings, check_environment
from chatsync.errors import ConfigError

log = logging.getLogger("chatsync.airflow")


DB_CONN_ID = "chatsync_db"
REDIS_CONN_ID = "chatsync_redis"
ROOM_DB_CONN_ID = "chatsync_room_db"
SETTINGS_VARIABLE = "chatsync_settings"  # JSON object of Settings field -> value


# What psycopg.connect takes besides conninfo keywords (PostgresHook passes the extras to it as is):
# chatsync sets these per connection itself, and a conninfo string cannot carry them.
_PSYCOPG_CONNECT_ONLY = frozenset({"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"})
# The TLS extras RedisHook.get_conn passes to redis.Redis (its ssl_arg_names), besides "ssl" itself.
_REDIS_SSL_EXTRAS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")
_REDIS_CLUSTER_EXTRAS = ("cluster", "startup_nodes")


def _truthy(value) -> bool:
    """A flag from a connection extra: JSON true/false, or text when the connection came as a URI."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
    return bool(value)


def postgres_conninfo(conn) -> str:
    """The libpq conninfo (``key='value' ...``) that PostgresHook.get_conn would connect with:
    host, port, login, password, schema (the database) and every extra but the hook's own
    (``PostgresHook.ignored_extra_options``: cursor, iam, sqlalchemy_*, ...), i.e. the libpq
    options (sslmode, sslrootcert, sslcert, sslkey, options, application_name, target_session_attrs,
    keepalives*, connect_timeout, ...). ``iam`` fetches a token as the hook does. A conninfo rather
    than a URL: make_conninfo quotes every value, and it carries what a URL cannot spell (a Unix
    socket directory as host, a list of hosts)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg import ProgrammingError
    from psycopg.conninfo import make_conninfo

    hook = PostgresHook(postgres_conn_id=conn.conn_id, connection=conn)
    extra = conn.extra_dejson or {}
    login, password, port = conn.login, conn.password, conn.port
    if extra.get("iam", False):
        try:
            login, password, port = hook.get_iam_token(conn)
        except Exception as exc:  # noqa: BLE001 - missing provider, AWS/Azure errors
            raise ConfigError(f"Airflow connection '{conn.conn_id}': no IAM token "
                              f"({type(exc).__name__}: {exc})") from None
    params = {"host": conn.host, "port": port, "user": login, "password": password,
              "dbname": hook.database or conn.schema}
    dropped = []
    for key, value in extra.items():
        if key in hook.ignored_extra_options:
            continue
        if key in _PSYCOPG_CONNECT_ONLY:
            dropped.append(key)
            continue
        params[key] = value
    if dropped:
        log.warning("Airflow connection '%s': extras %s are psycopg.connect arguments, not libpq options: "
                    "chatsync sets them per connection and ignores them here", conn.conn_id, ", ".join(sorted(dropped)))
    try:
        return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})
    except ProgrammingError as exc:  # an extra that is no libpq option: PostgresHook would fail to connect too
        raise ConfigError(f"Airflow connection '{conn.conn_id}' is not a valid Postgres connection: "
                          f"{str(exc).strip()} (its extras must be libpq connection options)") from None


def redis_url(conn) -> str:
    """The redis-py URL for what RedisHook.get_conn would build: host, port, login (the ACL user),
    password (none for "", "none" or "false", as the hook), extra ``db`` (or a number in schema,
    where ``redis://host:port/<db>`` puts it), TLS (extra ``ssl``, or conn type ``rediss``) with the
    hook's TLS extras as query parameters. User and password are percent-quoted, so any character
    is safe. Cluster mode (extras cluster/startup_nodes) needs a RedisCluster client: refused."""
    from urllib.parse import quote, urlencode

    from airflow.providers.redis.hooks.redis import ALLOWED_SSL_CERT_REQS, DEFAULT_REDIS_PORT

    cid = conn.conn_id
    extra = conn.extra_dejson or {}
    if any(_truthy(extra.get(k)) for k in _REDIS_CLUSTER_EXTRAS):
        raise ConfigError(f"Airflow connection '{cid}': Redis cluster mode is not supported by chatsync "
                          f"(it talks to one Redis server); remove the cluster/startup_nodes extras")
    db = extra.get("db")
    if db in (None, ""):
        db = conn.schema if conn.schema and str(conn.schema).strip().isdigit() else 0
    if isinstance(db, bool) or not str(db).strip().isdigit():
        raise ConfigError(f"Airflow connection '{cid}': Redis database {db!r} is not a whole number")
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    tls = _truthy(extra.get("ssl", False)) or (conn.conn_type or "").lower() == "rediss"
    query = {}
    for key in _REDIS_SSL_EXTRAS if tls else ():
        value = extra.get(key)
        if value in (None, ""):
            continue
        if key == "ssl_check_hostname":
            value = "true" if _truthy(value) else "false"
        elif key == "ssl_cert_reqs" and str(value).lower() not in ALLOWED_SSL_CERT_REQS:
            raise ConfigError(f"Airflow connection '{cid}': ssl_cert_reqs {value!r} must be one of "
                              + ", ".join(ALLOWED_SSL_CERT_REQS))
        query[key] = str(value).lower() if key == "ssl_cert_reqs" else str(value)
    auth = ""
    if conn.login or password:
        auth = quote(conn.login or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
    host = conn.host or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    url = f"{'rediss' if tls else 'redis'}://{auth}{host}:{conn.port or DEFAULT_REDIS_PORT}/{int(str(db))}"
    return url + ("?" + urlencode(query, quote_via=quote) if query else "")


@dataclass(frozen=True)
class ConnectionUrls:
    database: str  # chatsync_db: the chat side and chatsync's own schema
    room_database: str | None  # chatsync_room_db: the room side's own database (None: chatsync_db's)
    redis: str | None  # chatsync_redis


def connection_urls(get_connection: Callable) -> ConnectionUrls:
    """The URLs of the chatsync_db, chatsync_room_db and chatsync_redis connections, looked up with
    get_connection(conn_id) (the task SDK's Connection.get in tasks, the secrets backends in the
    api-server). A missing chatsync_db is a ConfigError; a missing chatsync_room_db means the room
    side shares chatsync_db's database and a missing chatsync_redis gives None (Redis is optional),
    but one that exists and cannot be used is an error."""
    try:
        db = get_connection(DB_CONN_ID)
    except Exception as exc:  # noqa: BLE001 - Airflow raises different types per version/backend
        raise ConfigError(f"Airflow connection '{DB_CONN_ID}' is missing or unreadable: {exc}. "
                          f"Create it (Admin > Connections) or set AIRFLOW_CONN_CHATSYNC_DB.") from None
    try:
        room_db = get_connection(ROOM_DB_CONN_ID)
    except Exception:  # noqa: BLE001 - optional: the room side then shares chatsync_db's database
        room_db = None
    try:
        redis_conn = get_connection(REDIS_CONN_ID)
    except Exception:  # noqa: BLE001 - Redis is optional for the consistency pipeline
        redis_conn = None
    return ConnectionUrls(postgres_conninfo(db), postgres_conninfo(room_db) if room_db is not None else None,
                          redis_url(redis_conn) if redis_conn is not None else None)


def settings_from_airflow() -> Settings:
    """Settings for a task: the chatsync_db / chatsync_redis connections, the environment, then the
    chatsync_settings Variable. A missing connection or a bad value fails with a clear message."""
    from airflow.sdk import Connection, Variable

    urls = connection_urls(Connection.get)
    redis_url_ = urls.redis or os.environ.get("CHATSYNC_REDIS_URL")
    raw = Variable.get(SETTINGS_VARIABLE, default=None)
    overrides: dict[str, str] = {}
    if raw:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise ConfigError(f"Airflow Variable '{SETTINGS_VARIABLE}' must be a JSON object: {exc}") from None
        overrides = {"CHATSYNC_" + str(k).upper(): str(v) for k, v in doc.items()}
        known = {"CHATSYNC_" + f.upper() for f in Settings.__dataclass_fields__}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"Airflow Variable '{SETTINGS_VARIABLE}' has unknown keys: "
                              + ", ".join(k.removeprefix("CHATSYNC_").lower() for k in unknown))
    check_environment(os.environ)  # a mistyped CHATSYNC_* in the workers' environment is an error here too
    settings = Settings.from_sources(os.environ, overrides, database_url=urls.database, redis_url=redis_url_,
                                     room_database_url=urls.room_database,
                                     run_lease_seconds=_run_lease_seconds())
    from chatsync.alerting import notifiers

    notifiers.use_airflow_channels()  # alerts raised inside the task reach Slack/email too
    return settings


def _run_lease_seconds() -> int | None:
    """A run begun in this task is carried on by the DAG run's next tasks, in other processes: it
    counts as alive until the DAG run's deadline (dagrun_timeout; a day without one). None outside
    a task (the setting's own value then)."""
    from datetime import datetime

    try:
        from airflow.sdk import get_current_context

        ctx = get_current_context()
    except Exception:  # noqa: BLE001 - not inside a task
        return None
    timeout = getattr(ctx.get("dag"), "dagrun_timeout", None) or timedelta(days=1)
    started = getattr(ctx.get("dag_run"), "start_date", None) or datetime.now(timezone.utc)
    return max(1, int((started + timeout - datetime.now(timezone.utc)).total_seconds()) + 1)
