"""Rows from the room database into the chat database: a binary COPY out of one connection
written straight into a COPY into the other, chunk by chunk (memory bounded by a chunk, whatever
the number of rows), counting the bytes that crossed."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

from psycopg import sql

J = sql.SQL


@dataclass
class Moved:
    """What travelled from the room database, and how long it took."""
    rows: int = 0
    bytes: int = 0
    rooms_compared: int = 0
    rooms_differing: int = 0
    seconds: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # seconds by phase

    def add(self, other: Moved) -> None:
        self.rows += other.rows
        self.bytes += other.bytes
        self.rooms_compared += other.rooms_compared
        self.rooms_differing += other.rooms_differing

    def to_dict(self) -> dict:
        return {"rows": self.rows, "bytes": self.bytes, "rooms_compared": self.rooms_compared,
                "rooms_differing": self.rooms_differing, "seconds": round(self.seconds, 4)}


_process_bytes = 0  # every byte this process streamed from a room database (benchmarks read it)
_process_lock = threading.Lock()


def bytes_streamed() -> int:
    return _process_bytes


def stream(room_conn, select: sql.Composable, params: dict | None, chat_conn, target: sql.Composable,
           moved: Moved, point: str = "room_copy:stream") -> int:
    """COPY the rows of select (run on room_conn) into target (a table, with its column list, on
    chat_conn); returns the rows written and adds rows and bytes to moved. point: the fault point
    raised once the first rows arrived (the room database's snapshot is taken then)."""
    written = sum_bytes = 0
    with room_conn.cursor() as out_cur, chat_conn.cursor() as in_cur:
        with out_cur.copy(J("COPY ({}) TO STDOUT (FORMAT binary)").format(select), params) as out, \
                in_cur.copy(J("COPY {} FROM STDIN (FORMAT binary)").format(target)) as into:
            for chunk in out:
                if not sum_bytes:
                    sys.audit("chatsync.step", point)
                sum_bytes += len(chunk)
                into.write(chunk)
        written = max(in_cur.rowcount, 0)
    moved.bytes += sum_bytes
    moved.rows += written
    global _process_bytes
    with _process_lock:
        _process_bytes += sum_bytes
    return written
