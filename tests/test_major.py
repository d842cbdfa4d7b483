"""The major-inconsistency procedure run for real: freeze, analyse, plan, repair, validate, resume."""

from __future__ import annotations

import pytest

from chatsync import major
from chatsync.errors import ConfigError
from conftest import sides_equal


def test_the_procedure_steps_freeze_analyse_plan_repair_and_resume(db, clean_db, with_settings):
    from chatsync import engine
    from chatsync.simulate import simulate

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
    assert {"source": "dead_letter", "what": "lock timeout", "count": 1} .items() <= analysis["likely_causes"][0].items()
    correction = major.plan(with_settings(repair_max_fraction=1.0), analysis)
    assert correction["needs_approval"] is False and correction["by_action"]["insert"] == 2
    plan = db.execute("SELECT room_id, kind, action FROM chatsync.correction_plans ORDER BY 1, 2").fetchall()
    assert plan == [(3, "role_mismatch", "update"), (5, "missing_participant", "insert")]
    engine.repair_step(clean_db, correction["run_id"])
    assert sides_equal(db) == {"rooms": 0, "participants": 0}
    assert major.resume_writes(clean_db, [3, 5], correction["run_id"])["writes_resumed"] == [3, 5]
    assert db.execute("SELECT count(*) FROM chat.chat_rooms WHERE writes_frozen").fetchone()[0] == 0


def test_a_large_plan_waits_for_approval(db, clean_db, with_settings):
    from chatsync.simulate import simulate

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
    from chatsync.simulate import simulate

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
