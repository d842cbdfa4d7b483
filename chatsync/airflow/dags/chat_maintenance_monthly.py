"""chat_maintenance_monthly: the monthly maintenance, on the run's data interval (a month).

audit (scope full, detect only, Great Expectations over the whole chat side, Data Docs) →
report (performance of the month day by day with trends, capacity: table sizes, growth and the
size projected in 90 days; Markdown + HTML with PNG charts under reports/monthly/YYYY-MM/, linked
from the health page).
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
    dag_id="chat_maintenance_monthly",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),  # runs cover [start, end)
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    on_failure_callback=on_dag_failure,
    default_args=DEFAULT_ARGS,
    tags=["chatsync", "maintenance"],
    doc_md=__doc__,
)
def chat_maintenance_monthly():
    @task
    @fail_fast
    def audit() -> dict:
        return maintenance.full_audit(settings_from_airflow(), *data_interval())

    @task
    @fail_fast
    def report(audit: dict) -> dict:
        out = maintenance.monthly_report(settings_from_airflow(), *data_interval(), audit)
        return {"folder": out["folder"], "attention": out["attention"]}

    report(audit())
