"""Memory: worker RSS and Redis memory with many future posts scheduled.

postsched runs on a fresh store with 1,000 and then 100,000 posts due next
week; the script reads the RSS of the worker and its pool processes and the
private Redis's ``used_memory`` once the chain has settled. BullMQ gets the
same counts as delayed jobs, with an idle Worker, when node and npm are here.

    .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.contenders import BULLMQ_DIR, Bullmq, Postsched, add_posts, make_posts
from bench.harness import (
    BenchError,
    RedisServer,
    private_redis,
    start_process,
    tree_rss_bytes,
    wait_until,
)

COUNTS = (1_000, 100_000)
WEEK_S = 7 * 24 * 3600.0
SETTLE_S = 10.0
NODE_TIMEOUT_S = 300.0
MIB = 1024 * 1024


def measure_postsched(
    redis_server: RedisServer, workdir: Path, count: int
) -> dict[str, Any]:
    """Return worker RSS and Redis memory with ``count`` future posts stored."""
    with redis_server.client() as client:
        client.flushall()
    contender_dir = workdir / f"memory-postsched-{count}"
    contender_dir.mkdir()
    add_posts(contender_dir, make_posts([time.time() + WEEK_S] * count, "mem"))
    contender = Postsched(redis_server, contender_dir)
    contender.start()
    try:
        time.sleep(SETTLE_S)
        assert contender.process is not None
        rss = tree_rss_bytes(contender.process.pid)
        redis_bytes = redis_server.used_memory_bytes()
    finally:
        contender.stop()
    return {
        "contender": "postsched",
        "posts": count,
        "worker_rss_mib": rss / MIB,
        "redis_mib": redis_bytes / MIB,
    }


def measure_bullmq(
    redis_server: RedisServer, workdir: Path, count: int
) -> dict[str, Any]:
    """Return node RSS and Redis memory with ``count`` delayed jobs due next week."""
    with redis_server.client() as client:
        client.flushall()
    out_file = workdir / f"bullmq-memory-{count}.json"
    process = start_process(
        [
            "node",
            str(BULLMQ_DIR / "bench.js"),
            "memory",
            "--redis",
            redis_server.url,
            "--count",
            str(count),
            "--out",
            str(out_file),
        ],
        workdir / "bullmq-memory.log",
    )
    wait_until(
        lambda: process.poll() is not None,
        NODE_TIMEOUT_S,
        "the BullMQ memory run's end",
    )
    if process.returncode != 0 or not out_file.exists():
        raise BenchError(
            f"the BullMQ memory run failed with code {process.returncode}; see {workdir / 'bullmq-memory.log'}"
        )
    rss = json.loads(out_file.read_text())["rss_bytes"]
    return {
        "contender": "BullMQ",
        "posts": count,
        "worker_rss_mib": rss / MIB,
        "redis_mib": redis_server.used_memory_bytes() / MIB,
    }


def measure(
    redis_server: RedisServer, workdir: Path, console: Console
) -> list[dict[str, Any]]:
    """Measure postsched, then BullMQ when node and npm are installed."""
    rows = []
    for count in COUNTS:
        console.print(f"memory: postsched with {count:,} future posts")
        rows.append(measure_postsched(redis_server, workdir, count))
    reason = Bullmq.unavailable_reason()
    if reason is not None:
        console.print(f"memory: BullMQ skipped: {reason}")
        return rows
    Bullmq.install()
    for count in COUNTS:
        console.print(f"memory: BullMQ with {count:,} delayed jobs")
        rows.append(measure_bullmq(redis_server, workdir, count))
    return rows


def print_rows(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """Print the memory table."""
    from rich.table import Table

    table = Table(title="Memory with future posts scheduled")
    for column in ("contender", "future posts", "worker RSS MiB", "Redis MiB"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            f"{row['posts']:,}",
            f"{row['worker_rss_mib']:.1f}",
            f"{row['redis_mib']:.1f}",
        )
    console.print(table)


def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        workdir = Path(name)
        with private_redis(workdir) as redis_server:
            rows = measure(redis_server, workdir, console)
    print_rows(rows, console)


if __name__ == "__main__":
    main()
