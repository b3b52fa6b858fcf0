"""Shared pieces of the benchmarks: a private Redis, worker processes, figures.

Every benchmark runs against a ``redis-server`` it starts on a free loopback
port, with persistence off, and stops it afterwards; nothing touches another
Redis on the machine.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
REDIS_START_TIMEOUT_S = 10.0
PROCESS_STOP_TIMEOUT_S = 20.0
WORKER_READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1


class BenchError(RuntimeError):
    """Raised when a benchmark cannot run or its contender misbehaves."""


@dataclass
class RedisServer:
    """A private ``redis-server`` on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """URL of database 0, for Celery and redis-py."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """Return a new client of database 0."""
        return redis.Redis(host="127.0.0.1", port=self.port)

    def used_memory_bytes(self) -> int:
        """Return the server's ``used_memory``."""
        with self.client() as client:
            return int(client.info("memory")["used_memory"])

    def reset_stats(self) -> None:
        """Reset the command counters of INFO commandstats."""
        with self.client() as client:
            client.config_resetstat()

    def command_calls(self) -> int:
        """Return the commands run since the last reset, leaving out INFO and CONFIG."""
        with self.client() as client:
            stats = client.info("commandstats")
        return sum(
            int(entry["calls"])
            for name, entry in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config")
        )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    """Start a ``redis-server`` without persistence on a free loopback port."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise BenchError(
            "redis-server is not installed; install it (Debian: apt-get install redis-server)"
        )
    port = free_port()
    log = open(workdir / f"redis-{port}.log", "wb")  # noqa: SIM115 - the server writes to it until it stops
    with log:
        process = subprocess.Popen(
            [
                executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = RedisServer(port, process)
    try:
        wait_until(lambda: _pings(server), REDIS_START_TIMEOUT_S, "redis-server start")
        yield server
    finally:
        stop_process(process)


def _pings(server: RedisServer) -> bool:
    if server.process.poll() is not None:
        raise BenchError(f"redis-server on port {server.port} exited at start")
    try:
        with server.client() as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it is true; raise BenchError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)


def start_process(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the repository root in a session of its own, output to ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` with SIGTERM, and its process group with SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=PROCESS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tree_rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` and all its children."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def wait_for_log_line(
    log: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float
) -> None:
    """Wait until ``text`` appears in ``log``; raise BenchError if ``process`` exits first."""

    def appeared() -> bool:
        if process.poll() is not None:
            raise BenchError(
                f"{log.name}: the process exited with code {process.returncode} before "
                f"logging {text!r}; see {log}"
            )
        return text in log.read_text(errors="replace")

    wait_until(appeared, timeout_s, f"{text!r} in {log.name}")


def spread_offsets_s(count: int, window_s: float, seed: int) -> list[float]:
    """Return ``count`` due-time offsets, uniform at random over ``window_s`` seconds."""
    generator = random.Random(seed)
    return sorted(generator.uniform(0, window_s) for _ in range(count))


def next_whole_second(lead_s: float) -> float:
    """Return the first whole epoch second at least ``lead_s`` seconds from now."""
    return float(math.ceil(time.time() + lead_s))


@dataclass
class Lateness:
    """Lateness of each post of one contender, in milliseconds."""

    contender: str
    values_ms: list[float] = field(default_factory=list)
    missing: int = 0
    duplicates: int = 0

    def percentile(self, rank: float) -> float:
        """Return the ``rank``-th percentile, nearest rank."""
        ordered = sorted(self.values_ms)
        if not ordered:
            return math.nan
        index = max(math.ceil(rank / 100 * len(ordered)) - 1, 0)
        return ordered[index]

    @property
    def max_ms(self) -> float:
        """The largest lateness."""
        return max(self.values_ms, default=math.nan)

    def summary(self) -> dict[str, float | int]:
        """Return p50, p99, max, the count and the posts missing or published twice."""
        return {
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "max_ms": self.max_ms,
            "published": len(self.values_ms),
            "missing": self.missing,
            "duplicates": self.duplicates,
        }
