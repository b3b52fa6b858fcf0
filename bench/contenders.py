"""The three contenders: postsched, the beat-polling baseline and BullMQ.

Each one is started against the same kind of private Redis, given posts due
at known epoch times, and returns one ``Outcome`` per post: when its publish
started and when it was done. postsched and the baseline publish to the
``noop`` target of a fresh SQLite store and record the start in the attempt
history; BullMQ's processor does nothing but record the time it started.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import (
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    RedisServer,
    start_process,
    stop_process,
    wait_for_log_line,
    wait_until,
)
from scheduler.config import Settings
from scheduler.model import Post
from scheduler.store.sql import SqlStore

BULLMQ_DIR = REPO_ROOT / "bench" / "bullmq"
BULLMQ_CONCURRENCY = 50
NOOP_TARGET = "noop:bench"
ADD_CHUNK = 20_000
SETTLE_POLL_S = 0.5
NPM_INSTALL_TIMEOUT_S = 300


@dataclass(frozen=True)
class Outcome:
    """One post of a run: due time, publish start and end, as epoch seconds."""

    post_id: str
    due_s: float
    start_s: float | None
    done_s: float | None
    publishes: int


def make_posts(due_times_s: Sequence[float], prefix: str) -> list[Post]:
    """Return one noop post per due time, with ids ``prefix-0``, ``prefix-1``..."""
    return [
        Post(
            id=f"{prefix}-{index}",
            target=NOOP_TARGET,
            content="benchmark post",
            due_at=datetime.fromtimestamp(due_s, tz=UTC),
            timezone="UTC",
        )
        for index, due_s in enumerate(due_times_s)
    ]


def store_env(redis_server: RedisServer, workdir: Path) -> dict[str, str]:
    """Return the environment of a postsched or baseline process: private Redis, SQLite."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POSTSCHED_")
    }
    env.update(
        POSTSCHED_BROKER_URL=redis_server.url,
        POSTSCHED_RESULT_BACKEND=redis_server.url,
        POSTSCHED_STORE_URL=f"sqlite:///{workdir / 'posts.db'}",
        POSTSCHED_DATA_DIR=str(workdir),
    )
    return env


def add_posts(workdir: Path, posts: Sequence[Post]) -> None:
    """Insert ``posts`` into the SQLite store of ``workdir``."""
    store = SqlStore(f"sqlite:///{workdir / 'posts.db'}")
    try:
        for start in range(0, len(posts), ADD_CHUNK):
            store.add(posts[start : start + ADD_CHUNK])
    finally:
        store.close()


def count_published(workdir: Path) -> int:
    """Return the published posts of the store, read without taking its write lock."""
    with _read_only(workdir) as connection:
        row = connection.execute(
            "SELECT count(*) FROM posts WHERE status = 'published'"
        ).fetchone()
    return int(row[0])


def read_outcomes(workdir: Path) -> list[Outcome]:
    """Return each post's due time, first published attempt's start, and publish time."""
    query = """
        SELECT p.id, p.due_at, p.published_at,
               min(a.started_at), count(a.id)
        FROM posts AS p
        LEFT JOIN attempts AS a ON a.post_id = p.id AND a.outcome = 'published'
        GROUP BY p.id
    """
    with _read_only(workdir) as connection:
        rows = connection.execute(query).fetchall()
    return [
        Outcome(
            post_id=post_id,
            due_s=_epoch(due_at),
            start_s=_epoch(started_at) if started_at else None,
            done_s=_epoch(published_at) if published_at else None,
            publishes=int(publishes),
        )
        for post_id, due_at, published_at, started_at, publishes in rows
    ]


@contextmanager
def _read_only(workdir: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"file:{workdir / 'posts.db'}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def _epoch(text: str) -> float:
    # The SQL store keeps naive UTC text on SQLite.
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def wait_for_published(workdir: Path, count: int, deadline_s: float) -> None:
    """Wait until ``count`` posts are published, or until epoch ``deadline_s``."""
    while time.time() < deadline_s:
        if count_published(workdir) >= count:
            return
        time.sleep(SETTLE_POLL_S)


class Postsched:
    """postsched with its default settings: ``postsched worker``, one per machine."""

    name = "postsched"

    def __init__(
        self,
        redis_server: RedisServer,
        workdir: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.redis_server = redis_server
        self.workdir = workdir
        # POSTSCHED_* variables for the worker, over its defaults.
        self.settings = settings or {}
        self.log = workdir / "postsched-worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker and wait until it is ready."""
        self.process = start_process(
            [str(VENV_BIN / "postsched"), "worker"],
            self.log,
            {**store_env(self.redis_server, self.workdir), **self.settings},
        )
        wait_for_log_line(self.log, " ready.", self.process, 60)

    def stop(self) -> None:
        """Stop the worker."""
        if self.process is not None:
            stop_process(self.process)

    def schedule(self, posts: Sequence[Post]) -> None:
        """Store ``posts`` and wake the check chain for the earliest, as the service does."""
        from tasks.app import create_app

        add_posts(self.workdir, posts)
        settings = Settings(
            broker_url=self.redis_server.url,
            result_backend=self.redis_server.url,
            store_url=f"sqlite:///{self.workdir / 'posts.db'}",
            data_dir=self.workdir,
        )
        app = create_app(settings)
        try:
            app.runtime.chain.wake(
                min(post.due_at for post in posts), datetime.now(UTC)
            )
        finally:
            app.runtime.close()
            app.close()

    def run(self, posts: Sequence[Post], settle_s: float) -> list[Outcome]:
        """Publish ``posts`` on a fresh worker and return their outcomes."""
        self.start()
        try:
            self.schedule(posts)
            last_due_s = max(post.due_at for post in posts).timestamp()
            wait_for_published(self.workdir, len(posts), last_due_s + settle_s)
        finally:
            self.stop()
        return read_outcomes(self.workdir)


class BeatBaseline(Postsched):
    """A celery beat entry that scans the store every second, and one worker."""

    name = "beat baseline"

    def __init__(self, redis_server: RedisServer, workdir: Path) -> None:
        super().__init__(redis_server, workdir)
        self.log = workdir / "beat-worker.log"
        self.beat_log = workdir / "beat.log"
        self.beat: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker and celery beat, and wait until both run."""
        env = store_env(self.redis_server, self.workdir)
        celery = [str(VENV_BIN / "python"), "-m", "celery", "-A", "bench.beat_baseline"]
        self.process = start_process(
            [*celery, "worker", "--loglevel=INFO"], self.log, env
        )
        wait_for_log_line(self.log, " ready.", self.process, 60)
        self.beat = start_process(
            [
                *celery,
                "beat",
                "--loglevel=INFO",
                f"--schedule={self.workdir / 'beat-schedule'}",
            ],
            self.beat_log,
            env,
        )
        wait_for_log_line(self.beat_log, "beat: Starting", self.beat, 60)

    def stop(self) -> None:
        """Stop celery beat, then the worker."""
        if self.beat is not None:
            stop_process(self.beat)
        super().stop()

    def schedule(self, posts: Sequence[Post]) -> None:
        """Store ``posts``; the next scan finds them."""
        add_posts(self.workdir, posts)


class Bullmq:
    """BullMQ 5: one delayed job per post, one Worker with a no-op processor."""

    name = "BullMQ"

    def __init__(self, redis_server: RedisServer, workdir: Path) -> None:
        self.redis_server = redis_server
        self.workdir = workdir

    @staticmethod
    def unavailable_reason() -> str | None:
        """Return why BullMQ cannot run here, or None when node and npm are installed."""
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed; install Node.js 18 or newer to measure BullMQ"
        return None

    @staticmethod
    def install() -> None:
        """Install the pinned bullmq package into bench/bullmq/node_modules when missing."""
        if (BULLMQ_DIR / "node_modules" / "bullmq").is_dir():
            return
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=BULLMQ_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise BenchError(
                f"npm ci in {BULLMQ_DIR} failed with code {result.returncode}: {result.stderr.strip()}"
            )

    @staticmethod
    def version() -> str:
        """Return the installed bullmq version."""
        package = json.loads(
            (BULLMQ_DIR / "node_modules" / "bullmq" / "package.json").read_text()
        )
        return str(package["version"])

    def run(self, posts: Sequence[Post], settle_s: float) -> list[Outcome]:
        """Add one delayed job per post, work them and return their outcomes."""
        jobs_file = self.workdir / "bullmq-jobs.json"
        out_file = self.workdir / "bullmq-out.json"
        due_ms = {post.id: post.due_at.timestamp() * 1000 for post in posts}
        spec = {
            "queue": f"bench-{uuid.uuid4().hex[:8]}",
            "jobs": [{"id": key, "due_ms": value} for key, value in due_ms.items()],
        }
        jobs_file.write_text(json.dumps(spec))
        last_due_s = max(due_ms.values()) / 1000
        timeout_s = last_due_s + settle_s - time.time()
        log = self.workdir / "bullmq.log"
        process = start_process(
            [
                "node",
                str(BULLMQ_DIR / "bench.js"),
                "run",
                "--redis",
                self.redis_server.url,
                "--jobs",
                str(jobs_file),
                "--out",
                str(out_file),
                "--concurrency",
                str(BULLMQ_CONCURRENCY),
                "--timeout-s",
                f"{timeout_s:.0f}",
            ],
            log,
        )
        wait_until(
            lambda: process.poll() is not None, timeout_s + 60, "the BullMQ run's end"
        )
        if not out_file.exists():
            raise BenchError(
                f"the BullMQ run exited with code {process.returncode} without results; see {log}"
            )
        results = json.loads(out_file.read_text())["results"]
        seen: dict[str, list[float]] = {}
        for job_id, _due, start_ms, done_ms in results:
            seen.setdefault(job_id, []).extend([start_ms / 1000, done_ms / 1000])
        return [
            Outcome(
                post_id=key,
                due_s=value / 1000,
                start_s=seen[key][0] if key in seen else None,
                done_s=seen[key][1] if key in seen else None,
                publishes=len(seen.get(key, [])) // 2,
            )
            for key, value in due_ms.items()
        ]
