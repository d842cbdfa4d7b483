"""The post-deployment check, run for real: a clean deployment passes; drift fails it with the
rollback commands; a pending migration stops it at the schema step."""

from __future__ import annotations

import shutil
from dataclasses import replace
from importlib.resources import as_file

import pytest

from chatsync.db import migrations
from chatsync.errors import ConfigError
from chatsync.ops import deploy


def test_clean_deployment_passes(db, clean_db, dagbag, monkeypatch):
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    simulate(clean_db, rooms=10, members=4, drift=0, seed=1)
    dag_run = dagbag.get_dag("chat_post_deploy_check").test(run_conf={"version": "1.4.0"})
    assert dag_run.state == "success"
    version, passed, report = db.execute("SELECT version, passed, report FROM chatsync.deploy_checks").fetchone()
    assert (version, passed) == ("1.4.0", True)
    assert report["audit"]["validation"]["passed"] is True and report["schema"]["pending_migrations"] == []


def test_drift_fails_the_check_with_the_rollback_commands(db, clean_db, dagbag, monkeypatch):
    from chatsync.consistency.engine import check
    from chatsync_devtools.simulate import simulate

    monkeypatch.setenv("CHATSYNC_GX_DIR", clean_db.gx_dir)
    simulate(clean_db, rooms=10, members=10, drift=0.05, seed=2)
    repaired = check(replace(clean_db, repair_max_fraction=1.0), do_repair=True, do_validate=False)
    db.execute("UPDATE chat.chat_participants SET role = 'GUEST' WHERE role <> 'GUEST' AND room_id = 1")
    dag_run = dagbag.get_dag("chat_post_deploy_check").test(run_conf={"version": "1.5.0"})
    assert dag_run.state == "failed"
    passed, report = db.execute("SELECT passed, report FROM chatsync.deploy_checks").fetchone()
    assert passed is False and report["audit"]["rows_to_change"] > 0
    assert report["audit"]["validation"]["passed"] is False
    assert f"data: `chatsync rollback {repaired.run_id}`" in " ".join(report["rollback"])
    assert report["rollback"][0].startswith("code: redeploy the version before 1.5.0")


def test_a_pending_migration_stops_the_check_at_the_schema(clean_db, tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    with as_file(migrations.MIGRATIONS) as shipped:
        shutil.copytree(shipped, folder)
    (folder / "099_future.sql").write_text("CREATE TABLE {ops}.future (x int);\n")
    monkeypatch.setattr(migrations, "MIGRATIONS", folder)  # a release with one more migration
    with pytest.raises(ConfigError, match="schema first: migrations 099_future are not applied"):
        deploy.schema_check(clean_db)
