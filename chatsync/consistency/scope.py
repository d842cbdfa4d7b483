"""What a consistency pass looks at (``Scope``): the whole tables, the keys changed since the last
consistent run, some rooms, explicit keys, or a room-id range (a shard of a big full pass)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from chatsync.config import Settings
from chatsync.errors import ConfigError
from chatsync.model.keys import Key, json_keys, keys

SCOPES = ("full", "incremental", "rooms", "keys", "range")


@dataclass(frozen=True)
class Scope:
    kind: str = "full"
    rooms: tuple[Key, ...] = ()
    participants: tuple[tuple[Key, Key], ...] = ()  # (room_id, user_id), scope "keys"
    room_range: tuple[Key | None, Key | None] | None = None  # [lo, hi), scope "range"; None: no bound

    def __post_init__(self):
        if self.kind not in SCOPES:
            raise ConfigError(f"unknown scope {self.kind!r}; expected one of {', '.join(SCOPES)}")
        if self.kind == "rooms" and not self.rooms:
            raise ConfigError("scope 'rooms' needs at least one room id")
        if self.kind == "keys" and not (self.rooms or self.participants):
            raise ConfigError("scope 'keys' needs room ids or (room_id, user_id) keys")
        if self.kind == "range" and (self.room_range is None or _empty(*self.room_range)):
            raise ConfigError(f"scope 'range' needs lo < hi, got {self.room_range}")

    def params(self) -> dict:
        """The scope's keys as JSON holds them (XCom, the run's record)."""
        out: dict = {}
        if self.rooms:
            out["rooms"] = json_keys(self.rooms)
        if self.participants:
            out["participants"] = [json_keys(k) for k in self.participants]
        if self.room_range:
            out["room_range"] = json_keys(self.room_range)
        return out


def _empty(lo, hi) -> bool:
    """[lo, hi) holds no key. Strings are left to the database, which orders them by its collation."""
    if lo is None or hi is None or isinstance(lo, str) or isinstance(hi, str):
        return False
    return lo >= hi


def empty_scope_keys(conn, settings: Settings) -> None:
    """An empty pg_temp.chatsync_scope_keys in conn's transaction: the keys a key-set statement
    reads (filled, then analysed, by its caller)."""
    mapped = keys(settings)
    conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS chatsync_scope_keys "
                         "(room_id {} NOT NULL, user_id {}) ON COMMIT DROP").format(
        mapped.room.sql_type, mapped.user.sql_type))
    conn.execute("TRUNCATE pg_temp.chatsync_scope_keys")
