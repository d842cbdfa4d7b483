"""The ``chatsync`` command line.

Every command takes ``--json`` for a machine-readable summary on stdout; logs go to stderr.
Exit codes: 0 consistent / done, 1 inconsistencies remain, 2 bad usage or configuration,
3 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from chatsync.config import DECIMAL_NUMBER, MAX_FREEZE_TTL_SECONDS, REDIS_SOCKET_TIMEOUT_SECONDS, WHOLE_NUMBER, Settings
from chatsync.errors import ChatsyncError, ConfigError
from chatsync.events import MAX_ID

EXIT_OK, EXIT_INCONSISTENT, EXIT_USAGE, EXIT_FAILURE = 0, 1, 2, 3
MAX_STREAM_COUNT = MAX_ID // 10  # XAUTOCLAIM refuses a larger COUNT (it may scan 10 entries per one asked)
MAX_BLOCK_MS = (REDIS_SOCKET_TIMEOUT_SECONDS - 1) * 1000  # a longer blocking read times the socket out
log = logging.getLogger("chatsync.cli")


class _Parser(argparse.ArgumentParser):
    """Bad usage as one line on stderr (exit 2), pointing at --help rather than printing the usage."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole_number(least: int, what: str, most: int = MAX_ID) -> Callable[[str], int]:
    """An argparse type: a whole number of ASCII digits from `least` to `most` (`what` names it)."""
    def parse(text: str) -> int:
        if not WHOLE_NUMBER.fullmatch(text):
            raise argparse.ArgumentTypeError(f"expected a whole number (digits 0-9), got {text!r}")
        # measured as text first: int() of thousands of digits is slow, or refused
        if len(text.lstrip("-").lstrip("0")) > len(str(most)) or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"expected {what} (from {least} to {most}), got {text}")
        return int(text)
    return parse


_positive_int = _whole_number(1, "a positive number")
_non_negative_int = _whole_number(0, "zero or more")
_id = _whole_number(1, "an id", MAX_ID)  # every room, user and run id: they are bigint


def _room_ids(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(_id(part.strip()) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"--rooms takes comma-separated room ids: {exc}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--rooms needs at least one room id")
    return ids


def _number(text: str) -> float:
    value = float(text) if DECIMAL_NUMBER.fullmatch(text) else math.nan  # ASCII, finite: no 'nan', 'inf'
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _fraction(most: float) -> Callable[[str], float]:
    """An argparse type: a number from 0 to `most`."""
    def parse(text: str) -> float:
        value = _number(text)
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"expected a fraction between 0 and {most:g}, got {value}")
        return value
    return parse


_drift = _fraction(0.5)
_share_of_rooms = _fraction(1.0)  # --drift-rooms: its default, 1, spreads the drift over every room


def settings_for_cli() -> Settings:
    """Settings from the environment; a command with no database named stops here (exit 2): only
    `chatsync demo` starts a database of its own (demo_settings)."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("no database named: set CHATSYNC_DATABASE_URL (e.g. "
                          "postgresql://chatsync@db.example.com:5432/app); only `chatsync demo` starts an "
                          "embedded Postgres and Redis by itself")
    return settings


def demo_settings() -> Settings:
    """The demo's settings: CHATSYNC_DATABASE_URL when set, else the embedded services."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings
    from chatsync import embedded
    from chatsync.config import default_home

    services = embedded.start(default_home() / "services")
    log.info("CHATSYNC_DATABASE_URL not set: using the embedded Postgres at %s", services.database_url)
    return Settings.from_env(database_url=services.database_url,
                             redis_url=settings.redis_url or services.redis_url)


# -- commands ---------------------------------------------------------------------------------

def cmd_init(args) -> tuple[int, dict]:
    from chatsync.migrations import migrate

    settings = settings_for_cli()
    applied = migrate(settings, reference_schema=args.reference_schema)
    return EXIT_OK, {"applied": applied, "ops_schema": settings.ops_schema,
                     "reference_schema": args.reference_schema}


def cmd_simulate(args) -> tuple[int, dict]:
    from chatsync.simulate import simulate

    report = simulate(settings_for_cli(), rooms=args.rooms, members=args.members, drift=args.drift,
                      seed=args.seed, drift_rooms=args.drift_rooms, maintain_fingerprints=args.fingerprints)
    return EXIT_OK, report.to_dict()


def cmd_check(args) -> tuple[int, dict]:
    from chatsync.diff import Scope
    from chatsync.engine import check

    scope = Scope("rooms", rooms=args.rooms) if args.rooms else Scope(args.scope)
    summary = check(settings_for_cli(), scope, do_repair=args.repair, do_validate=not args.no_validate)
    return (EXIT_OK if summary.consistent else EXIT_INCONSISTENT), summary.to_dict()


def cmd_rollback(args) -> tuple[int, dict]:
    from chatsync.engine import cache_follows
    from chatsync.repair import rollback

    settings = settings_for_cli()
    result = rollback(settings, args.run_id)
    return EXIT_OK, {**result.to_dict(), "cache": cache_follows(settings, result.rollback_run_id)}


def cmd_demo(args) -> tuple[int, dict]:
    from chatsync.demo import run_demo

    return run_demo(rooms=args.rooms, members=args.members, drift=args.drift, seed=args.seed)


def cmd_worker(args) -> tuple[int, dict]:
    import signal

    from chatsync.worker import Worker

    if any(os.environ.get(f"AIRFLOW_CONN_CHATSYNC_{c}") for c in ("SLACK", "SMTP")):
        from chatsync.notifiers import use_airflow_channels

        use_airflow_channels()  # the worker's alerts go to the same channels as the DAGs'
    worker = Worker(settings_for_cli(), args.name, batch_size=args.batch, block_ms=args.block_ms,
                    claim_idle_ms=args.claim_idle_ms)
    signal.signal(signal.SIGTERM, worker.stop)  # finish the batch in hand, then exit
    signal.signal(signal.SIGINT, worker.stop)
    try:
        stats = worker.run(until_idle=args.until_idle, max_seconds=args.max_seconds)
        return EXIT_OK, {**stats.to_dict(), "worker": worker.name, "backlog": worker.backlog()}
    finally:
        worker.close()


def cmd_cache(args) -> tuple[int, dict]:
    from chatsync import cache

    settings = settings_for_cli()
    if args.action == "resync":
        return EXIT_OK, cache.resync(settings, args.rooms).to_dict()
    result = cache.verify(settings, args.rooms)
    return (EXIT_OK if result.total == 0 else EXIT_INCONSISTENT), result.to_dict()


def cmd_publish(args) -> tuple[int, dict]:
    from chatsync.cache import client_for
    from chatsync.events import publish

    settings = settings_for_cli()
    client = client_for(settings)
    try:
        entry = publish(client, settings.events_stream, args.type, args.room_id, args.user_id)
    except ChatsyncError as exc:
        raise ConfigError(f"event refused: {exc}") from None
    finally:
        client.close()
    return EXIT_OK, {"stream": settings.events_stream, "entry_id": entry}


def cmd_freeze(args) -> tuple[int, dict]:
    import getpass

    from chatsync.freeze import freeze

    return EXIT_OK, freeze(settings_for_cli(), [args.room_id], args.reason, args.ttl, by=f"cli:{getpass.getuser()}",
                           require_chat_room=True)  # a room named on the command line must exist


def cmd_unfreeze(args) -> tuple[int, dict]:
    from chatsync.freeze import unfreeze

    out = unfreeze(settings_for_cli(), [args.room_id])
    if args.room_id not in out["unfrozen"]:  # nothing to do is no error: the room is not frozen either way
        log.warning("room %d has no freeze lease: nothing lifted", args.room_id)
    return EXIT_OK, out


def cmd_grants(args) -> tuple[int, dict]:
    from chatsync import grants

    settings = settings_for_cli()
    if args.apply:
        return EXIT_OK, {"role": args.role, "applied": grants.apply(settings, args.role)}
    print(grants.as_text(settings, args.role), end="")
    return EXIT_OK, {}


def cmd_fingerprints(args) -> tuple[int, dict]:
    from chatsync import fingerprints

    settings = settings_for_cli()
    if args.action == "install":
        return EXIT_OK, {"installed": fingerprints.install(settings)}
    if args.action == "uninstall":
        return EXIT_OK, {"uninstalled": fingerprints.uninstall(settings)}
    return EXIT_OK, {"fingerprints": fingerprints.status(settings)}


def cmd_bench(args) -> tuple[int, dict]:
    from chatsync.bench import run_bench

    if args.suite == "events":
        from chatsync.bench_events import run_events_bench

        return EXIT_OK, run_events_bench(settings_for_cli(), participants=args.participants,
                                         events=args.events, rate=args.rate, seed=args.seed,
                                         results_dir=args.results_dir)
    return EXIT_OK, run_bench(settings_for_cli(), participants=args.participants, drift=args.drift,
                              seed=args.seed, skip_pandas=args.skip_pandas, repeat=args.repeat, members=args.members,
                              drift_rooms=args.drift_rooms, maintained_fingerprints=args.fingerprints,
                              history=args.history, results_dir=args.results_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chatsync", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
        p.set_defaults(fn=fn)
        return p

    p = add("init", cmd_init, "create or upgrade the ops schema (idempotent)")
    p.add_argument("--reference-schema", action="store_true", help="also create the reference app schema")

    p = add("simulate", cmd_simulate, "fill the reference schema with realistic data and drift")
    p.add_argument("--rooms", type=_positive_int, required=True)
    p.add_argument("--members", type=_positive_int, required=True, help="mean participants per room")
    p.add_argument("--drift", type=_drift, required=True, help="fraction of participant rows drifted")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--drift-rooms", type=_share_of_rooms, default=1.0,
                   help="put the participant drift in this fraction of the rooms (default 1: spread)")
    p.add_argument("--fingerprints", action="store_true",
                   help="install maintained fingerprints on the clean data, before the drift")

    p = add("check", cmd_check, "one consistency pass: detect, then repair and validate")
    p.add_argument("--scope", choices=("full", "incremental"), default="full")
    p.add_argument("--repair", action="store_true", help="repair what is found (within the threshold)")
    p.add_argument("--rooms", type=_room_ids, help="only these room ids (comma-separated)")
    p.add_argument("--no-validate", action="store_true", help="skip the Great Expectations suite")

    p = add("rollback", cmd_rollback, "undo a run's repairs from its audit")
    p.add_argument("run_id", type=_id)

    p = add("demo", cmd_demo, "embedded Postgres/Redis, simulated drift, the hourly DAG run for real")
    p.add_argument("--rooms", type=_positive_int, default=100)
    p.add_argument("--members", type=_positive_int, default=50)
    p.add_argument("--drift", type=_drift, default=0.005)
    p.add_argument("--seed", type=int, default=42)

    p = add("worker", cmd_worker, "consume room events from the Redis Stream and sync the chat side")
    p.add_argument("--name", help="consumer name (default: host-pid)")
    p.add_argument("--batch", type=_whole_number(1, "a positive number", MAX_STREAM_COUNT), default=500,
                   help="entries per batch")
    p.add_argument("--block-ms", type=_whole_number(1, "a positive number", MAX_BLOCK_MS), default=1000,
                   help=f"wait for new entries this long (at most {MAX_BLOCK_MS})")
    p.add_argument("--claim-idle-ms", type=_positive_int, default=30_000,
                   help="take over entries left pending this long by a dead worker")
    p.add_argument("--until-idle", action="store_true", help="exit once the stream is drained")
    p.add_argument("--max-seconds", type=_positive_number, help="exit after this long")

    p = add("cache", cmd_cache, "the Redis cache of the chat state: verify or resync")
    p.add_argument("action", choices=("verify", "resync"))
    p.add_argument("--rooms", type=_room_ids, help="only these room ids (comma-separated)")

    p = add("publish", cmd_publish, "append one room event to the stream (what the room service does)")
    p.add_argument("type", help="event type, e.g. room.participant.added")
    p.add_argument("room_id", type=_id)
    p.add_argument("user_id", type=_id, nargs="?")

    p = add("freeze", cmd_freeze, "stop writes on a chat room (a lease that ends by itself)")
    p.add_argument("room_id", type=_id)
    p.add_argument("--reason", required=True, help="why (shown to operators and in alerts)")
    p.add_argument("--ttl", type=_whole_number(1, "a number of seconds", MAX_FREEZE_TTL_SECONDS), default=3600,
                   help="lease in seconds (default 3600)")

    p = add("unfreeze", cmd_unfreeze, "resume writes on a chat room")
    p.add_argument("room_id", type=_id)

    p = add("grants", cmd_grants, "the least privileges of a database role running chatsync (SQL, or --apply)")
    p.add_argument("role", help="the role chatsync connects as")
    p.add_argument("--apply", action="store_true", help="run them now (connect as an administrator)")

    p = add("fingerprints", cmd_fingerprints,
            "per-room fingerprints kept current by triggers: install (or rebuild), uninstall, status")
    p.add_argument("action", choices=("install", "uninstall", "status"))

    p = add("bench", cmd_bench, "time detect/repair against a bare FULL OUTER JOIN and pandas")
    p.add_argument("--participants", type=_positive_int, default=1_000_000)
    p.add_argument("--members", type=_positive_int, default=50, help="participants per room")
    p.add_argument("--drift", type=_drift, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drift-rooms", type=_share_of_rooms, default=1.0,
                   help="put the participant drift in this fraction of the rooms (default 1: spread)")
    p.add_argument("--skip-pandas", action="store_true", help="leave out the pandas approach")
    p.add_argument("--fingerprints", action="store_true",
                   help="detect from fingerprints maintained by triggers (installed before the drift)")
    p.add_argument("--repeat", type=_positive_int, default=3, help="runs of each read step (median kept)")
    p.add_argument("--history", type=_non_negative_int, default=0,
                   help="resolved findings of earlier runs in the findings table first (as retention keeps them)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where the run's JSON result and the event bench's worker logs go (default benchmarks/results)")
    p.add_argument("--suite", choices=("consistency", "events"), default="consistency",
                   help="consistency: detect/repair (default); events: worker delay, drain, cache resync")
    p.add_argument("--events", type=_positive_int, default=100_000, help="events suite: events per phase")
    p.add_argument("--rate", type=_positive_number, default=2000.0,
                   help="events suite: steady publish rate per second")
    return parser


def _print_human(command: str, summary: dict) -> None:
    if command == "demo" or (command == "grants" and not summary):
        return  # the demo prints its own report; grants printed its SQL
    if command == "bench":
        if "steady" in summary:
            from chatsync.bench_events import format_table
        else:
            from chatsync.bench import format_table

        print(format_table(summary))
        if summary.get("saved_to"):
            print(f"saved to {summary['saved_to']}")
        return
    print(json.dumps(summary, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code, summary = args.fn(args)
    except ConfigError as exc:
        print(f"chatsync {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChatsyncError as exc:
        print(f"chatsync {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - last resort: a clear line, then the traceback in -v
        log.debug("traceback", exc_info=True)
        print(f"chatsync {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_human(args.command, summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
