"""chat_redis_recovery: the procedure for a lost Redis, triggered by hand from the UI (the
event worker runs the same recovery by itself once Redis answers again).

reconnect (ping with exponential backoff and jitter) → plan (the outbox's rooms and the chat rows
changed since the outage began, or everything when the outage outlived the outbox or Redis came
back empty) → resync → verify (the cache against the chat tables) → close (empty the outbox, close
the outage, say so on the alert channels).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from chatsync.airflow.callbacks import on_dag_failure
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, fail_fast
from chatsync.events import redis_recovery


@dag(
    dag_id="chat_redis_recovery",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    on_failure_callback=on_dag_failure,
    default_args=DEFAULT_ARGS,
    params={"scope": Param("auto", enum=["auto", "all"], description="auto: what the outage touched; all: every room"),
            "max_wait_seconds": Param(300, type="integer", minimum=1, maximum=3600,
                                      description="how long reconnect waits for Redis (then the task retries)")},
    tags=["chatsync", "recovery"],
    doc_md=__doc__,
)
def chat_redis_recovery():
    @task
    @fail_fast
    def reconnect(params=None) -> int:
        return redis_recovery.with_client(settings_from_airflow(), redis_recovery.reconnect, params["max_wait_seconds"])

    @task
    @fail_fast
    def plan(tries: int, params=None) -> dict:
        return redis_recovery.with_client(settings_from_airflow(), redis_recovery.plan, params["scope"])

    @task
    @fail_fast
    def resync(planned: dict) -> dict:
        return redis_recovery.with_client(settings_from_airflow(), redis_recovery.resync, planned)

    @task(retries=0)
    @fail_fast
    def verify(planned: dict, resynced: dict) -> dict:
        return redis_recovery.with_client(settings_from_airflow(), redis_recovery.verify, planned)

    @task
    @fail_fast
    def close(planned: dict, resynced: dict, verified: dict) -> dict:
        return redis_recovery.close(settings_from_airflow(), planned, resynced, verified)

    planned = plan(reconnect())
    resynced = resync(planned)
    close(planned, resynced, verify(planned, resynced))
