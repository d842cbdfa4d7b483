"""The least privileges chatsync needs, generated from the mapping (``chatsync grants ROLE``).

chatsync reads the room tables, writes the chat tables and owns its own schema; nothing else.
An administrator runs the statements once (``--apply``, or pipes the printed SQL to psql); the
role then runs ``chatsync init`` (the migrations) and every DAG. Optional extras are listed in
the README: pg_stat_scan_tables for the weekly bloat measure (pgstattuple), ownership of the chat
tables for their weekly REINDEX.
"""

from __future__ import annotations

from psycopg import sql

from chatsync.config import Settings
from chatsync.db.connection import connection, one
from chatsync.model.mapping import load_mapping

J = sql.SQL


def statements(settings: Settings, role: str, database: str, server_version: int) -> list[sql.Composed]:
    m = load_mapping(settings.mapping_path)
    who, ops = sql.Identifier(role), sql.Identifier(settings.ops_schema)
    room = [m[k] for k in ("room_rooms", "room_participants")]
    chat = [m[k] for k in ("chat_rooms", "chat_participants")]
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
    return done


def as_text(settings: Settings, role: str) -> str:
    """The statements as SQL text for the configured database (to read, or to pipe to psql)."""
    with connection(settings) as conn:
        database = one(conn.execute("SELECT current_database()"))[0]
        return "".join(s.as_string(conn) + ";\n"
                       for s in statements(settings, role, database, conn.info.server_version))
