"""The development commands of ``chatsync``: ``simulate``, ``demo`` and ``bench``.

Registered through the ``chatsync.commands`` entry point, so they appear in ``chatsync --help``
wherever chatsync-devtools is installed (a checkout's ``make`` environment), and nowhere else.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from chatsync.cli.arguments import EXIT_OK, fraction, non_negative_int, positive_int, positive_number
from chatsync.cli.main import settings_for_cli

_drift = fraction(0.5)
_share_of_rooms = fraction(1.0)  # --drift-rooms: its default, 1, spreads the drift over every room


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the chatsync parser (``add(name, fn, help, human)``)."""
    p = add("simulate", cmd_simulate, "fill the reference schema with realistic data and drift")
    p.add_argument("--rooms", type=positive_int, required=True)
    p.add_argument("--members", type=positive_int, required=True, help="mean participants per room")
    p.add_argument("--drift", type=_drift, required=True, help="fraction of participant rows drifted")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--drift-rooms", type=_share_of_rooms, default=1.0,
                   help="put the participant drift in this fraction of the rooms (default 1: spread)")
    p.add_argument("--fingerprints", action="store_true",
                   help="install maintained fingerprints on the clean data, before the drift")

    p = add("demo", cmd_demo, "embedded Postgres/Redis, simulated drift, the hourly DAG run for real",
            human=lambda summary: None)  # the demo prints its own report
    p.add_argument("--rooms", type=positive_int, default=100)
    p.add_argument("--members", type=positive_int, default=50)
    p.add_argument("--drift", type=_drift, default=0.005)
    p.add_argument("--seed", type=int, default=42)

    p = add("bench", cmd_bench, "time detect/repair against a bare FULL OUTER JOIN and pandas",
            human=print_bench)
    p.add_argument("--participants", type=positive_int, default=1_000_000)
    p.add_argument("--members", type=positive_int, default=50, help="participants per room")
    p.add_argument("--drift", type=_drift, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--drift-rooms", type=_share_of_rooms, default=1.0,
                   help="put the participant drift in this fraction of the rooms (default 1: spread)")
    p.add_argument("--skip-pandas", action="store_true", help="leave out the pandas approach")
    p.add_argument("--fingerprints", action="store_true",
                   help="detect from fingerprints maintained by triggers (installed before the drift)")
    p.add_argument("--repeat", type=positive_int, default=3, help="runs of each read step (median kept)")
    p.add_argument("--history", type=non_negative_int, default=0,
                   help="resolved findings of earlier runs in the findings table first (as retention keeps them)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where the JSON result and the event bench's worker logs go (default benchmarks/results)")
    p.add_argument("--suite", choices=("consistency", "events"), default="consistency",
                   help="consistency: detect/repair (default); events: worker delay, drain, cache resync")
    p.add_argument("--topology", choices=("one-database", "two-databases"), default="one-database",
                   help="two-databases: chatsync with the room side in a database of its own against its "
                        "same-database detect and reladiff's hashdiff (run by uvx)")
    p.add_argument("--keys", choices=("bigint", "uuid"), default="bigint",
                   help="uuid: the same data keyed by bigint and by uuid, detect and repair measured on both")
    p.add_argument("--skip-reladiff", action="store_true", help="two-databases: leave out reladiff")
    p.add_argument("--reladiff-timeout", type=positive_number, default=900.0,
                   help="two-databases: seconds after which a reladiff run is stopped and reported skipped")
    p.add_argument("--events", type=positive_int, default=100_000, help="events suite: events per phase")
    p.add_argument("--rate", type=positive_number, default=2000.0,
                   help="events suite: steady publish rate per second")


def cmd_simulate(args) -> tuple[int, dict]:
    from chatsync_devtools.simulate import simulate

    report = simulate(settings_for_cli(), rooms=args.rooms, members=args.members, drift=args.drift,
                      seed=args.seed, drift_rooms=args.drift_rooms, maintain_fingerprints=args.fingerprints)
    return EXIT_OK, report.to_dict()


def cmd_demo(args) -> tuple[int, dict]:
    from chatsync_devtools.demo import run_demo

    return run_demo(rooms=args.rooms, members=args.members, drift=args.drift, seed=args.seed)


def cmd_bench(args) -> tuple[int, dict]:
    from chatsync_devtools.bench.consistency import run_bench

    if args.suite == "events":
        from chatsync_devtools.bench.events import run_events_bench

        return EXIT_OK, run_events_bench(settings_for_cli(), participants=args.participants,
                                         events=args.events, rate=args.rate, seed=args.seed,
                                         results_dir=args.results_dir)
    if args.keys == "uuid":
        from chatsync_devtools.bench.keys import run_keys_bench

        return EXIT_OK, run_keys_bench(settings_for_cli(), participants=args.participants, drift=args.drift,
                                       seed=args.seed, repeat=args.repeat, members=args.members,
                                       drift_rooms=args.drift_rooms, results_dir=args.results_dir)
    if args.topology == "two-databases":
        from chatsync_devtools.bench.topology import run_topology_bench

        return EXIT_OK, run_topology_bench(settings_for_cli(), participants=args.participants, drift=args.drift,
                                           seed=args.seed, repeat=args.repeat, members=args.members,
                                           drift_rooms=args.drift_rooms, skip_reladiff=args.skip_reladiff,
                                           reladiff_timeout=args.reladiff_timeout, results_dir=args.results_dir)
    return EXIT_OK, run_bench(settings_for_cli(), participants=args.participants, drift=args.drift,
                              seed=args.seed, skip_pandas=args.skip_pandas, repeat=args.repeat, members=args.members,
                              drift_rooms=args.drift_rooms, maintained_fingerprints=args.fingerprints,
                              history=args.history, results_dir=args.results_dir)


def print_bench(summary: dict) -> None:
    if "steady" in summary:
        from chatsync_devtools.bench.events import format_table
    elif summary.get("topology") == "two-databases":
        from chatsync_devtools.bench.topology import format_table
    elif summary.get("keys") == "uuid":
        from chatsync_devtools.bench.keys import format_table
    else:
        from chatsync_devtools.bench.consistency import format_table

    print(format_table(summary))
    if summary.get("saved_to"):
        print(f"saved to {summary['saved_to']}")
