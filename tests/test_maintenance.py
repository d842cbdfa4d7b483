"""The daily and weekly maintenance DAGs, run for real on seeded history: the reports' contents,
what was repaired, rebuilt, deleted and kept, reruns and a 3-week backfill that change nothing twice."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

import pytest
from conftest import sides_equal

from chatsync.alerting import alerts

DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)


def run_for(dag, interval_start: datetime, length: timedelta):
    """dag.test() of the run whose data interval starts at interval_start (Airflow 3 dates a
    data-interval run by the end of its interval)."""
    return dag.test(logical_date=interval_start + length)


@pytest.fixture
def captured():
    seen: list[tuple[str, str]] = []

    def capture(kind, message, context):
        seen.append((kind, message))

    alerts.register(capture)
    yield seen
    alerts.unregister(capture)


@pytest.fixture
def reports(clean_db, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATSYNC_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "reports"


def _sync(db, day: datetime, n: int, delay_s: float, prefix: str) -> None:
    db.execute("INSERT INTO chatsync.sync_log (event_id, stream_id, type, room_id, user_id, occurred_at, processed_at, "
               "outcome, attempts, worker) SELECT %(p)s || g, %(p)s || g || '-0', "
               "CASE WHEN g %% 3 = 0 THEN 'room.archived' ELSE 'room.participant.added' END, 1, g, "
               "%(day)s + make_interval(secs => g * 10) - make_interval(secs => %(d)s), "
               "%(day)s + make_interval(secs => g * 10), 'applied', CASE WHEN g %% 10 = 0 THEN 2 ELSE 1 END, 'w' "
               "FROM generate_series(1, %(n)s) AS g", {"p": prefix, "day": day, "d": delay_s, "n": n})


def test_daily_review_flags_regressions_repairs_open_keys_and_escalates_recurring(
    db, clean_db, reports, captured, dagbag
):
    from chatsync.consistency.detect import detect
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=20, members=5, drift=0, seed=3)
    for d in range(1, 8):  # a quiet baseline week, then a slow day
        _sync(db, DAY - timedelta(days=d), 50, 0.1, f"b{d}-")
    _sync(db, DAY, 60, 2.0, "d-")
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, event_id, type, reason, raw, worker, received_at) VALUES "
               "('x1', 'a', 'room.exploded', 'unknown event type ''room.exploded''', '{}', 'w', %(t)s), "
               "('x2', 'b', 'room.melted', 'unknown event type ''room.melted''', '{}', 'w', %(t)s), "
               "('x3', 'c', 'room.archived', 'room 77 does not exist on the room side', '{}', 'w', %(t)s)",
               {"t": DAY + timedelta(hours=3)})
    # one participant drifted and found three times (recurring), still open at the end of the day
    room, user = db.execute("SELECT room_id, user_id FROM chat.chat_participants ORDER BY 1, 2 LIMIT 1").fetchone()
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = %s AND user_id = %s", (room, user))
    for _ in range(3):
        detect(clean_db)
    db.execute("UPDATE chatsync.inconsistencies SET detected_at = %s", (DAY + timedelta(hours=5),))

    dag_run = run_for(dagbag.get_dag("chat_maintenance_daily"), DAY, timedelta(days=1))
    assert dag_run.state == "success"
    report, markdown, attention = db.execute(
        "SELECT report, markdown, attention FROM chatsync.maintenance_reports WHERE kind = 'daily'").fetchone()
    assert report["interval"][0].startswith("2026-11-10")
    review = report["sync_review"]
    assert review["events"] == 60 and review["dead_letters"] == 3 and review["redeliveries"] == 6
    assert {(f["type"], f["error_class"], f["count"]) for f in review["failures"]} == {
        ("room.exploded", "unknown event type '…'", 1), ("room.melted", "unknown event type '…'", 1),
        ("room.archived", "room N does not exist on the room side", 1)}
    assert review["slowest"][0]["delay_s"] == 2.0
    assert [r["metric"] for r in report["performance"]["regressions"]] == ["sync_delay_p50_s", "sync_delay_p95_s",
                                                                            "sync_delay_p99_s"]
    resolution = report["resolution"]
    assert resolution["open_keys"] == 1 and resolution["repaired"] == 1
    assert resolution["recurring"][0]["room_id"] == room and resolution["recurring"][0]["runs"] == 3
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert attention is True and "**regression** sync_delay_p95_s" in markdown and "**recurring**" in markdown
    # a text for people: figures with their units, no Python value printed
    assert "- sync delay today: p50 2.0 s, p95 2.0 s, p99 2.0 s over 60 events" in markdown
    assert f"repaired: 1 (run {resolution['rechecked_run']})" in markdown
    assert "{" not in markdown and "None" not in markdown
    assert (reports / "daily" / "2026-11-10.md").read_text() == markdown
    assert [k for k, _ in captured] == ["maintenance_daily"]

    again = run_for(dagbag.get_dag("chat_maintenance_daily"), DAY, timedelta(days=1))  # a rerun of the same day
    assert again.state == "success"
    rerun = db.execute("SELECT report FROM chatsync.maintenance_reports WHERE kind = 'daily'").fetchone()[0]
    assert rerun["sync_review"] == review and rerun["resolution"]["repaired"] == 0
    assert db.execute("SELECT count(*) FROM chatsync.maintenance_reports").fetchone()[0] == 1


WEEK = datetime(2026, 11, 8, tzinfo=timezone.utc)  # a Sunday: @weekly intervals start there


def test_weekly_rebuilds_bloated_indexes_cleans_old_rows_and_keeps_what_is_needed(db, clean_db, reports, dagbag,
                                                                                  monkeypatch):
    monkeypatch.setenv("CHATSYNC_REINDEX_MIN_BYTES", "65536")
    end = WEEK + timedelta(days=7)
    # bloat on purpose: 40,000 sync-log rows of this week, 95 % deleted, then vacuumed
    _sync(db, WEEK, 40_000, 0.1, "bloat-")
    db.execute("DELETE FROM chatsync.sync_log WHERE event_id LIKE 'bloat-%%' AND right(event_id, 2) <> '00'")
    db.execute("VACUUM chatsync.sync_log")
    before = db.execute("SELECT pg_relation_size('chatsync.sync_log_pkey')").fetchone()[0]
    # old rows: a sync log of 40 days ago goes, one of 10 days ago stays
    _sync(db, end - timedelta(days=40), 30, 0.1, "old-")
    _sync(db, end - timedelta(days=10), 20, 0.1, "recent-")
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, reason, raw, worker, received_at) VALUES "
               "('d-old', 'bad', '{}', 'w', %s), ('d-new', 'bad', '{}', 'w', %s), "
               "('d-week', 'bad ''x''', '{}', 'w', %s)",
               (end - timedelta(days=100), end - timedelta(days=3), WEEK + timedelta(days=1)))
    run_id = db.execute(
        "INSERT INTO chatsync.runs (scope, status) VALUES ('full', 'repaired') RETURNING run_id"
    ).fetchone()[0]
    old = end - timedelta(days=45)
    db.execute("INSERT INTO chatsync.repair_audit "
               "(run_id, entity, action, room_id, user_id, before, after, changed_at) "
               "VALUES (%(r)s, 'participant', 'update', 1, 1, '{}', '{}', %(old)s), "
               "(%(r)s, 'participant', 'update', 2, 2, '{}', '{}', %(old)s), "
               "(%(r)s, 'participant', 'update', 3, 3, '{}', '{}', %(recent)s)",
               {"r": run_id, "old": old, "recent": end - timedelta(days=5)})
    db.execute("INSERT INTO chatsync.inconsistencies "
               "(run_id, kind, room_id, user_id, detected_at, resolved_at, status) "
               "VALUES (%(r)s, 'role_mismatch', 2, 2, %(old)s, NULL, 'open'), "      # keeps audit (2, 2)
               "(%(r)s, 'role_mismatch', 5, 5, %(ancient)s, %(ancient)s, 'repaired'), "  # resolved long ago: goes
               "(%(r)s, 'role_mismatch', 6, 6, %(ancient)s, NULL, 'open')",           # open: stays
               {"r": run_id, "old": old, "ancient": end - timedelta(days=120)})

    dag_run = run_for(dagbag.get_dag("chat_maintenance_weekly"), WEEK, timedelta(days=7))
    assert dag_run.state == "success"
    report, markdown = db.execute("SELECT report, markdown FROM chatsync.maintenance_reports "
                                  "WHERE kind = 'weekly'").fetchone()
    rebuilt = {x["index"]: x for x in report["indexes"]["reindexed"]}
    assert "chatsync.sync_log_pkey" in rebuilt
    assert (rebuilt["chatsync.sync_log_pkey"]["bytes_before"] == before
            > rebuilt["chatsync.sync_log_pkey"]["bytes_after"])
    assert db.execute("SELECT pg_relation_size('chatsync.sync_log_pkey')").fetchone()[0] < before
    deleted = {t: v["deleted"] for t, v in report["retention"].items()}
    assert deleted["sync_log"] == 30 and deleted["dead_letters"] == 1 and deleted["inconsistencies"] == 1
    assert deleted["repair_audit"] == 1  # (1, 1); (2, 2) is still needed by an open inconsistency
    assert db.execute("SELECT count(*) FROM chatsync.sync_log WHERE event_id LIKE 'recent-%%'").fetchone()[0] == 20
    assert sorted(r[0] for r in db.execute("SELECT room_id FROM chatsync.repair_audit")) == [2, 3]
    assert sorted(r[0] for r in db.execute("SELECT room_id FROM chatsync.inconsistencies")) == [2, 6]
    assert {e["error_class"]: (e["this_week"], e["trend"]) for e in report["errors"]["top_errors"]} == {
        "bad '…'": (1, "new"), "bad": (1, "new")}
    assert "rebuilt chatsync.sync_log_pkey" in markdown and (reports / "weekly" / "2026-11-08.md").exists()

    dag_run = run_for(dagbag.get_dag("chat_maintenance_weekly"), WEEK, timedelta(days=7))  # rerun: nothing twice
    assert dag_run.state == "success"
    rerun = db.execute("SELECT report FROM chatsync.maintenance_reports WHERE kind = 'weekly'").fetchone()[0]
    assert all(v["deleted"] == 0 for v in rerun["retention"].values())
    assert all(x.get("already_done") for x in rerun["indexes"]["reindexed"] if x["index"] == "chatsync.sync_log_pkey")
    assert db.execute("SELECT count(*) FROM chatsync.maintenance_actions WHERE action = 'reindex' "
                      "AND target = 'chatsync.sync_log_pkey'").fetchone()[0] == 1


def test_a_three_week_backfill_writes_three_reports(db, clean_db, reports, dagbag):
    dag = dagbag.get_dag("chat_maintenance_weekly")
    weeks = [WEEK - timedelta(days=7 * k) for k in (2, 1, 0)]
    for week in weeks:
        _sync(db, week + timedelta(days=1), 5, 0.1, f"w{week:%m%d}-")
    for week in weeks:
        assert run_for(dag, week, timedelta(days=7)).state == "success"
    starts = [r[0] for r in db.execute("SELECT interval_start FROM chatsync.maintenance_reports "
                                       "WHERE kind = 'weekly' ORDER BY 1")]
    assert starts == weeks
    assert sorted(p.name for p in (reports / "weekly").iterdir()) == [f"{w:%Y-%m-%d}.md" for w in weeks]


MONTH = datetime(2026, 10, 1, tzinfo=timezone.utc)


def test_monthly_audit_review_capacity_and_report_files(db, clean_db, reports, dagbag, monkeypatch):
    from fastapi.testclient import TestClient

    from chatsync.ops import health
    from chatsync.web.app import create_app
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    report_sim = simulate(clean_db, rooms=30, members=10, drift=0.03, seed=6)
    for day in range(0, 31, 3):  # a bucket every third day of the month, growing traffic
        start = MONTH + timedelta(days=day, hours=12)
        _sync(db, start, 10 + day, 0.2, f"m{day}-")
        health.record_bucket(clean_db, start, start + timedelta(minutes=5) + timedelta(seconds=10 * (10 + day)))
    db.execute("INSERT INTO chatsync.table_sizes (kind, interval_start, table_name, bytes, row_estimate, measured_at) "
               "VALUES ('weekly', %s, 'chat.chat_participants', 100000, 1000, %s)", (MONTH, MONTH + timedelta(days=2)))

    dag_run = run_for(dagbag.get_dag("chat_maintenance_monthly"), MONTH, timedelta(days=31))
    assert dag_run.state == "success"
    report, attention = db.execute("SELECT report, attention FROM chatsync.maintenance_reports "
                                   "WHERE kind = 'monthly'").fetchone()
    audit = report["audit"]
    assert audit["counts"] == report_sim.injected and audit["rows_to_change"] == report_sim.changed_keys
    assert audit["validation"]["passed"] is False and audit["validation"]["docs_index"].endswith("index.html")
    assert attention is True
    assert sides_equal(db)["participants"] > 0  # an audit detects; it does not repair
    days = report["review"]["days"]
    assert [d["events"] for d in days] == [10 + d for d in range(0, 31, 3)]
    assert report["review"]["trend"]["events"] > 0
    growth = report["capacity"]["chat.chat_participants"]
    assert growth["measurements"] == 2 and growth["bytes_per_day"] is not None
    folder = reports / "monthly" / "2026-10"
    for name in ("events.png", "delay_p95_s.png", "table_sizes.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "report.md").read_text()
    assert "## Full consistency audit" in markdown and "FAILED" in markdown and "![events](events.png)" in markdown
    html = (folder / "report.html").read_text()
    assert '<img src="events.png" alt="events" />' in html and "<table>" in html

    client = TestClient(create_app(lambda: clean_db.__class__.from_env(database_url=clean_db.database_url)))
    page = client.get("/health").text
    assert "href='reports/monthly/2026-10/report.html'" in page
    assert client.get("/reports/monthly/2026-10/report.html").text == html
    assert client.get("/reports/monthly/2026-10/..%2F..%2Fdaily").status_code == 404


@pytest.mark.parametrize("dag_id, kind, length", [
    ("chat_maintenance_daily", "daily", timedelta(days=1)),
    ("chat_maintenance_weekly", "weekly", timedelta(days=7)),
])
def test_a_run_without_a_logical_date_covers_the_last_complete_interval(db, clean_db, reports, dagbag, dag_id, kind,
                                                                        length):
    """The REST API's default trigger and `airflow dags trigger` give a run no logical date, hence no
    data interval: the run covers the schedule's last complete interval before it was due."""
    dag_run = dagbag.get_dag(dag_id).test(logical_date=None)
    assert dag_run.state == "success"
    assert dag_run.logical_date is None
    due = dag_run.run_after.astimezone(timezone.utc)
    end = due.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "weekly":  # the week ends on Sunday 00:00 UTC
        end -= timedelta(days=(end.weekday() + 1) % 7)
    (start, stop, markdown), = db.execute("SELECT interval_start, interval_end, markdown "
                                          "FROM chatsync.maintenance_reports WHERE kind = %s", (kind,)).fetchall()
    assert (start, stop) == (end - length, end)
    assert "None" not in markdown and "{" not in markdown
    if kind == "daily":  # nothing synced, nothing open
        assert "- sync delay today: no event synced" in markdown and "repaired: 0\n" in markdown


def test_reports_are_written_and_served_through_object_storage(db, clean_db, dagbag, monkeypatch):
    """reports_dir names an object store (fsspec's in-memory one here, shared by dag.test()'s tasks
    and the app in this process): the tasks write there and the health page reads from there,
    with no local folder involved."""
    from airflow.sdk import ObjectStoragePath
    from fastapi.testclient import TestClient

    from chatsync.config import Settings
    from chatsync.web.app import create_app
    from chatsync_devtools.simulate import simulate

    store = f"memory://chatsync-reports-{os.getpid()}"
    monkeypatch.setenv("CHATSYNC_REPORTS_DIR", store)
    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    simulate(clean_db, rooms=5, members=4, drift=0, seed=2)
    assert run_for(dagbag.get_dag("chat_maintenance_monthly"), MONTH, timedelta(days=31)).state == "success"
    assert run_for(dagbag.get_dag("chat_maintenance_daily"), DAY, timedelta(days=1)).state == "success"
    root = ObjectStoragePath(store)
    html = (root / "monthly" / "2026-10" / "report.html").read_text()
    assert "chatsync monthly report 2026-10" in html
    daily = db.execute("SELECT markdown FROM chatsync.maintenance_reports WHERE kind = 'daily'").fetchone()[0]
    assert (root / "daily" / "2026-11-10.md").read_text() == daily

    client = TestClient(create_app(lambda: Settings.from_env(database_url=clean_db.database_url)))
    assert "href='reports/monthly/2026-10/report.html'" in client.get("/health").text
    assert client.get("/reports/monthly/2026-10/report.html").text == html
    chart = client.get("/reports/monthly/2026-10/events.png")
    assert chart.headers["content-type"] == "image/png" and chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/reports/monthly/2026-10/..%2Freport.md").status_code == 404
    assert client.get("/reports/monthly/2026-1/report.html").status_code == 404
    # the audit's Data Docs, published beside the reports and linked from the page
    page = client.get("/health").text
    docs = re.search(r"href='(data-docs/[^']+/index.html)'", page)
    assert docs and (root / docs[1].replace("data-docs/", "data_docs/", 1)).is_file()
    index = client.get("/" + docs[1])
    assert index.status_code == 200 and "Data Docs" in index.text
    assert client.get("/data-docs/..%2F..%2Fmonthly%2F2026-10%2Freport.html").status_code == 404
