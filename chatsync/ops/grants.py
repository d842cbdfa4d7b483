"""The least privileges chatsync needs, generated from the mapping (``chatsync grants ROLE``).

chatsync reads the room tables, writes the chat tables and owns its own schema; nothing else.
With the room side in a database of its own, the statements come in two parts: the chat database's
(its schema, the chat tables) and the room database's (CONNECT, and SELECT on the room tables:
nothing more, so a read replica's role will do). An administrator runs the statements once
(``--apply``, or pipes the printed SQL to psql); the role then runs ``chatsync init`` (the
migrations) and every DAG. Optional extras are listed in
the README: pg_stat_scan_tables for the weekly bloat measure (pgstattuple), ownership of the chat
tables for their weekly REINDEX.
"""

from __future__ import annotations

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.model.mapping import CHAT_TABLES, ROOM_TABLES, load_mapping

J = sql.SQL


def room_statements(settings: Settings, role: str, database: str) -> list[sql.Composed]:
    """The room database's grants when it is not the chat side's: read only."""
    m = load_mapping(settings.mapping_path)
    who = sql.Identifier(role)
    room = [m[k] for k in ROOM_TABLES]
    out = [J("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), who)]
    out += [J("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who)
            for schema in dict.fromkeys(t.schema for t in room)]
    return out + [J("GRANT SELECT ON {} TO {}").format(t.ident, who) for t in room]


def statements(settings: Settings, role: str, database: str, server_version: int) -> list[sql.Composed]:
    """The chat database's grants (and the room tables', when they live there too)."""
    m = load_mapping(settings.mapping_path)
    who, ops = sql.Identifier(role), sql.Identifier(settings.ops_schema)
    room = [] if settings.two_databases else [m[k] for k in ROOM_TABLES]
    chat = [m[k] for k in CHAT_TABLES]
    out = [J("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), who),
           J("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ops, who),
           J("ALTER SCHEMA {} OWNER TO {}").format(ops, who)]
    for schema in dict.fromkeys(t.schema for t in room + chat):
        out.append(J("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who))
    out += [J("GRANT SELECT ON {} TO {}").format(t.ident, who) for t in room]
    out += [J("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(t.ident, who) for t in chat]
    if server_version >= 150000:  # the repair compresses its full-page images (repair_wal_compression)
        out.append(J("GRANT SET ON PARAMETER wal_compression TO {}").format(who))
    return out


def apply(settings: Settings, role: str) -> list[str]:
    """Run the statements as the configured (administrator) connection; also hand over the ops
    objects an earlier `chatsync init` may have created as another user. Returns them as text."""
    with connection(settings) as conn, conn.transaction():
        database = one(conn.execute("SELECT current_database()"))[0]
        done = []
        for stmt in statements(settings, role, database, conn.info.server_version):
            conn.execute(stmt)
            done.append(stmt.as_string(conn))
        owned = conn.execute(  # identity sequences are left out: they follow their table
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'S', 'p') "
            "AND pg_get_userbyid(c.relowner) <> %s AND NOT EXISTS "
            "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i')",
            (settings.ops_schema, role)).fetchall()
        kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "S": "SEQUENCE"}
        for name, kind in owned:
            stmt = J("ALTER {} {} OWNER TO {}").format(J(kinds[kind]), sql.Identifier(settings.ops_schema, name),
                                                       sql.Identifier(role))
            conn.execute(stmt)
            done.append(stmt.as_string(conn))
    if settings.two_databases:
        with connection(settings, side="room", read_only=False) as room_conn, room_conn.transaction():
            database = one(room_conn.execute("SELECT current_database()"))[0]
            for stmt in room_statements(settings, role, database):
                room_conn.execute(stmt)
                done.append(stmt.as_string(room_conn))
    return done


def as_text(settings: Settings, role: str) -> str:
    """The statements as SQL text for the configured database (to read, or to pipe to psql)."""
    with connection(settings) as conn:
        chat_database = one(conn.execute("SELECT current_database()"))[0]
        text = "".join(s.as_string(conn) + ";\n"
                       for s in statements(settings, role, chat_database, conn.info.server_version))
    if not settings.two_databases:
        return text
    with connection(settings, side="room") as room_conn:
        database = one(room_conn.execute("SELECT current_database()"))[0]
        room = "".join(s.as_string(room_conn) + ";\n" for s in room_statements(settings, role, database))
    return f"-- in the chat database ({chat_database})\n{text}-- in the room database ({database}): read only\n{room}"
