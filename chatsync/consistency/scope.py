"""What a consistency pass looks at (``Scope``): the whole tables, the keys changed since the last
consistent run, some rooms, explicit keys, or a room-id range (a shard of a big full pass)."""

from __future__ import annotations

from dataclasses import dataclass

from chatsync.errors import ConfigError

SCOPES = ("full", "incremental", "rooms", "keys", "range")


@dataclass(frozen=True)
class Scope:
    kind: str = "full"
    rooms: tuple[int, ...] = ()
    participants: tuple[tuple[int, int], ...] = ()  # (room_id, user_id), scope "keys"
    room_range: tuple[int, int] | None = None  # [lo, hi), scope "range"

    def __post_init__(self):
        if self.kind not in SCOPES:
            raise ConfigError(f"unknown scope {self.kind!r}; expected one of {', '.join(SCOPES)}")
        if self.kind == "rooms" and not self.rooms:
            raise ConfigError("scope 'rooms' needs at least one room id")
        if self.kind == "keys" and not (self.rooms or self.participants):
            raise ConfigError("scope 'keys' needs room ids or (room_id, user_id) keys")
        if self.kind == "range" and (self.room_range is None or self.room_range[0] >= self.room_range[1]):
            raise ConfigError(f"scope 'range' needs lo < hi, got {self.room_range}")

    def params(self) -> dict:
        out: dict = {}
        if self.rooms:
            out["rooms"] = list(self.rooms)
        if self.participants:
            out["participants"] = [list(k) for k in self.participants]
        if self.room_range:
            out["room_range"] = list(self.room_range)
        return out


def empty_scope_keys(conn) -> None:
    """An empty pg_temp.chatsync_scope_keys in conn's transaction: the keys a key-set statement
    reads (filled, then analysed, by its caller)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS chatsync_scope_keys "
                 "(room_id bigint NOT NULL, user_id bigint) ON COMMIT DROP")
    conn.execute("TRUNCATE pg_temp.chatsync_scope_keys")
