"""chat_maintenance_daily: the daily maintenance, on the run's data interval (one day).

review (sync-log failures by type and error class, dead letters, slowest syncs, retries; sync
delay and run durations against the previous 7 days) and resolve (re-check and repair every key
still open; escalate keys that keep coming back) → report (stored, written as Markdown, alert
when something needs a person). Reruns and backfills give the same report.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from chatsync.airflow.callbacks import on_dag_failure
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, data_interval, fail_fast
from chatsync.ops import maintenance


@dag(
    dag_id="chat_maintenance_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),  # runs cover [start, end)
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    on_failure_callback=on_dag_failure,
    default_args=DEFAULT_ARGS,
    tags=["chatsync", "maintenance"],
    doc_md=__doc__,
)
def chat_maintenance_daily():
    @task
    @fail_fast
    def review() -> dict:
        return maintenance.daily_review(settings_from_airflow(), *data_interval())

    @task
    @fail_fast
    def resolve() -> dict:
        return maintenance.jsonable(maintenance.resolve_open(settings_from_airflow(), *data_interval()))

    @task
    @fail_fast
    def report(review: dict, resolution: dict) -> dict:
        out = maintenance.daily_report(settings_from_airflow(), *data_interval(), review, resolution)
        return {"path": out["path"], "attention": out["attention"]}

    report(review(), resolve())
