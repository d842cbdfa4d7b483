"""The health page and /metrics: numbers checked against the database, /metrics read by the
Prometheus parser, the page rendered by headless Chromium (screenshot kept in test-artifacts/),
and the plugin mounted by Airflow's own api-server app."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from conftest import REPO, free_port

from chatsync.ops import health

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def seeded(db, clean_db):
    """A day of history: synced events in every 5-minute bucket, dead letters, open findings,
    a frozen chat, a run, and the alert state after one evaluation."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    db.execute("INSERT INTO chatsync.sync_log (event_id, stream_id, type, room_id, user_id, occurred_at, processed_at, "
               "outcome, worker) SELECT 'e' || g, g || '-0', 'room.participant.added', 1, g, "
               "%(now)s - make_interval(mins => g %% 288 * 5) - interval '0.4 s', "
               "%(now)s - make_interval(mins => g %% 288 * 5), 'applied', 'w' FROM generate_series(1, 900) AS g",
               {"now": now})
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, event_id, type, reason, raw, worker) VALUES "
               "('9-1', 'x1', 'room.exploded', 'unknown event type ''room.exploded''', '{}', 'w'), "
               "('9-2', NULL, NULL, 'missing field ''event_id''', '{}', 'w')")
    run_id = db.execute("INSERT INTO chatsync.runs (scope, status, counts) VALUES ('full', 'major', "
                        "'{\"role_mismatch\": 13}') RETURNING run_id").fetchone()[0]
    db.execute("INSERT INTO chatsync.inconsistencies (run_id, kind, room_id, user_id) "
               "SELECT %s, 'role_mismatch', 7, g FROM generate_series(1, 13) AS g", (run_id,))
    db.execute("INSERT INTO chatsync.inconsistencies (run_id, kind, room_id, user_id) "
               "VALUES (%s, 'ban_mismatch', 7, 1)",
               (run_id,))
    db.execute("INSERT INTO chat.chat_rooms (room_id, status, writes_frozen) VALUES (4242, 'LIVE', true)")
    for i in range(1, 289, 12):  # a bucket every hour of the last day
        health.record_bucket(clean_db, now - timedelta(minutes=5 * i), now - timedelta(minutes=5 * (i - 1)))
    health.evaluate(clean_db, at=now + timedelta(seconds=30))
    return clean_db


def test_metrics_endpoint_parses_and_matches_the_database(seeded, db):
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from chatsync.web.app import create_app

    response = TestClient(create_app(lambda: seeded)).get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    open_roles = db.execute("SELECT count(DISTINCT (room_id, user_id)) FROM chatsync.inconsistencies "
                            "WHERE kind = 'role_mismatch' AND resolved_at IS NULL").fetchone()[0]
    assert samples[("chatsync_open_inconsistencies", (("kind", "role_mismatch"),))] == open_roles == 13
    assert samples[("chatsync_open_inconsistencies", (("kind", "ban_mismatch"),))] == 1
    assert samples[("chatsync_alert_firing", (("condition", "inconsistency_count"),))] == 1
    assert samples[("chatsync_alert_firing", (("condition", "sync_delay"),))] == 0
    recent = db.execute(
        "SELECT count(*) FROM chatsync.sync_log WHERE processed_at >= now() - interval '15 minutes'"
    ).fetchone()[0]
    assert samples[("chatsync_events_synced", ())] == recent > 0
    assert abs(samples[("chatsync_sync_delay_seconds", (("stat", "p95"),))] - 0.4) < 0.01


def test_health_json_carries_the_page_data(seeded, db):
    from fastapi.testclient import TestClient

    from chatsync.web.app import create_app

    data = TestClient(create_app(lambda: seeded)).get("/health.json").json()
    assert data["healthy"] is False
    assert [a["condition"] for a in data["alerts"] if a["firing"]] == ["inconsistency_count"]
    assert data["frozen_chats"][0]["room_id"] == 4242
    assert {d["event_id"] for d in data["dead_letters"]} == {"x1", None}
    chart = next(c for c in data["charts"] if c["name"] == "events_synced")
    assert len(chart["series"]["24 h"]) == 24 and len(chart["series"]["7 days"]) >= 24
    assert data["last_runs"][0]["status"] == "major" and data["last_runs"][0]["found"] == 13



def test_health_page_in_headless_chromium(seeded, db, tmp_path):
    import uvicorn
    from fastapi import FastAPI

    from chatsync.web.app import create_app

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make test installs it when missing)"
    root = FastAPI()
    root.mount("/chatsync", create_app(lambda: seeded))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "health.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1800"]
        url = f"http://127.0.0.1:{port}/chatsync/health"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=120)
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                             timeout=120).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert re.search(r'id="status">ALERTING<', dom)

    def shown(name: str) -> str:
        return re.search(rf"data-metric=\"{name}\"><span class=\"v\">([^<]*)<", dom).group(1)

    open_total = db.execute("SELECT count(*) FROM (SELECT DISTINCT kind, room_id, user_id "
                            "FROM chatsync.inconsistencies "
                            "WHERE resolved_at IS NULL) k").fetchone()[0]
    assert shown("open_inconsistencies") == str(open_total) == "14"
    recent = db.execute(
        "SELECT count(*) FROM chatsync.sync_log WHERE processed_at >= now() - interval '15 minutes'"
    ).fetchone()[0]
    assert shown("events_synced") == str(recent)
    assert "4242" in dom and "unknown event type" in dom and dom.count("<polyline") == 8


def test_the_plugin_mounts_in_airflows_api_server_behind_its_login(seeded, airflow_db, monkeypatch):
    import json

    from fastapi.testclient import TestClient

    monkeypatch.setenv("CHATSYNC_DATABASE_URL", seeded.database_url)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "oncall:viewer")
    passwords = airflow_db / "chatsync_test_passwords.json"
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    from airflow.api_fastapi.app import create_app as airflow_app
    from airflow.plugins_manager import get_plugin_info

    assert any(p["name"] == "chatsync" for p in get_plugin_info())  # found through its entry point
    from chatsync.airflow.plugin import ChatsyncPlugin

    view = ChatsyncPlugin.external_views[0]
    assert view["href"] == "/chatsync/health" and view["category"] == "browse"
    client = TestClient(airflow_app(apps="core"))  # its auth manager writes the users' passwords

    # no Airflow login: refused, and a browser is sent to the login page and back
    for path in ("/chatsync/health", "/chatsync/health.json", "/chatsync/reports/monthly/2026-10/report.html"):
        assert client.get(path).status_code == 401, path
    browser = client.get("/chatsync/health", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303 and "login" in browser.headers["location"]
    assert "chatsync%2Fhealth" in browser.headers["location"] or "chatsync/health" in browser.headers["location"]
    forged = client.get("/chatsync/health", headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code in (401, 403)

    # an Airflow user's token (the UI keeps the same in its session cookie)
    password = json.loads(passwords.read_text())["oncall"]
    token = client.post("/auth/token", json={"username": "oncall", "password": password}).json()["access_token"]
    page = client.get("/chatsync/health", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200 and "chatsync" in page.text and "inconsistency_count" in page.text
    client.cookies.set("_token", token)
    assert client.get("/chatsync/health.json").json()["frozen_chats"][0]["room_id"] == 4242
    client.cookies.clear()

    # /metrics: open for Prometheus by default; with metrics_token, only with it
    assert client.get("/chatsync/metrics").text.startswith("# HELP chatsync_")
    secret = "s3cret-token-for-prometheus"
    monkeypatch.setenv("CHATSYNC_METRICS_TOKEN", secret)
    assert client.get("/chatsync/metrics").status_code == 401
    assert client.get("/chatsync/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/chatsync/metrics", headers={"Authorization": f"Bearer {secret}x"}).status_code == 401
    allowed = client.get("/chatsync/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert allowed.status_code == 200 and allowed.text.startswith("# HELP chatsync_")


def test_the_plugin_module_imports_neither_fastapi_nor_airflows_security():
    """Airflow imports plugins in every process; only the api-server builds the app."""
    import subprocess
    import sys

    code = ("import sys; from importlib.metadata import entry_points; "
            "[e.load() for e in entry_points(group='airflow.plugins') if e.name == 'chatsync']; "
            "print(sorted(m for m in ('fastapi', 'airflow.api_fastapi.core_api.security', 'chatsync.web') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


class _Page(HTMLParser):
    """The elements of a page and the text of each table row's cells, as a browser would read them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.rows, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


SCRIPT = '<script>alert("pwned")</script>'
QUOTED = "\"><b id='x' onmouseover=\"alert(1)\">bold</b>"


def test_free_text_on_the_page_is_shown_as_text_never_as_markup(db, clean_db):
    from fastapi.testclient import TestClient

    from chatsync.web.app import create_app
    from chatsync.web.page import render, snapshot

    db.execute("INSERT INTO chatsync.dead_letters (stream_id, event_id, type, reason, raw, worker) "
               "VALUES ('9-9', %s, 'room.<i>', %s, '{}', 'w')", (QUOTED, f"unknown event type {SCRIPT}"))
    page = TestClient(create_app(lambda: clean_db)).get("/health").text
    # a room key that is text (the mapping may name a text column): the frozen-chats table
    snap = snapshot(clean_db)
    snap["frozen_chats"] = [{"room_id": SCRIPT + QUOTED, "since": None}]
    for text in (page, render(snap)):
        parsed = _Page()
        parsed.feed(text)
        assert not {"script", "b", "i"} & set(parsed.tags)  # none of it became an element
        assert SCRIPT not in text and QUOTED not in text and "&lt;script&gt;alert(&quot;pwned&quot;)" in text
        dead = next(r for r in parsed.rows if r[1:3] == ["9-9", QUOTED])  # shown verbatim, as text
        assert dead[3:] == ["room.<i>", f"unknown event type {SCRIPT}"]
    assert ["room_id", "since"] in parsed.rows and [SCRIPT + QUOTED, ""] in parsed.rows
