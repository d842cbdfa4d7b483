"""chat_events_drain: the fallback road for room events when no `chatsync worker` runs.

Every 5 minutes, drain the Redis Stream backlog with the worker's own code (same consumer
group) for at most 4 minutes, then report the backlog. Beside running workers (a consumer that
read within 30 s) it ends at once, holding no Airflow worker slot. Idempotent: an event is
acknowledged only after its sync is committed.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from chatsync.airflow.callbacks import on_dag_failure
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, fail_fast

DRAIN_SECONDS = 240  # leaves a minute before the next run is due


@dag(
    dag_id="chat_events_drain",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    on_failure_callback=on_dag_failure,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["chatsync", "events"],
    doc_md=__doc__,
)
def chat_events_drain():
    @task(execution_timeout=timedelta(seconds=DRAIN_SECONDS + 45))
    @fail_fast
    def drain() -> dict:
        from chatsync.events.worker import drain as drain_backlog

        return drain_backlog(settings_from_airflow(), name="airflow-drain", max_seconds=DRAIN_SECONDS)

    drain()
