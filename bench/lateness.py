"""Lateness: posts due at random times, publish start minus due time per contender.

1,000 posts due at random times over 2 minutes go to each contender in turn,
on one private Redis flushed between them: postsched, the beat-polling
baseline and BullMQ. Every contender gets the same due-time offsets. The
script prints p50, p99 and max per contender, with the ratios to postsched,
and draws the three distributions as CDFs into a PNG.

    .venv/bin/python -m bench.lateness
    .venv/bin/python -m bench.lateness --posts 100 --window 20 --png /tmp/lateness.png
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.contenders import BeatBaseline, Bullmq, Outcome, Postsched, make_posts
from bench.harness import (
    Lateness,
    RedisServer,
    next_whole_second,
    private_redis,
    spread_offsets_s,
)

POSTS = 1_000
WINDOW_S = 120.0
LEAD_S = 10.0
SETTLE_S = 30.0
SEED = 20_240_601
DEFAULT_PNG = Path("docs") / "benchmarks-lateness.png"


def lateness_of(contender: str, outcomes: Sequence[Outcome]) -> Lateness:
    """Return the publish-start lateness of ``outcomes``, counting missing and repeated posts."""
    result = Lateness(contender)
    for outcome in outcomes:
        if outcome.start_s is None:
            result.missing += 1
            continue
        result.values_ms.append((outcome.start_s - outcome.due_s) * 1000)
        if outcome.publishes > 1:
            result.duplicates += 1
    return result


def run_contender(
    kind: type[Postsched] | type[Bullmq],
    redis_server: RedisServer,
    workdir: Path,
    offsets_s: Sequence[float],
    console: Console,
) -> Lateness:
    """Run one contender on a fresh store and a flushed Redis."""
    contender_dir = workdir / kind.__name__.lower()
    contender_dir.mkdir()
    with redis_server.client() as client:
        client.flushall()
    contender = kind(redis_server, contender_dir)
    console.print(
        f"lateness: {contender.name}, {len(offsets_s)} posts over {max(offsets_s):.0f} s"
    )
    # The due times are fixed once the contender is up, so the lead covers the scheduling only.
    start_s = next_whole_second(LEAD_S)
    posts = make_posts([start_s + offset for offset in offsets_s], "late")
    outcomes = contender.run(posts, SETTLE_S)
    return lateness_of(contender.name, outcomes)


def measure(
    redis_server: RedisServer,
    workdir: Path,
    console: Console,
    posts: int = POSTS,
    window_s: float = WINDOW_S,
) -> list[Lateness]:
    """Measure every contender that can run here, postsched first."""
    offsets_s = spread_offsets_s(posts, window_s, SEED)
    kinds: list[type[Postsched] | type[Bullmq]] = [Postsched, BeatBaseline]
    reason = Bullmq.unavailable_reason()
    if reason is None:
        Bullmq.install()
        kinds.append(Bullmq)
    else:
        console.print(f"lateness: BullMQ skipped: {reason}")
    return [
        run_contender(kind, redis_server, workdir, offsets_s, console) for kind in kinds
    ]


def summarize(results: Sequence[Lateness]) -> list[dict[str, Any]]:
    """Return one row per contender with its figures and its ratios to postsched."""
    base = results[0].summary()
    rows = []
    for result in results:
        summary = result.summary()
        row: dict[str, Any] = {"contender": result.contender, **summary}
        for key in ("p50_ms", "p99_ms", "max_ms"):
            row[f"{key}_ratio"] = summary[key] / base[key] if base[key] else None
        rows.append(row)
    return rows


def draw_cdf(results: Sequence[Lateness], png: Path) -> None:
    """Draw the lateness CDF of each contender into ``png``, on a log time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for result in results:
        ordered = sorted(max(value, 0.1) for value in result.values_ms)
        if not ordered:
            continue
        fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
        label = f"{result.contender} (p50 {result.percentile(50):.0f} ms, p99 {result.percentile(99):.0f} ms)"
        axes.step(ordered, fractions, where="post", label=label)
    axes.set_xscale("log")
    axes.set_xlabel("publish start minus due time (ms, log scale)")
    axes.set_ylabel("fraction of posts")
    axes.set_title("Lateness of 1,000 posts due at random times over 2 minutes")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)
    plt.close(figure)


def print_rows(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """Print the lateness table."""
    from rich.table import Table

    table = Table(title="Lateness (publish start minus due time)")
    for column in ("contender", "p50 ms", "p99 ms", "max ms", "x p50", "x p99"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['max_ms']:.1f}",
            f"{row['p50_ms_ratio']:.2f}" if row["p50_ms_ratio"] else "-",
            f"{row['p99_ms_ratio']:.2f}" if row["p99_ms_ratio"] else "-",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=POSTS)
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    options = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        workdir = Path(name)
        with private_redis(workdir) as redis_server:
            results = measure(
                redis_server, workdir, console, options.posts, options.window
            )
    print_rows(summarize(results), console)
    draw_cdf(results, options.png)
    console.print(f"wrote {options.png}")


if __name__ == "__main__":
    main()
