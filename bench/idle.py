"""Idle cost: 100 posts due next week, nothing due now.

postsched and the beat-polling baseline each run on a private Redis of their
own, with 100 posts due in a week. After a warm-up, the script counts over
``--minutes`` (default 5) the task executions in the worker's log and the
Redis commands in INFO commandstats, and scales both to one hour.

    .venv/bin/python -m bench.idle
    .venv/bin/python -m bench.idle --minutes 1
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.contenders import BeatBaseline, Postsched, make_posts
from bench.harness import private_redis

POSTS = 100
WEEK_S = 7 * 24 * 3600.0
WARM_UP_S = 15.0
MINUTES = 5.0
TASK_DONE = re.compile(r"Task ([\w.]+)\[[^\]]+\] succeeded")


def count_tasks(log: Path, offset: int) -> dict[str, int]:
    """Return the tasks that succeeded after byte ``offset`` of ``log``, by name."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for match in TASK_DONE.finditer(text):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def measure(
    workdir: Path, console: Console, minutes: float = MINUTES
) -> list[dict[str, Any]]:
    """Run both contenders side by side and count what they do while idle."""
    with ExitStack() as stack:
        running = []
        for kind in (Postsched, BeatBaseline):
            contender_dir = workdir / f"idle-{kind.__name__.lower()}"
            contender_dir.mkdir()
            redis_server = stack.enter_context(private_redis(contender_dir))
            contender = kind(redis_server, contender_dir)
            contender.start()
            stack.callback(contender.stop)
            contender.schedule(make_posts([time.time() + WEEK_S] * POSTS, "idle"))
            running.append((contender, redis_server))
        console.print(f"idle: both contenders started; measuring for {minutes:g} min")
        time.sleep(WARM_UP_S)
        offsets = [contender.log.stat().st_size for contender, _ in running]
        for _, redis_server in running:
            redis_server.reset_stats()
        time.sleep(minutes * 60)
        scale = 60 / minutes
        rows = []
        for (contender, redis_server), offset in zip(running, offsets, strict=True):
            tasks = count_tasks(contender.log, offset)
            rows.append(
                {
                    "contender": contender.name,
                    "tasks_per_hour": sum(tasks.values()) * scale,
                    "tasks": {name: count * scale for name, count in tasks.items()},
                    "redis_commands_per_hour": redis_server.command_calls() * scale,
                }
            )
    return rows


def print_rows(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """Print the idle table."""
    from rich.table import Table

    table = Table(title="Idle cost per hour (100 posts due next week)")
    for column in ("contender", "task executions", "Redis commands"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            f"{row['tasks_per_hour']:,.0f}",
            f"{row['redis_commands_per_hour']:,.0f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=MINUTES)
    options = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        rows = measure(Path(name), console, options.minutes)
    print_rows(rows, console)


if __name__ == "__main__":
    main()
