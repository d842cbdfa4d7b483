"""chat_major_inconsistency: the procedure for a major inconsistency, triggered by hand with
room ids ({"rooms": [12, 13]}) or with the major run of the hourly check ({"run_id": 42}).

stop_writes (freeze under a lease) → analyse (counts by kind per room, since when, likely cause
from the sync log and dead letters) → plan (rows in correction_plans) → route: small enough → apply; bigger than
the repair threshold → approve (a person approves in the Airflow UI, human-in-the-loop) → apply
(the audited repair) → validate (GX) → resume_writes → finish. A rejected plan or a failure
anywhere leaves writes frozen only until the lease ends; finish says until when (and fails the run
unless a person rejected the plan).
"""

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from chatsync.airflow.callbacks import on_dag_failure
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, chat_table_assets, fail_fast, record_validated_repair, run_label
from chatsync.consistency import steps
from chatsync.ops import major


@dag(
    dag_id="chat_major_inconsistency",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # the hourly DAG hands its major runs over: a paused DAG would queue them silently
    max_active_runs=1,  # one procedure at a time: one approval request per incident
    dagrun_timeout=timedelta(hours=24),
    on_failure_callback=on_dag_failure,
    default_args={**DEFAULT_ARGS, "retries": 2},
    params={"rooms": Param([], type="array", items={"type": ["integer", "string"]}, description="room ids to treat"),
            "run_id": Param(None, type=["null", "integer"], description="or: the major run of the hourly check"),
            "lease_seconds": Param(7200, type="integer", minimum=60, maximum=604800,
                                   description="writes resume by themselves after this if the procedure dies")},
    tags=["chatsync", "recovery"],
    doc_md=__doc__,
)
def chat_major_inconsistency():
    @task
    @fail_fast
    def stop_writes() -> dict:
        ctx = get_current_context()
        p = ctx["params"]
        rooms = major.rooms_of(settings_from_airflow(), p["rooms"], p["run_id"])
        return {"rooms": rooms, **major.stop_writes(settings_from_airflow(), rooms, p["lease_seconds"], run_label(ctx))}

    @task
    @fail_fast
    def analyse(frozen: dict) -> dict:
        return major.analyse(settings_from_airflow(), frozen["rooms"], run_label(get_current_context()))

    @task
    @fail_fast
    def plan(analysis: dict) -> dict:
        return major.plan(settings_from_airflow(), analysis)

    @task.branch
    def route(correction: dict) -> str:
        return "approve" if correction["needs_approval"] else "apply"

    approve = ApprovalOperator(
        task_id="approve",
        subject="chatsync: approve the correction plan of a major inconsistency",
        body="{{ ti.xcom_pull(task_ids='plan')['text'] }}",  # Markdown
        response_timeout=timedelta(hours=12),
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    @fail_fast
    def apply(correction: dict) -> dict:
        return steps.repair_step(settings_from_airflow(), correction["run_id"])

    @task(retries=0, outlets=chat_table_assets())  # a validated repair updates the chat tables' Assets
    @fail_fast
    def validate(correction: dict) -> dict:
        outcome = steps.validate_step(settings_from_airflow(), correction["run_id"])
        record_validated_repair(get_current_context(), outcome, correction["run_id"])
        return outcome

    @task
    @fail_fast
    def resume_writes(frozen: dict, correction: dict) -> dict:
        return major.resume_writes(settings_from_airflow(), frozen["rooms"], correction["run_id"])

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    @fail_fast
    def finish() -> dict:
        ti = get_current_context()["ti"]
        frozen, correction = ti.xcom_pull(task_ids="stop_writes"), ti.xcom_pull(task_ids="plan")
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=["approve", "apply"], run_ids=[ti.run_id])[ti.run_id]
        return major.finish(settings_from_airflow(), (frozen or {}).get("rooms", []),
                            (correction or {}).get("run_id"),
                            resumed=ti.xcom_pull(task_ids="resume_writes") is not None,
                            rejected=states.get("approve") == "success" and states.get("apply") == "skipped")

    frozen = stop_writes()
    correction = plan(analyse(frozen))
    applied = apply(correction)
    route(correction) >> [approve, applied]
    approve >> applied
    applied >> validate(correction) >> resume_writes(frozen, correction) >> finish()
