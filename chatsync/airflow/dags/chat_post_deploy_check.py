"""chat_post_deploy_check: after a deployment, trigger with {"version": "..."}.

schema (no pending migration, the mapping matches) → audit (scope full, detect only, then the GX
suite) → verdict (stored in deploy_checks; fails the run, alerting, with the rollback commands
when anything differs or the validation fails).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from chatsync.airflow.callbacks import on_dag_failure
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, fail_fast
from chatsync.ops import deploy, maintenance


@dag(
    dag_id="chat_post_deploy_check",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    dagrun_timeout=timedelta(hours=2),
    on_failure_callback=on_dag_failure,
    default_args={**DEFAULT_ARGS, "retries": 1},
    params={"version": Param(type="string", minLength=1, description="the version just deployed"),
            "deployed_hours_ago": Param(2, type="integer", minimum=0,
                                        description="repairs since then can be rolled back")},
    tags=["chatsync", "deployment"],
    doc_md=__doc__,
)
def chat_post_deploy_check():
    @task
    @fail_fast
    def schema() -> dict:
        return deploy.schema_check(settings_from_airflow())

    @task
    @fail_fast
    def audit() -> dict:
        ctx = get_current_context()
        start = ctx["dag_run"].start_date
        return maintenance.full_audit(settings_from_airflow(), start, start)

    @task
    @fail_fast
    def verdict(schema: dict, audit: dict) -> dict:
        params = get_current_context()["params"]
        report = deploy.record(settings_from_airflow(), params["version"],
                               deploy.default_since(params["deployed_hours_ago"]), schema, audit)
        if not report["passed"]:
            from chatsync.errors import ValidationError

            raise ValidationError(f"deployment {params['version']} failed its check; rollback: "
                                  + " | ".join(report["rollback"]))
        return report

    s = schema()
    a = audit()
    s >> a
    verdict(s, a)
