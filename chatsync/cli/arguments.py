"""The command line's argument types: whole numbers of ASCII digits within a range, finite numbers,
fractions, comma-separated room ids; and its exit codes. Bad input is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from chatsync.config import DECIMAL_NUMBER, REDIS_SOCKET_TIMEOUT_SECONDS, WHOLE_NUMBER
from chatsync.events.envelope import MAX_ID

EXIT_OK, EXIT_INCONSISTENT, EXIT_USAGE, EXIT_FAILURE = 0, 1, 2, 3
MAX_STREAM_COUNT = MAX_ID // 10  # XAUTOCLAIM refuses a larger COUNT (it may scan 10 entries per one asked)
MAX_BLOCK_MS = (REDIS_SOCKET_TIMEOUT_SECONDS - 1) * 1000  # a longer blocking read times the socket out


class Parser(argparse.ArgumentParser):
    """Bad usage as one line on stderr (exit 2), pointing at --help rather than printing the usage."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def whole_number(least: int, what: str, most: int = MAX_ID) -> Callable[[str], int]:
    """An argparse type: a whole number of ASCII digits from `least` to `most` (`what` names it)."""
    def parse(text: str) -> int:
        if not WHOLE_NUMBER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"expected a whole number (digits 0-9), got {text!r}")
        # measured as text first: int() of thousands of digits is slow, or refused
        if len(text.lstrip("-").lstrip("0")) > len(str(most)) or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"expected {what} (from {least} to {most}), got {text}")
        return int(text)
    return parse


positive_int = whole_number(1, "a positive number")
non_negative_int = whole_number(0, "zero or more")
run_id = whole_number(1, "a run id", MAX_ID)
MAX_KEY_CHARS = 1000


def key_text(text: str) -> str:
    """A room or user id as given: read as the mapped key type once the settings are known
    (``KeyType.parse_all``), since a key may be a number, a uuid or a string."""
    text = text.strip()
    if not text or "\x00" in text or len(text) > MAX_KEY_CHARS:
        raise argparse.ArgumentTypeError(f"expected an id (1 to {MAX_KEY_CHARS} characters), got {text[:60]!r}")
    return text


def room_ids(text: str) -> tuple[str, ...]:
    try:
        ids = tuple(key_text(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--rooms takes comma-separated room ids: {exc}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--rooms needs at least one room id")
    return ids


def number(text: str) -> float:
    value = float(text) if DECIMAL_NUMBER.fullmatch(text) else math.nan  # ASCII, finite: no 'nan', 'inf'
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def fraction(most: float) -> Callable[[str], float]:
    """An argparse type: a number from 0 to `most`."""
    def parse(text: str) -> float:
        value = number(text)
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"expected a fraction between 0 and {most:g}, got {value}")
        return value
    return parse
