"""How the cost grows with size: ``python -m chatsync_devtools.bench.plot RESULT.json ... [-o PNG]``.

Reads saved ``chatsync bench`` results (benchmarks/results/*.json), keeps the newest per
(participants, layout, fingerprints), writes a log-log PNG of seconds against participants for
the floor, the bare FULL OUTER JOIN, chatsync's detect and repair, and prints the points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SERIES = [("floor", "count(*) of both tables (floor)", "k:"), ("foj", "bare FULL OUTER JOIN", "C3--"),
          ("detect", "chatsync detect (full)", "C0-"),
          ("incremental", "chatsync detect (incremental, 1 % changed)", "C2-"),
          ("repair", "chatsync repair + audit", "C1-.")]


def _layout(result: dict) -> str:
    spread = "spread" if result.get("drift_rooms", 1.0) >= 1 else "concentrated"
    return f"{spread}{', maintained fingerprints' if result.get('maintained_fingerprints') else ''}"


def load(paths: list[Path]) -> dict[str, list[dict]]:
    """layout -> results sorted by size (the newest per size)."""
    newest: dict[tuple[str, int], dict] = {}
    for path in paths:
        result = json.loads(path.read_text())
        if "steps" not in result or "floor" not in result["steps"] or result.get("topology"):
            continue  # the events suite, the two-database bench
        key = (_layout(result), result["participants"])
        if key not in newest or result["measured_at"] > newest[key]["measured_at"]:
            newest[key] = result
    out: dict[str, list[dict]] = {}
    for (layout, _), result in sorted(newest.items(), key=lambda kv: kv[0][1]):
        out.setdefault(layout, []).append(result)
    return out


def plot(by_layout: dict[str, list[dict]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_layout), figsize=(6 * len(by_layout), 4.5), squeeze=False)
    for ax, (layout, results) in zip(axes[0], by_layout.items()):
        sizes = [r["participants"] for r in results]
        for step, label, style in SERIES:
            points = [(n, r["steps"][step]["seconds"]) for n, r in zip(sizes, results) if step in r["steps"]]
            if points:
                ax.plot(*zip(*points), style, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("participants per side")
        ax.set_ylabel("seconds")
        ax.set_title(f"1 % drift, {layout}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m chatsync_devtools.bench.plot", description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="saved chatsync bench results (JSON)")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks") / "cost_vs_size.png")
    args = p.parse_args(argv)
    by_layout = load(args.results)
    if not by_layout:
        raise SystemExit("no consistency-suite results among the given files")
    plot(by_layout, args.output)
    for layout, results in by_layout.items():
        for r in results:
            s = r["steps"]
            print(f"{layout:40} {r['participants']:>11,}  " + "  ".join(
                f"{k} {s[k]['seconds']:.3f}s" for k, _, _ in SERIES if k in s))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
