"""Each post reaches the platform once: retries, unknown outcomes, a killed worker.

The platform is a local HTTP server that counts the requests per
idempotency key, answers as each test scripts it, and offers a lookup by key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest

from scheduler.config import Settings, WebhookSettings
from scheduler.model import Post, PostStatus, utc_now
from tasks.app import PostschedCelery

T = TypeVar("T")


@dataclass
class Answer:
    """One scripted answer of the platform."""

    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Platform:
    """The state of the fake platform, shared with its request handler."""

    url: str = ""
    script: list[Answer] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    call_times: list[float] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_handler(platform: Platform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            with platform.lock:
                platform.calls[key] += 1
                platform.call_times.append(time.monotonic())
                answer = platform.script.pop(0) if platform.script else Answer()
                if answer.status == 200:
                    # The platform has the post from here on, even if its answer never arrives.
                    platform.accepted.setdefault(
                        key, f"status-{len(platform.accepted) + 1}"
                    )
            time.sleep(answer.delay_s)
            body = (
                answer.body or json.dumps({"id": platform.accepted.get(key)}).encode()
            )
            self._answer(answer.status, body, answer.headers)

        def do_GET(self) -> None:
            key = self.headers.get("Idempotency-Key", "")
            with platform.lock:
                status_id = platform.accepted.get(key)
            if status_id is None:
                self._answer(404, b'{"error": "not found"}', {})
            else:
                self._answer(200, json.dumps({"id": status_id}).encode(), {})

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    state = Platform()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.webhooks = {
        "platform": WebhookSettings(
            url=f"{state.url}/statuses", lookup_url=f"{state.url}/lookup", timeout_s=5
        )
    }
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def wait_for(condition: Callable[[], T], timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout_s} s")
        time.sleep(0.05)


def schedule(app: PostschedCelery, in_s: float = 1.0) -> Post:
    due = utc_now() + timedelta(seconds=in_s)
    return app.runtime.service.schedule(
        target="webhook:platform", content="hello", due_at=due
    )


def status_of(app: PostschedCelery, post: Post) -> PostStatus:
    return app.runtime.store.get(post.id).status


def test_rate_limit_waits_retry_after(
    platform: Platform, celery_app: PostschedCelery, worker: object
) -> None:
    platform.script = [Answer(status=429, headers={"Retry-After": "2"})]
    post = schedule(celery_app)
    wait_for(lambda: status_of(celery_app, post) is PostStatus.PUBLISHED)
    assert platform.calls[post.idempotency_key] == 2
    assert platform.call_times[1] - platform.call_times[0] >= 2.0


def test_permanent_error_fails_after_one_call(
    platform: Platform, celery_app: PostschedCelery, worker: object
) -> None:
    platform.script = [
        Answer(status=422, body=b'{"error": "Validation failed: text too long"}')
    ]
    post = schedule(celery_app)
    wait_for(lambda: status_of(celery_app, post) is PostStatus.FAILED)
    failed = celery_app.runtime.store.get(post.id)
    assert "Validation failed: text too long" in (failed.last_error or "")
    assert platform.calls[post.idempotency_key] == 1


def test_timeout_after_send_then_reconcile(
    platform: Platform, settings: Settings, celery_app: PostschedCelery, worker: object
) -> None:
    settings.webhooks["platform"].timeout_s = 0.5
    platform.script = [Answer(delay_s=1.5)]
    post = schedule(celery_app)
    wait_for(lambda: status_of(celery_app, post) is PostStatus.UNCONFIRMED)
    outcomes = celery_app.runtime.service.reconcile()
    settled = celery_app.runtime.store.get(post.id)
    assert outcomes == {"published": 1}
    assert settled.status is PostStatus.PUBLISHED
    assert settled.external_id == "status-1"
    assert platform.calls[post.idempotency_key] == 1


def test_misfire_grace_decides(
    settings: Settings, celery_app: PostschedCelery, request: pytest.FixtureRequest
) -> None:
    settings.missed_grace_s = 3
    now = utc_now()
    long_ago = Post(
        id="long-ago",
        target="outbox:main",
        content="x",
        due_at=now - timedelta(seconds=10),
        timezone="UTC",
    )
    recently = Post(
        id="recently",
        target="outbox:main",
        content="y",
        due_at=now - timedelta(seconds=1),
        timezone="UTC",
    )
    celery_app.runtime.store.add([long_ago, recently])
    request.getfixturevalue("worker")
    wait_for(lambda: status_of(celery_app, recently) is PostStatus.PUBLISHED)
    assert status_of(celery_app, long_ago) is PostStatus.MISSED


def start_worker(settings: Settings, log: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POSTSCHED_")
    }
    env.update(
        POSTSCHED_BROKER_URL=settings.broker_url or "",
        POSTSCHED_RESULT_BACKEND=settings.result_backend or "",
        POSTSCHED_STORE_URL=settings.resolved_store_url,
        POSTSCHED_DATA_DIR=str(settings.data_dir),
        POSTSCHED_KEY_PREFIX=settings.key_prefix,
        POSTSCHED_WEBHOOKS=json.dumps(
            {name: hook.model_dump() for name, hook in settings.webhooks.items()}
        ),
        POSTSCHED_MAX_CHECK_INTERVAL="3",
        POSTSCHED_PUBLISH_LEASE="3",
        POSTSCHED_WATCHDOG_INTERVAL="0.5",
        POSTSCHED_LOST_CHECK_GRACE="1",
        POSTSCHED_CHECK_LEASE="2",
    )
    with open(log, "ab") as output:
        return subprocess.Popen(
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
                f"--hostname={name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_killed_worker_mid_publish_sends_once(
    platform: Platform, settings: Settings, celery_app: PostschedCelery, tmp_path: Path
) -> None:
    platform.script = [Answer(delay_s=4.0)]
    first = start_worker(settings, tmp_path / "worker-1.log", "first")
    second = None
    try:
        post = schedule(celery_app, in_s=3.0)
        wait_for(lambda: platform.calls[post.idempotency_key] == 1, timeout_s=30)
        kill_group(first)
        second = start_worker(settings, tmp_path / "worker-2.log", "second")
        wait_for(
            lambda: status_of(celery_app, post) is PostStatus.PUBLISHED, timeout_s=45
        )
    finally:
        kill_group(first)
        if second is not None:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
    published = celery_app.runtime.store.get(post.id)
    assert platform.calls[post.idempotency_key] == 1
    assert published.external_id == "status-1"
    # The second delivery found the post on the platform instead of sending it.
    assert published.deliveries == 2


def test_killed_worker_mid_batch_sends_each_once(
    platform: Platform, settings: Settings, celery_app: PostschedCelery, tmp_path: Path
) -> None:
    # The third post of the batch hangs, so the worker dies with two posts
    # sent but perhaps not yet recorded, one in flight and two not yet sent.
    platform.script = [Answer(), Answer(), Answer(delay_s=4.0)]
    first = start_worker(settings, tmp_path / "worker-1.log", "first")
    second = None
    try:
        due = utc_now() + timedelta(seconds=3)
        posts = [
            celery_app.runtime.service.schedule(
                target="webhook:platform", content=f"post {index}", due_at=due
            )
            for index in range(5)
        ]
        wait_for(lambda: sum(platform.calls.values()) == 3, timeout_s=30)
        kill_group(first)
        second = start_worker(settings, tmp_path / "worker-2.log", "second")
        wait_for(
            lambda: all(
                status_of(celery_app, post) is PostStatus.PUBLISHED for post in posts
            ),
            timeout_s=45,
        )
    finally:
        kill_group(first)
        if second is not None:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)
    for post in posts:
        assert platform.calls[post.idempotency_key] == 1, post.content
    published = [celery_app.runtime.store.get(post.id) for post in posts]
    assert len({post.external_id for post in published}) == len(posts)
    # The first worker took the whole batch: every post was delivered to it.
    assert all(post.deliveries >= 1 for post in published)
