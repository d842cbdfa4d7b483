"""The major-inconsistency procedure run for real: freeze, analyse, plan, repair, validate, resume."""

from __future__ import annotations

import re
import threading
import time

import pytest
from conftest import sides_equal

from chatsync.errors import ConfigError
from chatsync.ops import major

MAJOR = "chat_major_inconsistency"


def test_the_procedure_steps_freeze_analyse_plan_repair_and_resume(db, clean_db, with_settings):
    from chatsync.consistency import steps
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=40, members=10, drift=0, seed=4)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 3 AND role <> 'GUEST'")
    db.execute("DELETE FROM chat.chat_participants WHERE room_id = 5 AND user_id IN "
               "(SELECT user_id FROM chat.chat_participants WHERE room_id = 5 ORDER BY 1 LIMIT 2)")
    db.execute("INSERT INTO chatsync.dead_letters (stream_id, event_id, type, reason, raw, worker) VALUES "
               "('1-1', 'e1', 'room.participant.role_changed', 'lock timeout', '{\"room_id\": \"3\"}', 'w')")
    frozen = major.stop_writes(clean_db, [3, 5], 600, "test")
    assert frozen["frozen"] == [3, 5]
    assert db.execute("SELECT count(*) FROM chat.chat_rooms WHERE writes_frozen").fetchone()[0] == 2
    analysis = major.analyse(clean_db, [3, 5], "test")
    assert {(e["room_id"], e["kind"]) for e in analysis["extent"]} == {(3, "role_mismatch"), (5, "missing_participant")}
    assert ({"source": "dead_letter", "what": "lock timeout", "count": 1} .items()
            <= analysis["likely_causes"][0].items())
    correction = major.plan(with_settings(repair_max_fraction=1.0), analysis)
    assert correction["needs_approval"] is False and correction["by_action"]["insert"] == 2
    plan = db.execute("SELECT room_id, kind, action FROM chatsync.correction_plans ORDER BY 1, 2").fetchall()
    assert plan == [(3, "role_mismatch", "update"), (5, "missing_participant", "insert")]
    steps.repair_step(clean_db, correction["run_id"])
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert major.resume_writes(clean_db, [3, 5], correction["run_id"])["writes_resumed"] == [3, 5]
    assert db.execute("SELECT count(*) FROM chat.chat_rooms WHERE writes_frozen").fetchone()[0] == 0


def test_a_large_plan_waits_for_approval(db, clean_db, with_settings):
    from chatsync_devtools.simulate import simulate

    simulate(clean_db, rooms=10, members=10, drift=0, seed=5)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE role <> 'GUEST'")
    settings = with_settings(repair_max_changes=5)
    analysis = major.analyse(settings, [1, 2, 3], "test")
    correction = major.plan(settings, analysis)
    assert correction["needs_approval"] is True and correction["rows_to_change"] > correction["limit"]
    assert correction["by_action"] == {"update": analysis["rows_to_change"]}


def test_rooms_come_from_params_or_the_major_run(clean_db):
    with pytest.raises(ConfigError, match="needs room ids"):
        major.rooms_of(clean_db, [], None)
    assert major.rooms_of(clean_db, [5, 3, 5], None) == [3, 5]


def test_the_dag_runs_a_small_plan_end_to_end_without_approval(db, clean_db, dagbag, monkeypatch):
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_FRACTION", "1.0")  # this plan stays under the threshold
    simulate(clean_db, rooms=40, members=10, drift=0, seed=4)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 3 AND role <> 'GUEST'")
    dag = dagbag.get_dag("chat_major_inconsistency")
    assert dag.get_task("route").downstream_task_ids == {"approve", "apply"}
    assert dag.get_task("approve").downstream_task_ids == {"apply"}
    dag_run = dag.test(run_conf={"rooms": [3], "lease_seconds": 600})
    assert dag_run.state == "success"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["approve"] == "skipped" and states["resume_writes"] == "success" and states["validate"] == "success"
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0
    assert db.execute("SELECT bool_or(writes_frozen) FROM chat.chat_rooms").fetchone()[0] is False


class Approver(threading.Thread):
    """An operator answering the approval the way the UI does: through Airflow's HITL REST API,
    on the api-server app sharing the metadata database with dag.test()."""

    def __init__(self, choice: str):
        super().__init__(daemon=True)
        self.choice, self.answered, self.seen = choice, threading.Event(), None

    def run(self) -> None:
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        client = TestClient(create_app(apps="core"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.answered.is_set():
            listed = client.get(f"/api/v2/dags/{MAJOR}/dagRuns/~/hitlDetails")
            pending = [d for d in listed.json().get("hitl_details", []) if d["responded_at"] is None]
            if pending:
                self.seen = pending[0]
                ti = pending[0]["task_instance"]
                answer = client.patch(f"/api/v2/dags/{MAJOR}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                                      f"{ti['task_id']}/-1/hitlDetails", json={"chosen_options": [self.choice]})
                assert answer.status_code == 200, answer.text
                self.answered.set()
            time.sleep(0.5)


@pytest.fixture
def approver(monkeypatch, airflow_db):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")

    def start(choice: str) -> Approver:
        a = Approver(choice)
        a.start()
        return a
    return start


def _hourly_hands_over_a_major_run(db, clean_db, dagbag, monkeypatch) -> dict:
    """The hourly DAG meets more drift than the threshold: it refuses, alerts, and starts the
    major procedure with its run id."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_CHANGES", "5")
    simulate(clean_db, rooms=20, members=10, drift=0, seed=8)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id IN (4, 7) AND role <> 'GUEST'")
    hourly = dagbag.get_dag("chat_consistency_hourly").test(run_conf={"scope": "full"})
    states = {ti.task_id: ti.state for ti in hourly.get_task_instances()}
    assert states["too_many"] == "success" and states["start_major_procedure"] == "success"
    assert states["repair"] == "skipped" and states["outcome"] == "failed" and hourly.state == "failed"
    run_id = db.execute("SELECT run_id FROM chatsync.runs WHERE status = 'major'").fetchone()[0]
    with create_session() as session:
        started = [(r.conf, str(r.triggered_by)) for r in session.query(DagRun).filter(DagRun.dag_id == MAJOR)
                   if r.conf.get("run_id") == run_id]
    assert started == [({"run_id": run_id}, "DagRunTriggeredByType.OPERATOR")]
    return started[0][0]


def test_the_procedure_runs_unpaused_one_at_a_time_and_a_paused_one_fails_the_hand_over(
        db, clean_db, dagbag, monkeypatch):
    """Airflow pauses new DAGs by default: the hand-over would queue a run nobody sees. The major
    DAG is created unpaused and runs one procedure at a time (one approval per incident); if an
    operator paused it, the hand-over fails saying so instead of waiting."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    procedure = dagbag.get_dag(MAJOR)
    assert procedure.is_paused_upon_creation is False and procedure.max_active_runs == 1

    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_CHANGES", "5")
    simulate(clean_db, rooms=20, members=10, drift=0, seed=8)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id IN (4, 7) AND role <> 'GUEST'")
    hourly = dagbag.get_dag("chat_consistency_hourly")
    hourly.test(run_conf={"scope": "incremental"})  # writes every DAG of the folder to the metadata database
    from airflow.models.dagrun import DagRun

    def procedure_runs() -> int:
        with create_session() as session:
            return session.query(DagRun).filter(DagRun.dag_id == MAJOR).count()

    with create_session() as session:
        assert session.get(DagModel, MAJOR).is_paused is False  # as created
        session.get(DagModel, MAJOR).is_paused = True
    before = procedure_runs()
    try:
        dag_run = hourly.test(run_conf={"scope": "full"})
    finally:
        with create_session() as session:
            session.get(DagModel, MAJOR).is_paused = False
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["too_many"] == "success" and states["start_major_procedure"] == "failed"
    assert dag_run.state == "failed" and procedure_runs() == before  # nothing left queued unseen


def test_hourly_major_run_goes_to_the_procedure_and_an_approved_plan_is_applied(
        db, clean_db, dagbag, monkeypatch, approver):
    conf = _hourly_hands_over_a_major_run(db, clean_db, dagbag, monkeypatch)
    before = sides_equal(db)["participants"]
    assert before > 5
    answer = approver("Approve")
    dag_run = dagbag.get_dag(MAJOR).test(run_conf={"rooms": [], **conf, "lease_seconds": 600})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert answer.answered.is_set(), states
    assert answer.seen["subject"].startswith("chatsync: approve")
    body = answer.seen["body"]  # the plan, as Markdown a person reads
    procedure_run = re.search(r"^Run \*\*(\d+)\*\* found a major inconsistency in \*\*2\*\* chat rooms", body)
    assert procedure_run and int(procedure_run[1]) > conf["run_id"]  # the procedure's own detect run
    assert "| role_mismatch |" in body and "| update |" in body and f"chatsync rollback {procedure_run[1]}" in body
    assert "{" not in body and "None" not in body
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    assert states["approve"] == "success" and states["apply"] == "success" and states["finish"] == "success"
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert db.execute("SELECT count(*) FROM chatsync.freezes").fetchone()[0] == 0
    assert db.execute("SELECT bool_or(writes_frozen) FROM chat.chat_rooms").fetchone()[0] is False


def test_a_rejected_plan_changes_nothing_and_keeps_writes_frozen_until_the_lease(
        db, clean_db, dagbag, monkeypatch, approver):
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_CHANGES", "3")
    simulate(clean_db, rooms=20, members=10, drift=0, seed=9)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 6 AND role <> 'GUEST'")
    drift = sides_equal(db)["participants"]
    answer = approver("Reject")
    dag_run = dagbag.get_dag(MAJOR).test(run_conf={"rooms": [6], "run_id": None, "lease_seconds": 900})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert answer.answered.is_set()
    assert states["approve"] == "success" and states["apply"] == "skipped" and states["resume_writes"] == "skipped"
    assert states["finish"] == "success" and dag_run.state == "success"
    assert sides_equal(db)["participants"] == drift  # nothing applied
    left = db.execute("SELECT room_id, expires_at - frozen_at FROM chatsync.freezes").fetchall()
    assert [(r, round(d.total_seconds())) for r, d in left] == [(6, 900)]
    assert db.execute("SELECT writes_frozen FROM chat.chat_rooms WHERE room_id = 6").fetchone()[0] is True


def test_a_failed_step_fails_the_run_and_writes_stay_frozen_until_the_lease_ends(db, clean_db, dagbag, monkeypatch):
    from chatsync.ops import freeze
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    monkeypatch.setenv("CHATSYNC_REPAIR_MAX_FRACTION", "1.0")
    simulate(clean_db, rooms=20, members=10, drift=0, seed=10)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE room_id = 2 AND role <> 'GUEST'")
    # a real fault: something in the database bends the repair's writes, so validation fails
    db.execute("""
        CREATE FUNCTION chat.bend_repair() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.role := lower(NEW.role); RETURN NEW; END $$;
        CREATE TRIGGER bend_repair BEFORE UPDATE ON chat.chat_participants FOR EACH ROW
        WHEN (current_setting('application_name') = 'chatsync repair') EXECUTE FUNCTION chat.bend_repair();
    """)
    try:
        dag_run = dagbag.get_dag(MAJOR).test(run_conf={"rooms": [2], "run_id": None, "lease_seconds": 600})
    finally:
        db.execute("DROP TRIGGER bend_repair ON chat.chat_participants; DROP FUNCTION chat.bend_repair()")
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["validate"] == "failed" and states["resume_writes"] == "upstream_failed"
    assert states["finish"] == "failed" and dag_run.state == "failed"
    assert db.execute("SELECT writes_frozen FROM chat.chat_rooms WHERE room_id = 2").fetchone()[0] is True
    # the lease ends (as if 10 minutes passed): chat_sync_health's expiry lifts the freeze
    db.execute("UPDATE chatsync.freezes SET expires_at = clock_timestamp() - interval '1 second'")
    assert freeze.expire(clean_db)["writes_resumed"] == [2]
    assert db.execute("SELECT writes_frozen FROM chat.chat_rooms WHERE room_id = 2").fetchone()[0] is False
