"""The post-deployment check (seed: "verify consistency after every deployment, have a rollback
plan"): schema first (no pending migration, the mapping matches the database), a full detect, the
validation suite; the verdict comes with the rollback commands to use."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.db.connection import connection
from chatsync.db.statements import sql_file
from chatsync.errors import ConfigError


def schema_check(settings: Settings) -> dict:
    from chatsync.db.migrations import pending
    from chatsync.roomside import refresh as room_copy

    waiting = pending(settings)
    if waiting:
        raise ConfigError("schema first: migrations " + ", ".join(f"{v:03d}_{n}" for v, n in waiting)
                          + " are not applied; run `chatsync init` (the airflow-init service does) and rerun")
    with connection(settings) as conn:
        room_copy.check_mapping(settings, conn)
    return {"pending_migrations": [], "mapping": "matches the database" + ("s" if settings.two_databases else "")}


def rollback_plan(settings: Settings, version: str, since: datetime) -> list[str]:
    with connection(settings) as conn:
        runs = conn.execute(sql_file(settings, "deploy_repairs_since", ops=sql.Identifier(settings.ops_schema)),
                            {"since": since}).fetchall()
    plan = [f"code: redeploy the version before {version} (docker compose: set the previous image tag, "
            "`docker compose up -d`); migrations never take away what the previous version reads (they "
            "add tables and columns, drop only indexes and constraints), so the schema needs no downgrade"]
    plan += [f"data: `chatsync rollback {run_id}` (run by {by}, {n} rows)" for run_id, by, n in runs]
    return plan


def record(settings: Settings, version: str, since: datetime, schema: dict, audit: dict) -> dict:
    validation = audit["validation"]
    passed = audit["rows_to_change"] == 0 and validation["passed"]
    report = {"version": version, "deployed_since": since.isoformat(), "schema": schema, "audit": audit,
              "passed": passed, "rollback": rollback_plan(settings, version, since)}
    with connection(settings) as conn:
        conn.execute(sql.SQL("INSERT INTO {}.deploy_checks (version, passed, report) VALUES (%s, %s, %s)").format(
            sql.Identifier(settings.ops_schema)), (version, passed, Jsonb(report)))
    if not passed:
        alerts.notify("post_deploy_check_failed",
                      f"deployment {version}: {audit['rows_to_change']} rows differ "
                      f"({ {k: v for k, v in audit['counts'].items() if v} }), validation "
                      f"{'passed' if validation['passed'] else 'FAILED'}. Rollback: " + " | ".join(report["rollback"]),
                      version=version)
    return report


def default_since(hours: int = 2) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)
