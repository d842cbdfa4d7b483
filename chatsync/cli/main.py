"""The ``chatsync`` command line.

Every command takes ``--json`` for a machine-readable summary on stdout; logs go to stderr.
Exit codes: 0 consistent / done, 1 inconsistencies remain, 2 bad usage or configuration,
3 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from chatsync.cli.arguments import (
    EXIT_FAILURE,
    EXIT_INCONSISTENT,
    EXIT_OK,
    EXIT_USAGE,
    MAX_BLOCK_MS,
    MAX_STREAM_COUNT,
    Parser,
    key_text,
    positive_int,
    positive_number,
    room_ids,
    run_id,
    whole_number,
)
from chatsync.config import MAX_FREEZE_TTL_SECONDS, Settings
from chatsync.errors import ChatsyncError, ConfigError
from chatsync.model.keys import json_keys, keys

log = logging.getLogger("chatsync.cli")
COMMANDS_GROUP = "chatsync.commands"  # entry points: a function taking build_parser's add()


def settings_for_cli() -> Settings:
    """Settings from the environment; a command with no database named stops here (exit 2): only
    `chatsync demo` starts a database of its own (demo_settings)."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("no database named: set CHATSYNC_DATABASE_URL (e.g. "
                          "postgresql://chatsync@db.example.com:5432/app); only `chatsync demo` starts an "
                          "embedded Postgres and Redis by itself")
    return settings


def _rooms(settings: Settings, given, option: str = "--rooms takes comma-separated room ids") -> tuple:
    """Room ids from the command line, read as the mapped room key's type (ConfigError: exit 2)."""
    return tuple(keys(settings).room.parse_all(given, option))


def cmd_init(args) -> tuple[int, dict]:
    from chatsync.db.migrations import migrate

    settings = settings_for_cli()
    applied = migrate(settings, reference_schema=args.reference_schema)
    return EXIT_OK, {"applied": applied, "ops_schema": settings.ops_schema,
                     "reference_schema": args.reference_schema}


def cmd_check(args) -> tuple[int, dict]:
    from chatsync.consistency.engine import check
    from chatsync.consistency.scope import Scope

    settings = settings_for_cli()
    scope = Scope("rooms", rooms=_rooms(settings, args.rooms)) if args.rooms else Scope(args.scope)
    summary = check(settings, scope, do_repair=args.repair, do_validate=not args.no_validate)
    return (EXIT_OK if summary.consistent else EXIT_INCONSISTENT), summary.to_dict()


def cmd_rollback(args) -> tuple[int, dict]:
    from chatsync.consistency.engine import cache_follows
    from chatsync.consistency.rollback import rollback

    settings = settings_for_cli()
    result = rollback(settings, args.run_id)
    return EXIT_OK, {**result.to_dict(), "cache": cache_follows(settings, result.rollback_run_id)}


def cmd_worker(args) -> tuple[int, dict]:
    import signal

    from chatsync.events.worker import Worker

    if any(os.environ.get(f"AIRFLOW_CONN_CHATSYNC_{c}") for c in ("SLACK", "SMTP")):
        from chatsync.alerting.notifiers import use_airflow_channels

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
    from chatsync.events import cache

    settings = settings_for_cli()
    rooms = _rooms(settings, args.rooms) if args.rooms else None
    if args.action == "resync":
        return EXIT_OK, cache.resync(settings, rooms).to_dict()
    result = cache.verify(settings, rooms)
    return (EXIT_OK if result.total == 0 else EXIT_INCONSISTENT), result.to_dict()


def cmd_publish(args) -> tuple[int, dict]:
    from chatsync.events.cache import client_for
    from chatsync.events.envelope import publish

    settings = settings_for_cli()
    client = client_for(settings)
    try:
        mapped = keys(settings)
        (room_id,) = mapped.room.parse_all([args.room_id], "room_id")
        user_id = mapped.user.parse_all([args.user_id], "user_id")[0] if args.user_id is not None else None
        entry = publish(client, settings.events_stream, args.type, room_id, user_id)
    except ChatsyncError as exc:
        raise ConfigError(f"event refused: {exc}") from None
    finally:
        client.close()
    return EXIT_OK, {"stream": settings.events_stream, "entry_id": entry}


def cmd_freeze(args) -> tuple[int, dict]:
    import getpass

    from chatsync.ops.freeze import freeze

    settings = settings_for_cli()
    return EXIT_OK, freeze(settings, list(_rooms(settings, [args.room_id], "room_id")), args.reason, args.ttl,
                           by=f"cli:{getpass.getuser()}", require_chat_room=True)  # a named room must exist


def cmd_unfreeze(args) -> tuple[int, dict]:
    from chatsync.ops.freeze import unfreeze

    settings = settings_for_cli()
    (room_id,) = _rooms(settings, [args.room_id], "room_id")
    out = unfreeze(settings, [room_id])
    if json_keys([room_id])[0] not in out["unfrozen"]:  # nothing to do is no error: the room is not frozen either way
        log.warning("room %s has no freeze lease: nothing lifted", room_id)
    return EXIT_OK, out


def cmd_grants(args) -> tuple[int, dict]:
    from chatsync.ops import grants

    settings = settings_for_cli()
    if args.apply:
        return EXIT_OK, {"role": args.role, "applied": grants.apply(settings, args.role)}
    print(grants.as_text(settings, args.role), end="")
    return EXIT_OK, {}


def cmd_fingerprints(args) -> tuple[int, dict]:
    from chatsync.consistency import fingerprints

    settings = settings_for_cli()
    if args.action == "install":
        return EXIT_OK, {"installed": fingerprints.install(settings)}
    if args.action == "uninstall":
        return EXIT_OK, {"uninstalled": fingerprints.uninstall(settings)}
    return EXIT_OK, {"fingerprints": fingerprints.status(settings)}


def build_parser(with_installed: bool = True) -> argparse.ArgumentParser:
    """The parser; with_installed adds the commands of other installed packages (reading the
    entry points costs ~0.1-0.2 s of start-up, so a chatsync command is parsed without them)."""
    parser = Parser(prog="chatsync", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help_: str, human: Callable[[dict], None] | None = None
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
        p.set_defaults(fn=fn, human=human)
        return p

    p = add("init", cmd_init, "create or upgrade the ops schema (idempotent)")
    p.add_argument("--reference-schema", action="store_true", help="also create the reference app schema")

    p = add("check", cmd_check, "one consistency pass: detect, then repair and validate")
    p.add_argument("--scope", choices=("full", "incremental"), default="full")
    p.add_argument("--repair", action="store_true", help="repair what is found (within the threshold)")
    p.add_argument("--rooms", type=room_ids, help="only these room ids (comma-separated)")
    p.add_argument("--no-validate", action="store_true", help="skip the Great Expectations suite")

    p = add("rollback", cmd_rollback, "undo a run's repairs from its audit")
    p.add_argument("run_id", type=run_id)

    p = add("worker", cmd_worker, "consume room events from the Redis Stream and sync the chat side")
    p.add_argument("--name", help="consumer name (default: host-pid)")
    p.add_argument("--batch", type=whole_number(1, "a positive number", MAX_STREAM_COUNT), default=500,
                   help="entries per batch")
    p.add_argument("--block-ms", type=whole_number(1, "a positive number", MAX_BLOCK_MS), default=1000,
                   help=f"wait for new entries this long (at most {MAX_BLOCK_MS})")
    p.add_argument("--claim-idle-ms", type=positive_int, default=30_000,
                   help="take over entries left pending this long by a dead worker")
    p.add_argument("--until-idle", action="store_true", help="exit once the stream is drained")
    p.add_argument("--max-seconds", type=positive_number, help="exit after this long")

    p = add("cache", cmd_cache, "the Redis cache of the chat state: verify or resync")
    p.add_argument("action", choices=("verify", "resync"))
    p.add_argument("--rooms", type=room_ids, help="only these room ids (comma-separated)")

    p = add("publish", cmd_publish, "append one room event to the stream (what the room service does)")
    p.add_argument("type", help="event type, e.g. room.participant.added")
    p.add_argument("room_id", type=key_text)
    p.add_argument("user_id", type=key_text, nargs="?")

    p = add("freeze", cmd_freeze, "stop writes on a chat room (a lease that ends by itself)")
    p.add_argument("room_id", type=key_text)
    p.add_argument("--reason", required=True, help="why (shown to operators and in alerts)")
    p.add_argument("--ttl", type=whole_number(1, "a number of seconds", MAX_FREEZE_TTL_SECONDS), default=3600,
                   help="lease in seconds (default 3600)")

    p = add("unfreeze", cmd_unfreeze, "resume writes on a chat room")
    p.add_argument("room_id", type=key_text)

    p = add("grants", cmd_grants, "the least privileges of a database role running chatsync (SQL, or --apply)")
    p.add_argument("role", help="the role chatsync connects as")
    p.add_argument("--apply", action="store_true", help="run them now (connect as an administrator)")

    p = add("fingerprints", cmd_fingerprints,
            "per-room fingerprints kept current by triggers: install (or rebuild), uninstall, status")
    p.add_argument("action", choices=("install", "uninstall", "status"))

    parser.set_defaults(product_commands=frozenset(sub.choices))
    # commands of other installed packages (chatsync-devtools: simulate, demo, bench)
    if with_installed:
        from importlib.metadata import entry_points

        for entry in entry_points(group=COMMANDS_GROUP):
            entry.load()(add)
    return parser


def _print_human(command: str, summary: dict) -> None:
    if command == "grants" and not summary:
        return  # grants printed its SQL
    print(json.dumps(summary, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(with_installed=False)
    if command not in parser.get_default("product_commands"):
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
    elif args.human:
        args.human(summary)
    else:
        _print_human(args.command, summary)
    return code


if __name__ == "__main__":
    sys.exit(main())
