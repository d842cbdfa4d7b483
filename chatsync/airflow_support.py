"""Airflow glue: settings from connections and Variables, and error kinds -> task behaviour.

Imported by DAG files, so it must stay light: Airflow itself is imported inside the functions
that run in tasks.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from datetime import timedelta
from typing import Callable, TypeVar

from chatsync.config import Settings, check_environment
from chatsync.errors import ConfigError, ValidationError, ValidationFailed

log = logging.getLogger("chatsync.airflow")
F = TypeVar("F", bound=Callable)

DB_CONN_ID = "chatsync_db"
REDIS_CONN_ID = "chatsync_redis"
SETTINGS_VARIABLE = "chatsync_settings"  # JSON object of Settings field -> value



def on_task_failure(context) -> None:
    """Every chatsync task's on_failure_callback: one alert naming the task, the run, the error
    and the log, on the configured channels (Slack, email) and in the log."""
    from chatsync import alerts, notifiers

    channels = notifiers.use_airflow_channels()
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    exc = context.get("exception")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
    run_id = getattr(dag_run, "run_id", None)
    link = getattr(ti, "log_url", None)
    message = (f"task {where} failed in run {run_id} (try {getattr(ti, 'try_number', '?')}): "
               f"{type(exc).__name__ if exc else 'error'}: {exc}" + (f" — log: {link}" if link else ""))
    alerts.notify("task_failed", message, dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None),
                  run_id=run_id, event="failure", channels=channels)


def on_dag_failure(context) -> None:
    """Every chatsync DAG's on_failure_callback: a run that failed or ran past its dagrun_timeout
    (the deadline: `reason` says "timed_out")."""
    from chatsync import alerts, notifiers

    channels = notifiers.use_airflow_channels()
    dag_run = context.get("dag_run")
    reason = context.get("reason") or "failed"
    dag_id = getattr(dag_run, "dag_id", "?")
    what = "ran past its deadline (dagrun_timeout)" if "time" in str(reason) else f"failed ({reason})"
    alerts.notify("dag_run_failed" if "time" not in str(reason) else "deadline_missed",
                  f"DAG {dag_id} run {getattr(dag_run, 'run_id', '?')} {what} — {ui_link(context)}",
                  dag_id=dag_id, run_id=getattr(dag_run, "run_id", None), event="failure", channels=channels)


# Transient failures retry with exponential backoff; config errors and refusals fail at once.
DEFAULT_ARGS = {
    "owner": "chatsync",
    "retries": 4,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "on_failure_callback": on_task_failure,
}


def _postgres_url(conn) -> str:
    from psycopg.conninfo import make_conninfo

    extra = conn.extra_dejson or {}
    params = {"host": conn.host or None, "port": conn.port or None, "user": conn.login or None,
              "password": conn.password or None, "dbname": conn.schema or None}
    for key in ("sslmode", "sslrootcert", "options", "target_session_attrs"):
        if key in extra:
            params[key] = extra[key]
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def _redis_url(conn) -> str:
    auth = f":{conn.password}@" if conn.password else ""
    db = (conn.extra_dejson or {}).get("db", conn.schema or 0)  # redis://host:port/<db> puts it in schema
    return f"redis://{auth}{conn.host or 'localhost'}:{conn.port or 6379}/{db}"


def settings_from_airflow() -> Settings:
    """Settings for a task: the chatsync_db / chatsync_redis connections, the environment, then the
    chatsync_settings Variable. A missing connection or a bad value fails with a clear message."""
    from airflow.sdk import Connection, Variable

    try:
        db_url = _postgres_url(Connection.get(DB_CONN_ID))
    except Exception as exc:  # noqa: BLE001 - Airflow raises different types per version/backend
        raise ConfigError(f"Airflow connection '{DB_CONN_ID}' is missing or unreadable: {exc}. "
                          f"Create it (Admin > Connections) or set AIRFLOW_CONN_CHATSYNC_DB.") from None
    try:
        redis_url = _redis_url(Connection.get(REDIS_CONN_ID))
    except Exception:  # noqa: BLE001 - Redis is optional for the consistency pipeline
        redis_url = os.environ.get("CHATSYNC_REDIS_URL")
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
    settings = Settings.from_sources(os.environ, overrides, database_url=db_url, redis_url=redis_url,
                                     run_lease_seconds=_run_lease_seconds())
    from chatsync import notifiers

    notifiers.use_airflow_channels()  # alerts raised inside the task reach Slack/email too
    return settings


def _run_lease_seconds() -> int | None:
    """A run begun in this task is carried on by the DAG run's next tasks, in other processes: it
    counts as alive until the DAG run's deadline (dagrun_timeout; a day without one). None outside
    a task (the setting's own value then)."""
    from datetime import datetime, timezone

    try:
        from airflow.sdk import get_current_context

        ctx = get_current_context()
    except Exception:  # noqa: BLE001 - not inside a task
        return None
    timeout = getattr(ctx.get("dag"), "dagrun_timeout", None) or timedelta(days=1)
    started = getattr(ctx.get("dag_run"), "start_date", None) or datetime.now(timezone.utc)
    return max(1, int((started + timeout - datetime.now(timezone.utc)).total_seconds()) + 1)


def ui_link(context) -> str:
    """The Airflow UI page of the task's DAG run (api.base_url), for alert messages."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    dag_run = context.get("dag_run")
    return f"{base}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id)}" if dag_run else base


def data_interval():
    """(start, end) of the running task's DAG run: what maintenance and health work on."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]


def run_label(context) -> str:
    dag_run = context.get("dag_run")
    return f"airflow:{dag_run.dag_id}/{dag_run.run_id}" if dag_run else "airflow"


def fail_fast(fn: F) -> F:
    """Map chatsync's error kinds onto Airflow: retry transient errors (raise as is), fail at once
    on configuration errors, invalid data and a failed validation (no retry would help)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValidationError, ValidationFailed) as exc:
            log.error("%s: %s", type(exc).__name__, exc)
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]
