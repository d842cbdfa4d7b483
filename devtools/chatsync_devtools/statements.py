"""The development package's SQL (chatsync_devtools/sql/<area>/), chatsync's own statements behind it."""

from __future__ import annotations

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.statements import STATEMENTS as PRODUCT_STATEMENTS
from chatsync.db.statements import SqlFolder

STATEMENTS = SqlFolder("chatsync_devtools", fallback=PRODUCT_STATEMENTS)


def sql_file(settings: Settings, name: str, **parts: sql.Composable) -> sql.Composed:
    return STATEMENTS.compose(settings, name, **parts)
