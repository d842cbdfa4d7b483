"""Airflow failure callbacks: one alert per failed task or DAG run (deadline missed included) on the
configured channels (Slack, email) and in the log, with a link to the run in the UI."""

from __future__ import annotations

import logging

log = logging.getLogger("chatsync.airflow")


def on_task_failure(context) -> None:
    """Every chatsync task's on_failure_callback: one alert naming the task, the run, the error
    and the log, on the configured channels (Slack, email) and in the log."""
    from chatsync.alerting import alerts, notifiers

    channels = notifiers.use_airflow_channels()
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    exc = context.get("exception")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
    run_id = getattr(dag_run, "run_id", None)
    link = getattr(ti, "log_url", None)
    message = (f"task {where} failed in run {run_id} (try {getattr(ti, 'try_number', '?')}): "
               f"{type(exc).__name__ if exc else 'error'}: {exc}" + (f" — log: {link}" if link else ""))
    alerts.notify("task_failed", message, dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None),
                  run_id=run_id, event="failure", channels=channels)


def on_dag_failure(context) -> None:
    """Every chatsync DAG's on_failure_callback: a run that failed or ran past its dagrun_timeout
    (the deadline: `reason` says "timed_out")."""
    from chatsync.alerting import alerts, notifiers

    channels = notifiers.use_airflow_channels()
    dag_run = context.get("dag_run")
    reason = context.get("reason") or "failed"
    dag_id = getattr(dag_run, "dag_id", "?")
    what = "ran past its deadline (dagrun_timeout)" if "time" in str(reason) else f"failed ({reason})"
    alerts.notify("dag_run_failed" if "time" not in str(reason) else "deadline_missed",
                  f"DAG {dag_id} run {getattr(dag_run, 'run_id', '?')} {what} — {ui_link(context)}",
                  dag_id=dag_id, run_id=getattr(dag_run, "run_id", None), event="failure", channels=channels)


def ui_link(context) -> str:
    """The Airflow UI page of the task's DAG run (api.base_url), for alert messages."""
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    dag_run = context.get("dag_run")
    return f"{base}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id)}" if dag_run else base
