"""Alerts sent for real: a local SMTP server (aiosmtpd) and a local HTTP server standing in for the
Slack webhook; thresholds breached, deduplicated and resolved; metrics buckets; the DAG callbacks."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port

from chatsync.alerting import notifiers
from chatsync.ops import health


class Inbox:
    def __init__(self):
        self.slack: list[dict] = []
        self.mail: list = []


@pytest.fixture
def channels(monkeypatch):
    """Real Slack-webhook and SMTP endpoints on localhost, wired as the Airflow connections."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            inbox.slack.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            inbox.mail.append(message_from_bytes(envelope.content, policy=default_policy))
            return "250 OK"

    smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_SLACK", json.dumps({
        "conn_type": "slackwebhook", "password": f"http://127.0.0.1:{http.server_port}/services/T0/B0/secret"}))
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "to": "ops@example.com, sre@example.com",
                  "from_email": "chatsync@example.com"}}))
    notifiers.reset()
    assert notifiers.use_airflow_channels() == ["email", "slack"]
    yield inbox
    notifiers.reset()
    smtp.stop()
    http.shutdown()


def _open_findings(db, n: int, kind: str = "role_mismatch") -> int:
    run_id = db.execute(
        "INSERT INTO chatsync.runs (scope, status) VALUES ('full', 'major') RETURNING run_id"
    ).fetchone()[0]
    db.execute("INSERT INTO chatsync.inconsistencies (run_id, kind, room_id, user_id) "
               "SELECT %s, %s, 1, g FROM generate_series(1, %s) AS g", (run_id, kind, n))
    return run_id


def test_threshold_breach_is_sent_once_then_resolved(db, clean_db, channels):
    _open_findings(db, 11)
    first = health.evaluate(clean_db, source="test")
    assert [a["condition"] for a in first["alerts"]] == ["inconsistency_count"]
    assert len(channels.slack) == 1 and len(channels.mail) == 1
    text = channels.slack[0]["text"]
    assert "ALERT: inconsistency_count" in text and "11 inconsistencies open (role_mismatch 11)" in text
    assert "threshold 10" in text and channels.slack[0]["path"] == "/services/T0/B0/secret"
    mail = channels.mail[0]
    assert mail["Subject"] == "[chatsync] ALERT: inconsistency_count"
    assert mail["To"] == "ops@example.com, sre@example.com" and mail["From"] == "chatsync@example.com"
    assert "11 inconsistencies open" in mail.get_body(("html",)).get_content()

    _open_findings(db, 3)  # worse, but the same condition: no new message
    assert health.evaluate(clean_db, source="test")["alerts"] == []
    assert len(channels.slack) == 1 and len(channels.mail) == 1

    db.execute("UPDATE chatsync.inconsistencies SET resolved_at = now(), status = 'repaired'")
    resolved = health.evaluate(clean_db, source="test")["alerts"]
    assert [(a["condition"], a["event"]) for a in resolved] == [("inconsistency_count", "resolved")]
    assert ("RESOLVED: inconsistency_count" in channels.slack[1]["text"]
            and "0 inconsistencies open" in channels.slack[1]["text"])
    assert channels.mail[1]["Subject"] == "[chatsync] RESOLVED: inconsistency_count"
    log = db.execute("SELECT condition, event, value FROM chatsync.alert_log ORDER BY id").fetchall()
    assert log == [("inconsistency_count", "firing", 11.0), ("inconsistency_count", "resolved", 0.0)]
    assert db.execute(
        "SELECT firing FROM chatsync.alert_state WHERE condition = 'inconsistency_count'"
    ).fetchone() == (False,)


def test_still_firing_is_repeated_only_after_the_dedup_window(db, clean_db, channels, with_settings):
    _open_findings(db, 12)
    s = with_settings(alert_repeat_minutes=30)
    t0 = datetime.now(timezone.utc)
    assert len(health.evaluate(s, at=t0)["alerts"]) == 1
    assert health.evaluate(s, at=t0 + timedelta(minutes=29))["alerts"] == []
    again = health.evaluate(s, at=t0 + timedelta(minutes=31))["alerts"]
    assert [(a["condition"], a["event"]) for a in again] == [("inconsistency_count", "repeat")]
    assert "STILL FIRING: inconsistency_count" in channels.slack[-1]["text"]


def _sync_log(db, n: int, delay_s: float, start: int = 0) -> None:
    db.execute("INSERT INTO chatsync.sync_log (event_id, stream_id, type, room_id, user_id, occurred_at, "
               "processed_at, outcome, worker) SELECT 'e' || g, g || '-0', 'room.participant.added', 1, g, "
               "now() - make_interval(secs => %s), now(), 'applied', 'w' FROM generate_series(%s::int, %s::int) AS g",
               (delay_s, start, start + n - 1))


def test_sync_delay_and_error_rate_conditions_carry_their_figures(db, clean_db, channels):
    _sync_log(db, 30, 6.5)
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, reason, raw, worker) "
               "SELECT g || '-9', 'unknown event type', '{}', 'w' FROM generate_series(1, 2) AS g")
    sent = {a["condition"]: a["message"] for a in health.evaluate(clean_db)["alerts"]}
    assert set(sent) == {"sync_delay", "error_rate"}
    assert "sync delay p95 6.5" in sent["sync_delay"] and "threshold 5.0s" in sent["sync_delay"]
    assert "sync error rate 6.25% (2 dead letters of 32 events)" in sent["error_rate"]
    assert {m["Subject"] for m in channels.mail} == {"[chatsync] ALERT: sync_delay", "[chatsync] ALERT: error_rate"}


def test_error_rate_needs_enough_events(db, clean_db, channels):
    _sync_log(db, 3, 0.1)
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, reason, raw, worker) VALUES ('1-9', 'bad', '{}', 'w')")
    assert health.evaluate(clean_db)["alerts"] == []  # 25 % of 4 events is noise, not an outage
    # and the state the health page shows says why a 25 % rate reads "ok"
    firing, message = db.execute("SELECT firing, message FROM chatsync.alert_state "
                                 "WHERE condition = 'error_rate'").fetchone()
    assert firing is False and message.startswith("sync error rate 25.00% (1 dead letters of 4 events)")
    assert message.endswith("; not judged: fewer than 20 events in the window (error_rate_min_events)")


def test_metrics_bucket_is_recorded_once_per_interval(db, clean_db):
    _sync_log(db, 10, 0.2)
    _open_findings(db, 2, "ban_mismatch")
    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    start = end - timedelta(minutes=5)
    first = health.record_bucket(clean_db, start, end)
    again = health.record_bucket(clean_db, start, end)
    assert first["metrics"] == again["metrics"]
    rows = dict(((name, json.dumps(labels, sort_keys=True)), value) for name, labels, value in db.execute(
        "SELECT name, labels, value FROM chatsync.metric_buckets WHERE bucket_start = %s", (start,)))
    assert len(rows) == first["metrics"]
    assert rows[("events_synced", "{}")] == 10 and rows[("sync_success_rate", "{}")] == 1.0
    assert rows[("open_inconsistencies", "{}")] == 2
    assert rows[("inconsistencies_detected", '{"kind": "ban_mismatch"}')] == 2
    assert abs(rows[("sync_delay_seconds", '{"stat": "p95"}')] - 0.2) < 0.05


def test_task_failure_reaches_slack_and_email_through_the_dag_callback(clean_db, channels, dagbag, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CHATSYNC_DB")
    dag = dagbag.get_dag("chat_consistency_hourly")
    dag_run = dag.test(run_conf={"scope": "full"})
    assert dag_run.state == "failed"
    texts = [m["text"] for m in channels.slack]
    failed = [t for t in texts if "task_failed" in t]
    assert failed and "task chat_consistency_hourly.plan_detect failed in run manual__" in failed[0]
    assert "chatsync_db" in failed[0]  # the error itself: the missing connection, named
    assert any(m["Subject"] == "[chatsync] FAILED: task_failed" for m in channels.mail)


def test_health_dag_records_and_evaluates(db, clean_db, channels, dagbag):
    _open_findings(db, 15)
    dag_run = dagbag.get_dag("chat_sync_health").test()
    assert dag_run.state == "success"
    assert db.execute("SELECT count(*) FROM chatsync.metric_buckets").fetchone()[0] > 10
    assert db.execute("SELECT condition, event, source FROM chatsync.alert_log").fetchall() == [
        ("inconsistency_count", "firing", "chat_sync_health")]
    assert "/dags/chat_sync_health/runs/" in channels.slack[0]["text"]  # a link to the run in the UI


def test_a_run_past_its_timeout_is_reported_as_a_missed_deadline(channels):
    from types import SimpleNamespace

    from chatsync.airflow.callbacks import on_dag_failure

    on_dag_failure({"dag_run": SimpleNamespace(dag_id="chat_consistency_hourly", run_id="scheduled__2026-11-24T10:00"),
                    "reason": "timed_out"})
    [text] = [m["text"] for m in channels.slack]
    assert "deadline_missed" in text and "ran past its deadline (dagrun_timeout)" in text
    assert "/dags/chat_consistency_hourly/runs/scheduled__2026-11-24T10%3A00" in text
    assert channels.mail[0]["Subject"] == "[chatsync] FAILED: deadline_missed"


def test_health_dag_run_without_a_logical_date_records_the_last_complete_bucket(db, clean_db, channels, dagbag):
    """A run triggered with no logical date (the REST API's default) records the 5-minute bucket
    that ended last before it was due."""
    dag_run = dagbag.get_dag("chat_sync_health").test(logical_date=None)
    assert dag_run.state == "success" and dag_run.logical_date is None
    due = dag_run.run_after.astimezone(timezone.utc)
    end = due.replace(minute=due.minute - due.minute % 5, second=0, microsecond=0)
    assert db.execute("SELECT DISTINCT bucket_start FROM chatsync.metric_buckets").fetchall() == [
        (end - timedelta(minutes=5),)]
