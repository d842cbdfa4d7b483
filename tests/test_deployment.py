"""chatsync in a real Airflow, run as a user runs it: scheduler, DAG processor, triggerer and
api-server as separate processes on free ports, a Postgres metadata database, LocalExecutor. Runs
are triggered through the REST API with a token (no logical date: the API's default), backfilled
with `airflow backfill create`, and a major procedure is approved through the HITL endpoints; the
data is checked after each. Marked `deployment` (select with -m deployment)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from conftest import ADMIN_URL, REPO, free_port, sides_equal, wait_until
from psycopg import sql

pytestmark = pytest.mark.deployment

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
COMPONENTS = (("api-server",), ("scheduler",), ("dag-processor",), ("triggerer",))
RUN_TIMEOUT = 900  # a bound on a hang, not a speed goal: the machine may be slow
FINISHED = ("success", "failed")
WORKER_HOSTNAME = "DEPLOYMENT_TEST_HOSTNAME"  # read by deployment_hostname.worker_hostname


class Deployment:
    def __init__(self, home: Path, env: dict[str, str], port: int):
        self.home, self.env, self.port = home, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.processes: list[subprocess.Popen] = []
        self.token: str | None = None

    def start(self, workers: tuple[tuple[str, ...], ...] = ()) -> None:
        self.names = [c[0] for c in COMPONENTS] + [w[0] for w in workers]
        for component in COMPONENTS:
            args = [AIRFLOW, *component] + (["--port", str(self.port), "--host", "127.0.0.1"]
                                            if component[0] == "api-server" else [])
            self._spawn(component[0], args, self.env)
        for hostname, *args in workers:  # each worker reports its own hostname on its task instances
            own = self.home / hostname  # a disk of its own, as on another host
            self._spawn(hostname, [AIRFLOW, *args], {**self.env, WORKER_HOSTNAME: hostname,
                                                    "CHATSYNC_GX_DIR": str(own / "gx"),
                                                    "CHATSYNC_REPORTS_DIR": str(own / "reports")})

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.home / f"{name}.log").open("w")
        self.processes.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               preexec_fn=_own_group_dying_with_us))

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def check_alive(self) -> None:
        for name, p in zip(self.names, self.processes):
            if p.poll() is not None:
                tail = (self.home / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"airflow {name} exited {p.returncode}:\n{tail}")

    def api(self, method: str, path: str, expect: int | tuple[int, ...] = (200, 201), **kwargs):
        import httpx

        self.check_alive()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        answer = httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        assert answer.status_code in expected, f"{method} {path}: {answer.status_code} {answer.text[:2000]}"
        return answer.json() if answer.content else None

    @contextlib.contextmanager
    def chatsync_settings(self, values: dict):
        """chatsync's settings Variable for the tasks run meanwhile."""
        self.api("POST", "/api/v2/variables", json={"key": "chatsync_settings", "value": json.dumps(values)})
        try:
            yield
        finally:
            self.api("DELETE", "/api/v2/variables/chatsync_settings", expect=(204, 404))

    def cli(self, *args: str) -> str:
        done = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def run_dag(self, dag_id: str, conf: dict | None = None) -> dict:
        """Unpause, trigger with the REST API's defaults (no logical date), wait for the end."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return self.wait_run(dag_id, run["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str) -> dict:
        def finished():
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in FINISHED else None
        return wait_until(finished, RUN_TIMEOUT, f"{dag_id} run {run_id} to finish", every=1.0)

    def failures(self, dag_id: str, run_id: str) -> str:
        """The failed task instances' logs, for an assertion's message."""
        import httpx

        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        out = [f"states: {self.task_states(dag_id, run_id)}"]
        for ti in tis:
            if ti["state"] in ("failed", "upstream_failed") and ti["try_number"]:
                log = httpx.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/"
                                f"logs/{ti['try_number']}?map_index={ti['map_index']}",
                                headers={"Authorization": f"Bearer {self.token}", "Accept": "text/plain"}, timeout=60)
                out.append(f"--- {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}:\n{log.text[-4000:]}")
        return "\n".join(out)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, list[str]]:
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        out: dict[str, list[str]] = {}
        for ti in tis:
            out.setdefault(ti["task_id"], []).append(ti["state"])
        return out


@contextlib.contextmanager
def airflow_deployment(settings, name: str, executor: str = "LocalExecutor", extra_env: dict | None = None,
                       workers: tuple[tuple[str, ...], ...] = ()):
    """A whole Airflow on free ports with a metadata database of its own; ``workers`` are more
    processes to start beside the four components (Celery workers), each ``(hostname, *args)``."""
    home = Path(tempfile.mkdtemp(prefix=f"chatsync_airflow_{name}_"))
    meta_db = f"chatsync_test_{os.getpid()}_{name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(meta_db)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(meta_db)))
    admin = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    meta_url = (f"{admin.get('user', 'postgres')}@{admin.get('host', '127.0.0.1')}:{admin.get('port', 5432)}/"
                f"{meta_db}")
    port = free_port()
    where = psycopg.conninfo.conninfo_to_dict(settings.database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CHATSYNC_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{meta_url}",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # no scheduled runs: unpausing a DAG would start one beside the test's own (manual and
        # backfill runs are scheduled as usual)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW_CONN_CHATSYNC_DB": json.dumps({"conn_type": "postgres", "host": where.get("host", "127.0.0.1"),
                                                "port": int(where.get("port", 5432)),
                                                "login": where.get("user", "postgres"),
                                                "schema": where["dbname"]}),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{meta_url}",
        "CHATSYNC_GX_DIR": str(home / "gx"),
        "CHATSYNC_REPORTS_DIR": str(home / "reports"),
        **(extra_env or {}),
    })
    d = Deployment(home, env, port)
    d.cli("db", "migrate")
    d.start(workers)
    try:
        wait_until(lambda: d.check_alive() or _answers(d.url), 300, "the api-server to answer", every=1.0)
        password = wait_until(lambda: (home / "passwords.json").is_file()
                              and json.loads((home / "passwords.json").read_text()).get("admin"), 120,
                              "the auth manager's passwords file", every=0.5)
        d.token = d.api("POST", "/auth/token", json={"username": "admin", "password": password})["access_token"]
        # the pool every chatsync task runs in, as the docs tell a user to create it
        d.api("POST", "/api/v2/pools", json={"name": "chatsync_db", "slots": 4,
                                             "description": "chatsync's database connections"})
        dags = ("chat_consistency_hourly", "chat_sync_health", "chat_maintenance_daily", "chat_major_inconsistency")
        wait_until(lambda: all(_parsed(d, dag) for dag in dags), 600, "the DAG processor to parse the DAGs",
                   every=2.0)
        yield d
    finally:
        d.stop()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(meta_db)))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def deployment(settings):
    with airflow_deployment(settings, "airflow") as d:
        yield d


@pytest.fixture(scope="module")
def celery_deployment(settings, tmp_path_factory):
    """The same Airflow on CeleryExecutor: a Redis broker of the test's own and two workers."""
    from chatsync_devtools.embedded import RedisServer

    broker = RedisServer(tmp_path_factory.mktemp("celery_broker"))
    broker.start()
    extra = {"AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{broker.port}/0",
             "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
             # each shard holds its worker a while, so that a worker alone cannot take every shard
             "CHATSYNC_FAULT_PAUSE_AT": "detect:part", "CHATSYNC_FAULT_PAUSE_SECONDS": "3",
             "AIRFLOW__CORE__HOSTNAME_CALLABLE": "deployment_hostname.worker_hostname",
             "PYTHONPATH": str(REPO / "tests")}
    # --skip-serve-logs: two workers on one host would both take the log server's port
    workers = tuple((name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs")
                    for name in ("celery-1", "celery-2"))
    # each worker has local folders of its own (Deployment.start), as on two hosts: what one task
    # left on its disk, a task on the other worker cannot see
    try:
        with airflow_deployment(settings, "celery", "CeleryExecutor", extra, workers) as d:
            for name in ("celery-1", "celery-2"):
                wait_until(lambda name=name: d.check_alive() or " ready." in (d.home / f"{name}.log").read_text(),
                           300, f"Celery worker {name} to be ready", every=1.0)
            yield d
    finally:
        broker.kill()


def _own_group_dying_with_us() -> None:
    """In the child: a process group of its own (stopped as a whole), and SIGTERM when the test
    process dies without its teardown (killed), so no Airflow outlives the tests."""
    import ctypes

    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/api/v2/monitor/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _parsed(d: Deployment, dag_id: str) -> bool:
    import httpx

    answer = httpx.get(f"{d.url}/api/v2/dags/{dag_id}", headers={"Authorization": f"Bearer {d.token}"}, timeout=30)
    return answer.status_code == 200


def test_the_hourly_dag_triggered_through_the_rest_api_repairs_the_drift(deployment, db, clean_db):
    from chatsync_devtools.simulate import simulate

    report = simulate(clean_db, rooms=60, members=20, drift=0.01, seed=31)
    assert sides_equal(db)["participants"] > 0
    with deployment.chatsync_settings({"repair_max_fraction": 1.0, "detect_shard_rows": 500}):  # 3 shards
        run = deployment.run_dag("chat_consistency_hourly", {"scope": "full"})
    assert run["state"] == "success", deployment.failures("chat_consistency_hourly", run["dag_run_id"])
    states = deployment.task_states("chat_consistency_hourly", run["dag_run_id"])
    assert run["logical_date"] is None
    assert len(states["detect_part"]) > 1 and set(states["detect_part"]) == {"success"}  # mapped shards
    tis = deployment.api("GET", f"/api/v2/dags/chat_consistency_hourly/dagRuns/{run['dag_run_id']}/"
                         "taskInstances?limit=100")["task_instances"]
    assert {ti["pool"] for ti in tis} == {"chatsync_db"}  # every task's connections counted in one pool
    assert states["validate"] == ["success"] and states["outcome"] == ["success"], states
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    status, counts, triggered_by = db.execute("SELECT status, counts, triggered_by FROM chatsync.runs "
                                              "WHERE kind = 'check' ORDER BY run_id DESC LIMIT 1").fetchone()
    assert status == "validated" and counts == report.injected
    assert triggered_by == f"airflow:chat_consistency_hourly/{run['dag_run_id']}"
    events = deployment.api("GET", "/api/v2/assets/events?source_dag_id=chat_consistency_hourly")["asset_events"]
    assert {e["uri"] for e in events if e["source_run_id"] == run["dag_run_id"]} == {
        "chatsync://chat-side/chat_rooms", "chatsync://chat-side/chat_participants"}


@pytest.mark.parametrize("dag_id", ["chat_sync_health", "chat_maintenance_daily", "chat_maintenance_weekly",
                                    "chat_maintenance_monthly"])
def test_a_run_without_a_logical_date_covers_the_last_complete_interval(deployment, db, clean_db, dag_id):
    run = deployment.run_dag(dag_id)
    assert run["state"] == "success", deployment.failures(dag_id, run["dag_run_id"])
    assert run["logical_date"] is None and run["data_interval_start"] is None
    due = datetime.fromisoformat(run["run_after"]).astimezone(timezone.utc)
    midnight = due.replace(hour=0, minute=0, second=0, microsecond=0)
    if dag_id == "chat_maintenance_daily":
        expected = [(midnight - timedelta(days=1), midnight)]
    elif dag_id == "chat_maintenance_weekly":  # Sunday to Sunday
        end = midnight - timedelta(days=(midnight.weekday() + 1) % 7)
        expected = [(end - timedelta(days=7), end)]
    elif dag_id == "chat_maintenance_monthly":
        end = midnight.replace(day=1)
        expected = [((end - timedelta(days=1)).replace(day=1), end)]
    if dag_id.startswith("chat_maintenance_"):
        kind = dag_id.removeprefix("chat_maintenance_")
        assert db.execute("SELECT interval_start, interval_end FROM chatsync.maintenance_reports "
                          "WHERE kind = %s", (kind,)).fetchall() == expected
    else:
        assert db.execute("SELECT count(DISTINCT bucket_start) FROM chatsync.metric_buckets").fetchone()[0] == 1


def test_a_three_day_backfill_of_the_daily_maintenance_writes_one_report_a_day(deployment, db, clean_db):
    deployment.api("PATCH", "/api/v2/dags/chat_maintenance_daily", json={"is_paused": False})
    deployment.cli("backfill", "create", "--dag-id", "chat_maintenance_daily",
                   "--from-date", "2026-11-01", "--to-date", "2026-11-03")

    def three_done():
        runs = deployment.api("GET", "/api/v2/dags/chat_maintenance_daily/dagRuns?run_type=backfill&limit=50")
        runs = [r for r in runs["dag_runs"] if r["run_type"] == "backfill"]
        return runs if len(runs) == 3 and all(r["state"] in FINISHED for r in runs) else None
    runs = wait_until(three_done, RUN_TIMEOUT, "the three backfill runs", every=1.0)
    assert {r["state"] for r in runs} == {"success"}
    starts = [r[0] for r in db.execute("SELECT interval_start FROM chatsync.maintenance_reports "
                                       "WHERE kind = 'daily' AND interval_start < '2026-11-05' ORDER BY 1")]
    assert starts == [datetime(2026, 11, d, tzinfo=timezone.utc) for d in (1, 2, 3)]


def test_a_major_procedure_is_approved_through_the_hitl_endpoints(deployment, db, clean_db):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=20, members=10, drift=0, seed=12)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id IN (3, 5) AND role <> 'GUEST'")
    drift = sides_equal(db)["participants"]
    assert drift > 5
    with deployment.chatsync_settings({"repair_max_changes": 5}):
        dag_id = "chat_major_inconsistency"
        deployment.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = deployment.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={
            "logical_date": None, "conf": {"rooms": [3, 5], "lease_seconds": 900}})

        def pending():
            """The request, once its task is parked: an answer given while the task's process still
            winds down, before the scheduler has taken its executor event, makes Airflow retry the
            task, which then asks again."""
            listed = deployment.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/hitlDetails")
            waiting = [h for h in listed["hitl_details"] if h["responded_at"] is None
                       and h["task_instance"]["state"] == "awaiting_input"]
            parked = (f"TaskInstance Finished: dag_id={dag_id}, task_id=approve, run_id={run['dag_run_id']}"
                      in (deployment.home / "scheduler.log").read_text())
            return waiting[0] if waiting and parked else None
        request = wait_until(pending, RUN_TIMEOUT, "the approval request", every=1.0)
        assert request["subject"].startswith("chatsync: approve")
        assert "found a major inconsistency in **2** chat rooms" in request["body"]
        assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 2  # writes stopped meanwhile
        ti = request["task_instance"]
        deployment.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/"
                       f"{ti['task_id']}/-1/hitlDetails", json={"chosen_options": ["Approve"]})
        done = deployment.wait_run(dag_id, run["dag_run_id"])
        assert done["state"] == "success", deployment.failures(dag_id, run["dag_run_id"])
        assert sides_equal(db) == {"rooms": 0, "participants": 0}
        assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0


def test_the_health_page_in_the_api_server_needs_an_airflow_login(deployment, db, clean_db):
    import httpx

    page = f"{deployment.url}/chatsync/health"
    assert httpx.get(page, timeout=60).status_code == 401
    browser = httpx.get(page, headers={"Accept": "text/html"}, timeout=60)
    assert browser.status_code == 303 and "/auth/login" in browser.headers["location"]
    logged_in = httpx.get(page, headers={"Authorization": f"Bearer {deployment.token}"}, timeout=60)
    assert logged_in.status_code == 200 and "Alert conditions" in logged_in.text
    assert httpx.get(f"{deployment.url}/chatsync/metrics", timeout=60).text.startswith("# HELP chatsync_")


def test_on_celery_the_mapped_shards_run_on_both_workers(celery_deployment, db, clean_db):
    from chatsync_devtools.simulate import simulate

    report = simulate(clean_db, rooms=60, members=20, drift=0.01, seed=41)
    with celery_deployment.chatsync_settings({"repair_max_fraction": 1.0, "detect_shard_rows": 200}):
        run = celery_deployment.run_dag("chat_consistency_hourly", {"scope": "full"})
    assert run["state"] == "success", celery_deployment.failures("chat_consistency_hourly", run["dag_run_id"])
    tis = celery_deployment.api("GET", f"/api/v2/dags/chat_consistency_hourly/dagRuns/{run['dag_run_id']}/"
                                "taskInstances?limit=100")["task_instances"]
    shards = [ti for ti in tis if ti["task_id"] == "detect_part"]
    assert len(shards) > 2 and {ti["state"] for ti in shards} == {"success"}
    assert {ti["hostname"] for ti in shards} == {"celery-1", "celery-2"}  # spread over both workers
    assert {ti["hostname"] for ti in tis if ti["state"] == "success"} <= {"celery-1", "celery-2"}
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    status, counts = db.execute("SELECT status, counts FROM chatsync.runs WHERE kind = 'check' "
                                "ORDER BY run_id DESC LIMIT 1").fetchone()
    assert status == "validated" and counts == report.injected


def test_the_health_page_in_chromium_through_the_ui_login(deployment, db, clean_db, tmp_path):
    """A person's browser: refused and sent to Airflow's login page, logs in there with the form,
    comes back to the health page with the UI's session cookie."""
    from browser import Browser

    browser = Browser(tmp_path / "chromium")
    try:
        page = f"{deployment.url}/chatsync/health"
        browser.open(page)
        browser.wait_for("location.pathname.startsWith('/auth/login') "
                         "&& !!document.querySelector('input[type=password]')", "the login form")
        assert "Alert conditions" not in browser.js("document.body.innerText")  # refused without a login
        password = json.loads((deployment.home / "passwords.json").read_text())["admin"]
        browser.type_into("input[name=username], input:not([type=password])", "admin")
        browser.type_into("input[type=password]", password)
        browser.js("document.querySelector('button[type=submit]').click()")
        browser.wait_for("location.pathname === '/chatsync/health'", "the way back to the health page")
        browser.wait_for("document.body.innerText.includes('Alert conditions')", "the health page's content")
        assert "_token" in {c["name"] for c in browser.call("Network.getCookies")["cookies"]}
    finally:
        browser.close()
