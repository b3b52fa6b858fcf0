"""Burst: 10,000 posts due in the same second, time until the last is published.

postsched and BullMQ each get 10,000 posts due at one whole second, on one
private Redis flushed between them. The drain time runs from that due time
to the end of the last publish: the store's ``published_at`` for postsched,
the job's completion for BullMQ. The rate is posts divided by the drain time.

    .venv/bin/python -m bench.burst
    .venv/bin/python -m bench.burst --posts 2000
    .venv/bin/python -m bench.burst --publish-batch-size 250
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.contenders import Bullmq, Outcome, Postsched, make_posts
from bench.harness import RedisServer, next_whole_second, private_redis

POSTS = 10_000
LEAD_S = 15.0
SETTLE_S = 120.0


def drain_figures(contender: str, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Return the drain time and rate of a burst, with missing and repeated posts."""
    due_s = min(outcome.due_s for outcome in outcomes)
    done = [outcome.done_s for outcome in outcomes if outcome.done_s is not None]
    starts = [outcome.start_s for outcome in outcomes if outcome.start_s is not None]
    drain_s = max(done) - due_s if done else float("nan")
    return {
        "contender": contender,
        "posts": len(outcomes),
        "first_start_ms": (min(starts) - due_s) * 1000 if starts else float("nan"),
        "drain_s": drain_s,
        "posts_per_s": len(done) / drain_s if done and drain_s > 0 else float("nan"),
        "missing": len(outcomes) - len(done),
        "duplicates": sum(outcome.publishes > 1 for outcome in outcomes),
    }


def measure(
    redis_server: RedisServer,
    workdir: Path,
    console: Console,
    posts: int = POSTS,
    publish_batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Measure postsched, then BullMQ when node and npm are installed.

    ``publish_batch_size`` sets the worker's POSTSCHED_PUBLISH_BATCH_SIZE
    instead of its default.
    """
    kinds: list[type[Postsched] | type[Bullmq]] = [Postsched]
    reason = Bullmq.unavailable_reason()
    if reason is None:
        Bullmq.install()
        kinds.append(Bullmq)
    else:
        console.print(f"burst: BullMQ skipped: {reason}")
    rows = []
    for kind in kinds:
        contender_dir = workdir / f"burst-{kind.__name__.lower()}"
        contender_dir.mkdir()
        with redis_server.client() as client:
            client.flushall()
        if kind is Postsched and publish_batch_size is not None:
            contender: Postsched | Bullmq = Postsched(
                redis_server,
                contender_dir,
                {"POSTSCHED_PUBLISH_BATCH_SIZE": str(publish_batch_size)},
            )
        else:
            contender = kind(redis_server, contender_dir)
        console.print(f"burst: {contender.name}, {posts} posts due in one second")
        due_s = next_whole_second(LEAD_S)
        outcomes = contender.run(make_posts([due_s] * posts, "burst"), SETTLE_S)
        rows.append(drain_figures(contender.name, outcomes))
    return rows


def print_rows(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """Print the burst table."""
    from rich.table import Table

    table = Table(title="Burst (posts due in the same second)")
    for column in ("contender", "posts", "first start ms", "drain s", "posts/s"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            f"{row['posts']:,}",
            f"{row['first_start_ms']:.0f}",
            f"{row['drain_s']:.2f}",
            f"{row['posts_per_s']:,.0f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=POSTS)
    parser.add_argument(
        "--publish-batch-size",
        type=int,
        help="the worker's POSTSCHED_PUBLISH_BATCH_SIZE (default: its own, 50)",
    )
    options = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        workdir = Path(name)
        with private_redis(workdir) as redis_server:
            rows = measure(
                redis_server,
                workdir,
                console,
                options.posts,
                options.publish_batch_size,
            )
    print_rows(rows, console)


if __name__ == "__main__":
    main()
