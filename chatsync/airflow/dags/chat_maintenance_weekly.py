"""chat_maintenance_weekly: the weekly maintenance, on the run's data interval (one week).

errors (top recurring dead-letter classes and their trend) → indexes (bloat from pgstattuple,
unused and duplicate indexes; REINDEX CONCURRENTLY the bloated ones, once per week; ANALYZE) →
retention (old sync log, dead letters, metrics, alerts, resolved findings and audit past the
rollback window, in bounded batches; never what an open inconsistency still needs) → report.
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
    dag_id="chat_maintenance_weekly",
    schedule=CronDataIntervalTimetable("0 0 * * 0", timezone="UTC"),  # runs cover [start, end)
    start_date=pendulum.datetime(2026, 1, 4, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    on_failure_callback=on_dag_failure,
    default_args=DEFAULT_ARGS,
    tags=["chatsync", "maintenance"],
    doc_md=__doc__,
)
def chat_maintenance_weekly():
    @task
    @fail_fast
    def errors() -> dict:
        return maintenance.error_review(settings_from_airflow(), *data_interval())

    @task
    @fail_fast
    def indexes() -> dict:
        return maintenance.jsonable(maintenance.index_care(settings_from_airflow(), data_interval()[0]))

    @task
    @fail_fast
    def retention() -> dict:
        return maintenance.retention(settings_from_airflow(), *data_interval())

    @task
    @fail_fast
    def report(errors: dict, indexes: dict, cleanup: dict) -> dict:
        out = maintenance.weekly_report(settings_from_airflow(), *data_interval(), errors, indexes, cleanup)
        return {"path": out["path"], "attention": out["attention"]}

    e, i = errors(), indexes()
    r = retention()
    i >> r  # rebuild before deleting: the sizes before/after are the rebuild's own
    report(e, i, r)
