"""Prometheus metrics counted by a real in-process worker, scraped over HTTP and the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from faults import free_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from scheduler.check import run_check
from scheduler.cli import app as cli_app
from scheduler.config import Settings, WebhookSettings
from scheduler.keys import RedisKeys
from scheduler.metrics import MetricsRecorder, create_registry
from scheduler.model import Post, PostStatus, utc_now
from scheduler.publishers.base import PublishResult
from scheduler.publishing import RetryPolicy, publish_claimed
from scheduler.store.base import Store
from tasks.app import PostschedCelery, create_app

T = TypeVar("T")

# Seconds the webhook publisher waits for a response from the silent receiver.
SILENT_TIMEOUT_S = 0.3
# Seconds the silent receiver keeps a request open before it gives up.
SILENT_HOLD_S = 5.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def wait_for(condition: Callable[[], T], timeout_s: float = 20.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout_s} s")
        time.sleep(0.05)


def parse(exposition: str) -> Samples:
    """Map (sample name, sorted labels) to value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def post_counter(samples: Samples, outcome: str, target: str) -> float | None:
    return samples.get((f"postsched_posts_{outcome}_total", (("target", target),)))


@pytest.fixture
def receiver() -> Iterator[str]:
    """A loopback webhook receiver: /reject responds 400, /silent too late for the publisher."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/silent" and release.wait(SILENT_HOLD_S):
                return
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def metrics_app(settings: Settings, receiver: str) -> Iterator[PostschedCelery]:
    """A Celery app whose worker serves metrics and publishes to two webhooks."""
    settings.metrics_port = free_port()
    settings.webhooks = {
        "reject": WebhookSettings(url=f"{receiver}/reject"),
        "silent": WebhookSettings(url=f"{receiver}/silent", timeout_s=SILENT_TIMEOUT_S),
    }
    celery_app = create_app(settings)
    celery_app.conf.worker_hijack_root_logger = False
    yield celery_app
    celery_app.runtime.close()
    celery_app.close()


def test_worker_counts_each_outcome(
    metrics_app: PostschedCelery, settings: Settings
) -> None:
    runtime = metrics_app.runtime
    late = Post(
        id="late-post",
        target="outbox:late",
        content="due two hours ago",
        due_at=utc_now() - timedelta(hours=2),
        timezone="UTC",
    )
    runtime.store.add([late])

    with start_worker(
        metrics_app, pool="threads", concurrency=4, perform_ping_check=False
    ):
        due = utc_now() + timedelta(seconds=1)
        targets = ["outbox:main"] * 3 + ["outbox:other"] * 2
        targets += ["webhook:reject", "webhook:silent"]
        posts = [
            runtime.service.schedule(target=target, content="hello", due_at=due)
            for target in targets
        ]
        settled = {PostStatus.PUBLISHED, PostStatus.FAILED, PostStatus.UNCONFIRMED}
        wait_for(
            lambda: all(runtime.store.get(post.id).status in settled for post in posts)
        )
        url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        samples = wait_for(
            lambda: (
                (scraped := parse(httpx.get(url, timeout=5).text))
                and post_counter(scraped, "unconfirmed", "webhook:silent")
                and scraped
            )
        )

    assert runtime.store.get(late.id).status is PostStatus.MISSED
    assert post_counter(samples, "published", "outbox:main") == 3
    assert post_counter(samples, "published", "outbox:other") == 2
    assert post_counter(samples, "failed", "webhook:reject") == 1
    assert post_counter(samples, "unconfirmed", "webhook:silent") == 1
    assert post_counter(samples, "missed", "outbox:late") == 1
    assert post_counter(samples, "published", "webhook:reject") is None
    assert post_counter(samples, "failed", "outbox:main") is None
    assert samples[("postsched_publish_lateness_seconds_count", ())] == 5
    assert (
        samples[("postsched_publish_lateness_seconds_bucket", (("le", "+Inf"),))] == 5
    )
    assert samples[("postsched_publish_lateness_seconds_sum", ())] > 0
    assert samples[("postsched_chain_alive", ())] == 1


def test_worker_endpoint_stops_with_worker(
    metrics_app: PostschedCelery, settings: Settings
) -> None:
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with start_worker(
        metrics_app, pool="threads", concurrency=1, perform_ping_check=False
    ):
        assert httpx.get(url, timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_lateness_buckets_are_cumulative(
    celery_app: PostschedCelery, settings: Settings
) -> None:
    recorder = MetricsRecorder(celery_app.runtime.redis, RedisKeys(settings.key_prefix))
    for lateness_s in (0.002, 0.04, 0.04, 7.0, 5000.0, -1.0):
        recorder.count_outcome("p", "outbox:main", "published", lateness_s)
    recorder.count_outcome("p", "outbox:main", "retried")
    samples = parse(
        generate_latest(create_registry(recorder, celery_app.runtime.chain)).decode()
    )

    def bucket(bound: str) -> float:
        return samples[("postsched_publish_lateness_seconds_bucket", (("le", bound),))]

    assert bucket("0.005") == 2
    assert bucket("0.025") == 2
    assert bucket("0.05") == 4
    assert bucket("5.0") == 4
    assert bucket("10.0") == 5
    assert bucket("3600.0") == 5
    assert bucket("+Inf") == 6
    assert samples[("postsched_publish_lateness_seconds_sum", ())] == pytest.approx(
        5007.082
    )
    assert post_counter(samples, "published", "outbox:main") == 6
    assert (
        "postsched_posts_retried_total",
        (("target", "outbox:main"),),
    ) not in samples


class ClaimEndingPublisher:
    """Publishes every post; the claim of post ``ends`` ends while it is sent."""

    name = "ending"

    def __init__(self, store: Store, attempt_id: str, ends: str) -> None:
        self.store = store
        self.attempt_id = attempt_id
        self.ends = ends

    def for_target(self, target: str) -> ClaimEndingPublisher:
        return self

    def can_find(self, account: str) -> bool:
        return True

    def max_attempts(self, account: str) -> int | None:
        return None

    def find(self, post: Post) -> PublishResult | None:
        return None

    def publish(self, post: Post) -> PublishResult:
        if post.id == self.ends:
            now = utc_now()
            self.store.retry_later(
                post.id, self.attempt_id, now + timedelta(hours=1), "moved", now
            )
        return PublishResult(published_at=utc_now(), external_id=f"ext-{post.id}")


def test_batch_counts_only_recorded_posts(
    celery_app: PostschedCelery, settings: Settings
) -> None:
    store = celery_app.runtime.store
    now = utc_now()
    store.add(
        [
            Post(
                id=f"b{index}",
                target="outbox:batch",
                content=f"post {index}",
                due_at=now - timedelta(seconds=2),
                timezone="UTC",
            )
            for index in range(5)
        ]
    )
    claimed = store.claim_due(now, 10, "a1", now + timedelta(minutes=5))
    publisher = ClaimEndingPublisher(store, "a1", ends="b3")
    recorder = MetricsRecorder(celery_app.runtime.redis, RedisKeys(settings.key_prefix))

    outcomes = publish_claimed(
        store,
        publisher,  # type: ignore[arg-type]
        "a1",
        [post.id for post in claimed],
        policy=RetryPolicy(max_attempts=3, backoff_s=1.0, backoff_max_s=4.0),
        metrics=recorder,
    )

    assert outcomes == {"published": 5}
    assert store.get("b3").status is PostStatus.SCHEDULED
    samples = parse(
        generate_latest(create_registry(recorder, celery_app.runtime.chain)).decode()
    )
    assert post_counter(samples, "published", "outbox:batch") == 4
    assert samples[("postsched_publish_lateness_seconds_count", ())] == 4
    assert samples[("postsched_publish_lateness_seconds_sum", ())] >= 4 * 2.0


def test_chain_gauge_zero_without_live_check(
    celery_app: PostschedCelery, settings: Settings
) -> None:
    runtime = celery_app.runtime
    registry = create_registry(runtime.metrics, runtime.chain)
    samples = parse(generate_latest(registry).decode())
    assert samples[("postsched_chain_alive", ())] == 0

    runtime.redis.hset(
        RedisKeys(settings.key_prefix).chain,
        mapping={"task_id": "lost-check", "eta_ms": 0},
    )
    samples = parse(generate_latest(registry).decode())
    assert samples[("postsched_chain_alive", ())] == 0

    future_ms = int((utc_now() + timedelta(minutes=1)).timestamp() * 1000)
    runtime.redis.hset(RedisKeys(settings.key_prefix).chain, "eta_ms", future_ms)
    samples = parse(generate_latest(registry).decode())
    assert samples[("postsched_chain_alive", ())] == 1


def test_check_counts_swept_posts(
    celery_app: PostschedCelery, settings: Settings
) -> None:
    runtime = celery_app.runtime
    now = utc_now()
    expired = now - timedelta(seconds=1)
    runtime.store.add(
        [
            Post(
                id="used-up",
                target="webhook:alerts",
                content="x",
                due_at=expired,
                timezone="UTC",
                status=PostStatus.PUBLISHING,
                attempt_id="dead",
                lease_until=expired,
                attempts=3,
            ),
            Post(
                id="sent-before-death",
                target="outbox:main",
                content="y",
                due_at=expired,
                timezone="UTC",
                status=PostStatus.PUBLISHING,
                attempt_id="dead",
                lease_until=expired,
                external_id="ext-1",
                attempts=1,
            ),
        ]
    )
    task_id = runtime.chain.arm(now + timedelta(minutes=5))
    assert task_id is not None

    result = run_check(
        task_id,
        store=runtime.store,
        chain=runtime.chain,
        dispatch=lambda attempt_id, posts: None,
        claim_batch_size=10,
        publish_batch_size=10,
        publish_lease_s=60,
        max_attempts=3,
        missed_grace_s=3600,
        metrics=runtime.metrics,
    )

    assert result.superseded is False
    samples = parse(
        generate_latest(create_registry(runtime.metrics, runtime.chain)).decode()
    )
    assert post_counter(samples, "failed", "webhook:alerts") == 1
    assert post_counter(samples, "published", "outbox:main") == 1
    assert samples[("postsched_publish_lateness_seconds_count", ())] == 0


def test_metrics_command_prints_exposition(
    celery_app: PostschedCelery, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    celery_app.runtime.metrics.count_outcome(
        "p", "outbox:main", "published", lateness_s=0.1
    )
    celery_app.runtime.metrics.count_by_target("missed", {"outbox:main": 2})
    monkeypatch.setenv("POSTSCHED_BROKER_URL", settings.broker_url or "")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", settings.result_backend or "")
    monkeypatch.setenv("POSTSCHED_STORE_URL", settings.resolved_store_url)
    monkeypatch.setenv("POSTSCHED_KEY_PREFIX", settings.key_prefix)

    result = CliRunner().invoke(cli_app, ["metrics"])

    assert result.exit_code == 0, result.output
    samples = parse(result.output)
    assert post_counter(samples, "published", "outbox:main") == 1
    assert post_counter(samples, "missed", "outbox:main") == 2
    assert samples[("postsched_publish_lateness_seconds_count", ())] == 1


def test_metrics_command_redis_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("POSTSCHED_STORE_URL", settings.resolved_store_url)

    result = CliRunner().invoke(cli_app, ["metrics"])

    assert result.exit_code == 3
    assert "cannot reach Redis" in result.output
