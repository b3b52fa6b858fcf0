"""Profile where a burst's time goes in one process, with cProfile.

Stores ``--posts`` noop posts due now in a fresh SQLite store, times one
claim of all of them, then profiles ``publish_claimed`` over them in
publishing-task batches of ``POSTSCHED_PUBLISH_BATCH_SIZE`` (50) and prints
the top functions by cumulative time.

    .venv/bin/python -m bench.profile_publish
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.contenders import make_posts
from scheduler.config import Settings
from scheduler.model import utc_now
from scheduler.publishers import Publishers
from scheduler.publishing import publish_claimed
from scheduler.store.sql import SqlStore

POSTS = 2_000
BATCH = 50
TOP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=POSTS)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postsched-profile-") as name:
        workdir = Path(name)
        store = SqlStore(f"sqlite:///{workdir / 'posts.db'}")
        publishers = Publishers(Settings(data_dir=workdir))
        store.add(make_posts([time.time() - 1] * options.posts, "profile"))
        now = utc_now()
        started = time.perf_counter()
        claimed = store.claim_due(
            now, options.posts, "profile", now + timedelta(minutes=5)
        )
        claim_s = time.perf_counter() - started
        ids = [post.id for post in claimed]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for start in range(0, len(ids), BATCH):
            publish_claimed(store, publishers, "profile", ids[start : start + BATCH])
        profiler.disable()
        publish_s = time.perf_counter() - started
        store.close()
    print(
        f"claim of {len(ids)} posts: {claim_s * 1000:.0f} ms ({len(ids) / claim_s:,.0f} posts/s)"
    )
    print(
        f"publish_claimed in batches of {BATCH}, under cProfile: {publish_s:.2f} s ({len(ids) / publish_s:,.0f} posts/s)"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(TOP)


if __name__ == "__main__":
    main()
