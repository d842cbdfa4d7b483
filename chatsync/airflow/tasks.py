"""What every chatsync task shares: the default arguments (retries with exponential backoff, the
``chatsync_db`` pool, the failure callback), ``fail_fast`` (configuration and validation errors
fail at once, unretried), the run's data interval (inferred for a run with no logical date), and
the chat tables' Assets updated by a validated repair."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from chatsync.airflow.callbacks import on_task_failure
from chatsync.errors import ConfigError, ValidationError, ValidationFailed

log = logging.getLogger("chatsync.airflow")
F = TypeVar("F", bound=Callable)


# Transient failures retry with exponential backoff; config errors and refusals fail at once.
# Every chatsync task opens database connections: they share this Airflow pool, so that mapped
# shards and parallel DAG runs never open more than the database allows (docs/operations.md).
DB_POOL = "chatsync_db"


def _exponential_backoff() -> bool | float:
    """Double the wait at each retry: Airflow 3.2+ takes the multiplier, 3.1 only a flag (whose
    multiplier is 2) and refuses a number."""
    from airflow.sdk.bases import operator

    expected = getattr(operator, "BASEOPERATOR_ARGS_EXPECTED_TYPES", {}).get("retry_exponential_backoff")
    return True if expected is bool else 2.0


DEFAULT_ARGS = {
    "owner": "chatsync",
    "pool": DB_POOL,
    "retries": 4,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": _exponential_backoff(),
    "max_retry_delay": timedelta(minutes=5),
    "on_failure_callback": on_task_failure,
}


def data_interval() -> tuple[datetime, datetime]:
    """(start, end) of the running task's DAG run: what maintenance and health work on."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    # A run with no logical date (the REST API's default, `airflow dags trigger`) has no interval:
    # it covers the schedule's last complete interval before it was due, as Airflow infers for a
    # manual run that has a logical date.
    import pendulum  # the timetables compute on pendulum's DateTime

    run_after = pendulum.instance(ctx["dag_run"].run_after)
    # chatsync's interval DAGs schedule with airflow.timetables' CronDataIntervalTimetable, which has it
    timetable: Any = ctx["dag"].timetable
    interval = timetable.infer_manual_data_interval(run_after=run_after)
    return interval.start, interval.end


def run_label(context) -> str:
    dag_run = context.get("dag_run")
    return f"airflow:{dag_run.dag_id}/{dag_run.run_id}" if dag_run else "airflow"


def fail_fast(fn: F) -> F:
    """Map chatsync's error kinds onto Airflow: retry transient errors (raise as is), fail at once
    on configuration errors, invalid data and a failed validation (no retry would help)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            from airflow.sdk.exceptions import AirflowFailException
        except ImportError:  # Airflow 3.1 has it in airflow.exceptions only
            from airflow.exceptions import AirflowFailException

        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValidationError, ValidationFailed) as exc:
            log.error("%s: %s", type(exc).__name__, exc)
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def chat_table_assets() -> list:
    """The chat tables as Airflow Assets. The validate tasks update them once a repair has been
    validated, so a DAG of the user's scheduled on them (``schedule=[Asset("chatsync://chat-side/
    chat_participants")]``) runs after each repair that left the chat side correct. The URI names
    the mapping's logical table, the same whatever the real table is called."""
    from airflow.sdk import Asset

    from chatsync.model.rules import ENTITIES

    return [Asset(name=f"chatsync.{e.chat_table}", uri=f"chatsync://chat-side/{e.chat_table}", group="chatsync")
            for e in ENTITIES]


def record_validated_repair(context, outcome: dict, run_id: int) -> None:
    """Say in the Asset events which run repaired and validated the chat tables."""
    for asset in chat_table_assets():
        context["outlet_events"][asset].extra = {"run_id": run_id, "validation_passed": outcome["passed"],
                                                 "expectations": outcome.get("evaluated")}
