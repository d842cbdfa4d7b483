"""Validation as the pipeline uses it: a deliberately broken repair is caught."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from psycopg import sql
from test_detect_repair import SMALL_CASE

from chatsync.consistency import steps
from chatsync.consistency.detect import detect
from chatsync.consistency.repair import repair
from chatsync.errors import ValidationFailed
from chatsync.model.sqlgen import EntitySQL


def lowercasing_set_from_room(self, r="r"):
    """A plausible bug: the repair case-folds roles on their way to the chat side."""
    sets = []
    for f in self.entity.fields:
        value = self.room_value(f, r)
        if f.chat == "role":
            value = sql.SQL("lower({})").format(value)
        sets.append(sql.SQL("{} = {}").format(self.chat.col(f.chat), value))
    return sql.SQL(", ").join(sets)


def test_broken_repair_fails_validation(db, clean_db, monkeypatch):
    db.execute(SMALL_CASE)
    found = detect(clean_db)
    with monkeypatch.context() as m:
        m.setattr(EntitySQL, "set_from_room", lowercasing_set_from_room)
        repair(clean_db, found.run_id)
    assert db.execute("SELECT role FROM chat.chat_participants WHERE room_id = 1 AND user_id = 11"
                      ).fetchone()[0] == "member"
    with pytest.raises(ValidationFailed) as failure:
        steps.validate_step(clean_db, found.run_id)
    message = str(failure.value)
    assert "expect_column_values_to_be_in_set" in message and "role" in message
    run = db.execute("SELECT status, validation, error FROM chatsync.runs WHERE run_id = %s",
                     (found.run_id,)).fetchone()
    assert run[0] == "validation_failed"
    failed = {(f["expectation"], f.get("column")) for f in run[1]["failed"]}
    assert ("expect_column_values_to_be_in_set", "role") in failed
    assert any(e == "expect_table_row_count_to_equal" for e, _ in failed), failed  # residual diff
    assert run[1]["passed"] is False and "validation failed" in run[2]
    # GX reads views of chatsync's own (table assets: introspected, never fetched whole), and
    # the views follow the mapping and the rules
    from chatsync.validation.gx import _context

    _, context = _context(clean_db)
    assets = {a.name: a for a in context.data_sources.get("chatsync_postgres").assets}
    assert {a.type for a in assets.values()} == {"table"}
    assert {(a.schema_name, a.table_name) for a in assets.values()} == {
        ("chatsync", f"gx_{e}_{k}") for e in ("room", "participant") for k in ("chat_table", "residual_differences")}
    chat_view = db.execute("SELECT pg_get_viewdef('chatsync.gx_participant_chat_table'::regclass)").fetchone()[0]
    assert "chat.chat_participants" in chat_view
    residual = db.execute("SELECT kind, room_id, user_id FROM chatsync.gx_participant_residual_differences "
                          "WHERE room_id = 1 AND user_id = 11").fetchall()
    assert residual == [("role_mismatch", 1, 11)]  # the broken repair's leftover, as the view sees it


def _fresh_python(code: str, **env: str) -> str:
    """Run code in a new interpreter (nothing imported yet, as in an Airflow task process)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_validation_leaves_the_modules_of_unused_expectations_unimported(clean_db):
    # the validate task's memory: GX loads, validates and builds Data Docs without them
    out = _fresh_python("""
        import io, logging, sys
        log = io.StringIO()
        logging.basicConfig(stream=log, level=logging.INFO)  # as a task's log: INFO and up
        from chatsync.config import Settings
        from chatsync.validation.gx import UNUSED_GX_IMPORTS, DeferredModule, validate
        outcome = validate(Settings.from_env())
        print(outcome.passed, outcome.evaluated, outcome.docs_index is not None,
              all(isinstance(sys.modules[name], DeferredModule) for name in UNUSED_GX_IMPORTS),
              log.getvalue().count("Skipping registering function"), "validation passed" in log.getvalue())
    """, CHATSYNC_DATABASE_URL=clean_db.database_url, CHATSYNC_GX_DIR=clean_db.gx_dir)
    assert out == "True 10 True True 0 True"  # and GX's ~150 lines of its API-docs registry left out


def test_a_deferred_module_is_imported_at_its_first_use():
    out = _fresh_python("""
        import sys
        from chatsync.validation.gx import DeferredModule, defer_unused_imports
        assert defer_unused_imports(("scipy.stats", "wave", "no_such_module_here")) == ["scipy.stats", "wave"]
        import wave
        from scipy import stats
        assert isinstance(stats, DeferredModule) and isinstance(sys.modules["wave"], DeferredModule)
        assert stats.norm.cdf(0.0) == 0.5 and issubclass(wave.Error, Exception)  # the real modules answer
        assert not isinstance(sys.modules["scipy.stats"], DeferredModule)
        assert not isinstance(sys.modules["wave"], DeferredModule)
        assert stats.norm is sys.modules["scipy.stats"].norm
        assert defer_unused_imports(("wave",)) == []  # imported already: nothing to defer
        print("ok")
    """)
    assert out == "ok"


def test_the_context_lives_in_a_writable_folder_per_deployment_and_the_template_stays_as_shipped(
        clean_db, tmp_path, monkeypatch):
    """Two deployments on one host (here: two mappings) keep apart; the shipped template is only read."""
    from dataclasses import replace

    from chatsync.validation.gx import GX_TEMPLATE, context_dir, context_key, validate

    shipped = {p: p.read_bytes() for p in GX_TEMPLATE.rglob("*") if p.is_file()}
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    first = replace(clean_db, gx_dir=None)
    other_mapping = tmp_path / "mapping.yaml"
    other_mapping.write_text(Path(first.mapping_path).read_text())
    second = replace(first, mapping_path=str(other_mapping))
    roots = []
    for settings in (first, second):
        outcome = validate(settings)
        root = context_dir(settings)
        assert outcome.passed and outcome.docs_index.startswith(str(root))
        assert root.parent == tmp_path / "airflow" / "chatsync_data" / "gx"
        assert (root / "gx" / "expectations" / "participant_chat_table.json").is_file()
        roots.append(root)
    assert roots[0] != roots[1]
    assert {p: p.read_bytes() for p in GX_TEMPLATE.rglob("*") if p.is_file()} == shipped
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert context_dir(first).parent == tmp_path / "home" / ".chatsync" / "gx"
    with_password = replace(first, database_url="postgresql://chatsync:p%40ss@db.internal:5433/chat")
    assert "p@ss" not in context_key(with_password) and context_key(with_password).startswith("chat-chatsync-")
