"""Alert channels through Airflow's providers: Slack (incoming webhook) and email (SMTP).

Each channel exists when its Airflow connection does — ``chatsync_slack`` (type Slack Incoming
Webhook) and ``chatsync_smtp`` (type SMTP; extra ``to``: comma-separated recipients, and
``from_email``) — and is simply absent otherwise: nothing to switch off, nothing fails.
``use_airflow_channels()`` registers the configured ones with ``chatsync.alerting.alerts`` (idempotent).
Airflow is imported inside the functions: DAG files import this module.
"""

from __future__ import annotations

import html
import logging

from chatsync.alerting import alerts

log = logging.getLogger("chatsync.notifiers")


SLACK_CONN_ID = "chatsync_slack"
SMTP_CONN_ID = "chatsync_smtp"
_registered: dict[str, alerts.Notifier] = {}


def _connection(conn_id: str):
    """The Airflow connection, or None when it is not defined."""
    try:
        from airflow.sdk import Connection

        return Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - not configured is a normal state (AirflowNotFoundException)
        return None


def _title(kind: str, context: dict) -> str:
    event = context.get("event", "firing")
    word = {"resolved": "RESOLVED", "repeat": "STILL FIRING", "failure": "FAILED"}.get(event, "ALERT")
    return f"[chatsync] {word}: {kind}"


def slack(kind: str, message: str, context: dict) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    SlackWebhookNotifier(slack_webhook_conn_id=SLACK_CONN_ID,
                         text=f"*{_title(kind, context)}*\n{message}").notify({})


def email(kind: str, message: str, context: dict) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    conn = _connection(SMTP_CONN_ID)
    extra = (conn.extra_dejson if conn else {}) or {}
    to = [a.strip() for a in str(extra.get("to", "")).split(",") if a.strip()]
    if not to:
        log.warning("connection %s has no 'to' in its extra: email alert not sent", SMTP_CONN_ID)
        return
    rows = "".join(f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in context.items())
    SmtpNotifier(smtp_conn_id=SMTP_CONN_ID, to=to, from_email=extra.get("from_email"),
                 subject=_title(kind, context),
                 html_content=f"<p>{html.escape(message)}</p><table>{rows}</table>").notify({})


def use_airflow_channels() -> list[str]:
    """Register the channels whose connection exists; returns their names."""
    for name, conn_id, fn in (("slack", SLACK_CONN_ID, slack), ("email", SMTP_CONN_ID, email)):
        if name in _registered:
            continue
        if _connection(conn_id) is not None:
            _registered[name] = fn
            alerts.register(fn)
    return sorted(_registered)


def reset() -> None:
    """Forget the registered channels (tests; a process that changed its connections)."""
    for fn in _registered.values():
        alerts.unregister(fn)
    _registered.clear()
