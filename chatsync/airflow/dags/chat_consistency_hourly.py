"""chat_consistency_hourly: the hourly consistency check between the room and chat tables.

plan_detect → detect_part (mapped: one task per room-id shard of a big full scan, else one) →
detect (sums up; discard_partial_detect instead when a part failed for good) → choose_path →
nothing_to_do | repair → validate | too_many → start_major_procedure (chat_major_inconsistency
with the run) → record_metrics → check_health (the alert thresholds) → outcome (fails unless the
chat side ended consistent). The logic lives in chatsync.consistency; this module only wires it.
Scope "auto" runs a full pass at midnight (the only one that sees deletes), incremental otherwise.
"""

import inspect
from datetime import timedelta

import pendulum
from airflow import __version__ as airflow_version
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task
from packaging.version import Version

from chatsync.airflow.callbacks import on_dag_failure, ui_link
from chatsync.airflow.connections import settings_from_airflow
from chatsync.airflow.tasks import DEFAULT_ARGS, chat_table_assets, fail_fast, record_validated_repair, run_label
from chatsync.consistency import engine, steps
from chatsync.ops import health

# A hand-over to a paused DAG fails instead of queueing unseen: the standard provider's option, which
# needs Airflow 3.2 (on 3.1 the target DAG is created unpaused, which is all there is).
FAIL_WHEN_PAUSED = {"fail_when_dag_is_paused": True} if (
    Version(airflow_version).release >= (3, 2)
    and "fail_when_dag_is_paused" in inspect.signature(TriggerDagRunOperator.__init__).parameters) else {}


@dag(
    dag_id="chat_consistency_hourly",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # with the repair lock: two passes never interleave
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=50),  # the deadline: past it, on_dag_failure alerts
    on_failure_callback=on_dag_failure,
    params={"scope": Param("auto", enum=["auto", "incremental", "full"], description="diff scope")},
    tags=["chatsync", "consistency"],
    doc_md=__doc__,
)
def chat_consistency_hourly():
    @task
    @fail_fast
    def plan_detect() -> list[dict]:
        ctx = get_current_context()
        scope = steps.choose_scope(ctx["params"]["scope"], ctx.get("logical_date"))
        return steps.plan_step(settings_from_airflow(), scope, run_label(ctx))

    @task(map_index_template="{{ part_label }}")
    @fail_fast
    def detect_part(part: dict) -> dict:
        get_current_context()["part_label"] = steps.part_label(part)
        return steps.shard_step(settings_from_airflow(), part)

    @task
    @fail_fast
    def detect(parts: list[dict], done: list[dict]) -> dict:
        # by index: iterating the mapped results reads one past the end (an "XCom not found" error line)
        return steps.finish_step(settings_from_airflow(), parts, [done[i] for i in range(len(done))])

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def discard_partial_detect(parts: list[dict]) -> None:
        steps.discard_step(settings_from_airflow(), parts)

    @task.branch
    def choose_path(found: dict) -> str:
        return {"nothing": "nothing_to_do", "repair": "repair", "major": "too_many"}[found["decision"]]

    @task
    @fail_fast
    def nothing_to_do(found: dict) -> None:
        steps.nothing_step(settings_from_airflow(), found["run_id"])

    @task
    @fail_fast
    def too_many(found: dict) -> dict:
        return steps.major_step(settings_from_airflow(), found)

    @task
    @fail_fast
    def repair(found: dict) -> dict:
        return steps.repair_step(settings_from_airflow(), found["run_id"])

    @task(outlets=chat_table_assets())  # a validated repair updates the chat tables' Assets
    @fail_fast
    def validate(found: dict) -> dict:
        outcome = steps.validate_step(settings_from_airflow(), found["run_id"])
        record_validated_repair(get_current_context(), outcome, found["run_id"])
        return outcome

    @task(trigger_rule=TriggerRule.ALL_DONE)
    @fail_fast
    def record_metrics(found: dict) -> dict:
        return engine.record(settings_from_airflow(), found["run_id"])

    @task(trigger_rule=TriggerRule.ALL_DONE)
    @fail_fast
    def check_health() -> dict:
        ctx = get_current_context()
        return {"alerts": health.evaluate(settings_from_airflow(), source="chat_consistency_hourly",
                                          link=ui_link(ctx))["alerts"]}

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    @fail_fast
    def outcome(found: dict) -> dict:
        return steps.outcome_step(settings_from_airflow(), found["run_id"])

    parts = plan_detect()
    done = detect_part.expand(part=parts)
    found = detect(parts, done)
    done >> discard_partial_detect(parts)
    nothing, major, repaired = nothing_to_do(found), too_many(found), repair(found)
    choose_path(found) >> [nothing, major, repaired]
    handed_over = TriggerDagRunOperator(task_id="start_major_procedure", trigger_dag_id="chat_major_inconsistency",
                                        conf=major, retries=0, **FAIL_WHEN_PAUSED)
    validated = validate(found)
    repaired >> validated
    recorded = record_metrics(found)
    [nothing, handed_over, validated] >> recorded
    recorded >> check_health() >> outcome(found)
