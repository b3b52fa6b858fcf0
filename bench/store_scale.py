"""Measure one check's store work with few and with many stored posts.

A check claims the due posts and reads the next due time. With indexes on
(status, due_at), both should take about as long with 1,000,000 stored posts
as with 10,000. For each store and size, this script fills a fresh store
(half the posts published in the past, half scheduled in the future), then
repeats: add 100 due posts, time ``claim_due`` plus ``next_due_at``. It prints
the median and p95 per size and the ratio of the largest size to the smallest.

    .venv/bin/python bench/store_scale.py
    .venv/bin/python bench/store_scale.py --stores sqlite --sizes 10000 100000

PostgreSQL runs in a schema of its own at POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test), dropped afterwards; MongoDB runs
only when MONGODB_URI is set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from scheduler.model import Post, PostStatus, utc_now
from scheduler.store.base import Store
from scheduler.store.mongo import MongoStore
from scheduler.store.sql import SqlStore

POSTGRES_URL = os.environ.get(
    "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
FILL_CHUNK = 20_000
DUE_PER_ROUND = 100
ROUNDS = 30


def make_posts(count: int, *, due_in_s: float, status: PostStatus) -> list[Post]:
    now = utc_now()
    return [
        Post(
            id=uuid.uuid4().hex,
            target="outbox:bench",
            content="benchmark post",
            due_at=now + timedelta(seconds=due_in_s + index * 0.001),
            timezone="UTC",
            status=status,
        )
        for index in range(count)
    ]


@contextmanager
def open_bench_store(kind: str, workdir: Path) -> Iterator[Store]:
    if kind == "sqlite":
        store: Store = SqlStore(
            f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        )
        try:
            yield store
        finally:
            store.close()
        return
    if kind == "postgresql":
        schema = f"postsched_bench_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(
            POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
        )
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        store = SqlStore(POSTGRES_URL, schema=schema)
        try:
            yield store
        finally:
            store.close()
            with engine.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
        return
    uri = (
        os.environ["MONGODB_URI"].rstrip("/")
        + f"/postsched_bench_{uuid.uuid4().hex[:8]}"
    )
    mongo = MongoStore(uri)
    try:
        yield mongo
    finally:
        mongo._client.drop_database(mongo._posts.database.name)
        mongo.close()


def fill(store: Store, size: int) -> float:
    started = time.perf_counter()
    half = size // 2
    for offset in range(0, size, FILL_CHUNK):
        count = min(FILL_CHUNK, size - offset)
        if offset < half:
            store.add(make_posts(count, due_in_s=-86_400, status=PostStatus.PUBLISHED))
        else:
            store.add(
                make_posts(count, due_in_s=86_400 * 30, status=PostStatus.SCHEDULED)
            )
    return time.perf_counter() - started


def time_checks(store: Store) -> list[float]:
    durations = []
    for _ in range(ROUNDS):
        store.add(make_posts(DUE_PER_ROUND, due_in_s=-1, status=PostStatus.SCHEDULED))
        now = utc_now()
        started = time.perf_counter()
        claimed = store.claim_due(
            now, 500, uuid.uuid4().hex, now + timedelta(minutes=5)
        )
        store.next_due_at()
        durations.append(time.perf_counter() - started)
        assert len(claimed) == DUE_PER_ROUND, (
            f"claimed {len(claimed)} of {DUE_PER_ROUND} due posts"
        )
    return durations


def percentile(values: list[float], rank: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(round(rank / 100 * len(ordered))) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgresql", "mongodb"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 1_000_000])
    options = parser.parse_args()

    print(
        f"one check = claim_due of {DUE_PER_ROUND} due posts + next_due_at, {ROUNDS} rounds per size"
    )
    print(f"{'store':<11} {'stored':>10} {'fill s':>8} {'median ms':>10} {'p95 ms':>8}")
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as workdir:
        for kind in options.stores:
            if kind == "mongodb" and "MONGODB_URI" not in os.environ:
                print(
                    f"{kind:<11} skipped: set MONGODB_URI to measure a real MongoDB server"
                )
                continue
            medians = []
            for size in options.sizes:
                with open_bench_store(kind, Path(workdir)) as store:
                    fill_s = fill(store, size)
                    durations = time_checks(store)
                median_ms = statistics.median(durations) * 1000
                medians.append(median_ms)
                print(
                    f"{kind:<11} {size:>10,} {fill_s:>8.1f} {median_ms:>10.2f} {percentile(durations, 95) * 1000:>8.2f}"
                )
            if len(medians) > 1:
                print(
                    f"{kind:<11} ratio of medians, {options.sizes[-1]:,} to {options.sizes[0]:,}: {medians[-1] / medians[0]:.2f}"
                )


if __name__ == "__main__":
    main()
