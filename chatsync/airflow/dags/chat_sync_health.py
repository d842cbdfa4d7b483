"""chat_sync_health: the alert thresholds, every 5 minutes.

record_bucket stores the metrics of the run's data interval (a rerun or a backfill rewrites the
same bucket); evaluate checks sync delay, error rate and open inconsistencies over the last
window and sends one alert per condition when it starts, none while it lasts, one when it clears;
expire_freezes lifts write freezes whose lease ended (their procedure died) and says so;
fold_fingerprints folds the fingerprint triggers' log (when installed), so the next full detect
only diffs the keys that changed.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from chatsync.airflow.callbacks import on_dag_failure, ui_link
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, data_interval, fail_fast
from chatsync.ops import health


@dag(
    dag_id="chat_sync_health",
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),  # runs cover [start, end)
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=5),
    on_failure_callback=on_dag_failure,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["chatsync", "monitoring"],
    doc_md=__doc__,
)
def chat_sync_health():
    @task
    @fail_fast
    def record_bucket() -> dict:
        out = health.record_bucket(settings_from_airflow(), *data_interval())
        return {"bucket_start": out["bucket_start"], "metrics": out["metrics"]}

    @task
    @fail_fast
    def evaluate() -> dict:
        ctx = get_current_context()
        out = health.evaluate(settings_from_airflow(), source="chat_sync_health", link=ui_link(ctx))
        return {"alerts": out["alerts"]}

    @task
    @fail_fast
    def expire_freezes() -> dict:
        from chatsync.ops.freeze import expire

        return expire(settings_from_airflow())

    @task
    @fail_fast
    def fold_fingerprints() -> dict:
        from chatsync.consistency.fingerprints import fold_pending

        return {"keys_waiting_for_detect": fold_pending(settings_from_airflow())}

    record_bucket() >> evaluate()
    expire_freezes()
    fold_fingerprints()
