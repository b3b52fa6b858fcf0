"""Prometheus metrics of postsched, counted in Redis and read at scrape time.

Counters per target of posts published, failed, missed and unconfirmed, a
histogram of publishing lateness, and a gauge of the check chain.

The counts live in Redis, not in the memory of the process that published.
Celery's prefork pool runs tasks in child processes that exit and restart
(``worker_max_tasks_per_child``, a crash, a redeploy), and a scrape of the
parent process would not see their in-memory counters. Every worker process
adds to the same Redis hashes with HINCRBY. So any process (a worker with
``POSTSCHED_METRICS_PORT`` set, or ``postsched metrics``) exposes the totals
of the whole deployment. Scrape one of them only, because the values are the
same everywhere and summing two scrapes counts each post twice. The counts
start again from zero when Redis loses its data, which Prometheus reads as a
counter reset.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from scheduler.chain import Chain
from scheduler.keys import RedisKeys
from scheduler.model import utc_now
from scheduler.status import is_check_alive

logger = logging.getLogger(__name__)

PUBLISHED = "published"
FAILED = "failed"
MISSED = "missed"
UNCONFIRMED = "unconfirmed"
COUNTED_OUTCOMES = (PUBLISHED, FAILED, MISSED, UNCONFIRMED)

# Upper bounds in seconds, from a few milliseconds (a worker that was idle)
# to an hour (POSTSCHED_MISSED_GRACE, after which a post is missed instead).
LATENESS_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
INF_BUCKET = "+Inf"
SUM_FIELD = "sum"
# Separates the outcome from the target in a field of the counts hash. No
# outcome contains it, so the first one ends the outcome.
FIELD_SEPARATOR = "|"


@dataclass(frozen=True)
class MetricsSnapshot:
    """The counts read from Redis at one moment."""

    # (outcome, target) to number of posts.
    posts: dict[tuple[str, str], int] = field(default_factory=dict)
    # Upper bound as written in the exposition ("0.005", "+Inf") to the
    # number of observations in that bucket alone, not cumulative.
    lateness_buckets: dict[str, int] = field(default_factory=dict)
    lateness_sum_s: float = 0.0

    @property
    def lateness_count(self) -> int:
        """Number of lateness observations."""
        return sum(self.lateness_buckets.values())


class MetricsRecorder:
    """Counts publishing outcomes in Redis hashes under the key prefix."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys

    def count_outcome(
        self, post_id: str, target: str, outcome: str, lateness_s: float | None = None
    ) -> None:
        """Count one post of ``target`` that ended in ``outcome``.

        ``lateness_s``, for a published post, is added to the lateness
        histogram. Outcomes other than published, failed, missed and
        unconfirmed (a retry, a skipped redelivery) are not counted. A Redis
        error is logged, not raised: the post's outcome is stored already.
        """
        if outcome not in COUNTED_OUTCOMES:
            return
        pipeline = self._client.pipeline(transaction=True)
        pipeline.hincrby(self._keys.metrics_posts, _posts_field(outcome, target), 1)
        if lateness_s is not None:
            observed_s = max(lateness_s, 0.0)
            lateness_key = self._keys.metrics_lateness
            pipeline.hincrby(lateness_key, _bucket_of(observed_s), 1)
            pipeline.hincrbyfloat(lateness_key, SUM_FIELD, observed_s)
        try:
            pipeline.execute()
        except redis.RedisError as exc:
            logger.warning(
                "could not count post %s to %s as %s in the metrics: %s",
                post_id,
                target,
                outcome,
                exc,
            )

    def count_published(self, published: Sequence[tuple[str, float]]) -> None:
        """Count posts recorded as published, given as (target, lateness in seconds).

        One Redis round trip for the whole group, so a batch of posts costs
        one write to the metrics, not one per post. A Redis error is logged,
        not raised.
        """
        if not published:
            return
        pipeline = self._client.pipeline(transaction=True)
        lateness_key = self._keys.metrics_lateness
        for target, lateness_s in published:
            observed_s = max(lateness_s, 0.0)
            pipeline.hincrby(
                self._keys.metrics_posts, _posts_field(PUBLISHED, target), 1
            )
            pipeline.hincrby(lateness_key, _bucket_of(observed_s), 1)
            pipeline.hincrbyfloat(lateness_key, SUM_FIELD, observed_s)
        try:
            pipeline.execute()
        except redis.RedisError as exc:
            logger.warning(
                "could not count %d published post(s) in the metrics: %s",
                len(published),
                exc,
            )

    def count_by_target(self, outcome: str, counts: Mapping[str, int]) -> None:
        """Count posts that ended in ``outcome`` without a lateness, given per target.

        For posts settled in bulk by a check: marked missed, or failed or
        found published by the lease sweep. A Redis error is logged, not raised.
        """
        if not counts:
            return
        pipeline = self._client.pipeline(transaction=True)
        for target, count in counts.items():
            pipeline.hincrby(
                self._keys.metrics_posts, _posts_field(outcome, target), count
            )
        try:
            pipeline.execute()
        except redis.RedisError as exc:
            logger.warning(
                "could not count %d %s post(s) in the metrics: %s",
                sum(counts.values()),
                outcome,
                exc,
            )

    def read(self) -> MetricsSnapshot:
        """Read every count in one transaction; Redis errors are raised."""
        pipeline = self._client.pipeline(transaction=True)
        pipeline.hgetall(self._keys.metrics_posts)
        pipeline.hgetall(self._keys.metrics_lateness)
        posts_hash, lateness_hash = pipeline.execute()
        posts: dict[tuple[str, str], int] = {}
        for raw_field, raw_count in posts_hash.items():
            outcome, _, target = _text(raw_field).partition(FIELD_SEPARATOR)
            posts[(outcome, target)] = int(raw_count)
        lateness = {_text(key): _text(value) for key, value in lateness_hash.items()}
        sum_s = float(lateness.pop(SUM_FIELD, 0.0))
        return MetricsSnapshot(
            posts=posts,
            lateness_buckets={bound: int(count) for bound, count in lateness.items()},
            lateness_sum_s=sum_s,
        )


class PostschedCollector(Collector):  # type: ignore[misc]
    """Collector that reads the counts and the chain record from Redis at each scrape."""

    def __init__(
        self,
        recorder: MetricsRecorder,
        chain: Chain,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._recorder = recorder
        self._chain = chain
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """Yield the counters, the lateness histogram and the chain gauge."""
        snapshot = self._recorder.read()
        yield from _post_counters(snapshot)
        yield _lateness_histogram(snapshot)
        yield self._chain_gauge()

    def _chain_gauge(self) -> GaugeMetricFamily:
        record = self._chain.current()
        alive = False
        if record is not None:
            lease_live = self._chain.is_running(record.task_id)
            alive = is_check_alive(
                record, lease_live, self._clock(), self._chain.lost_grace_s
            )
        return GaugeMetricFamily(
            "postsched_chain_alive",
            "1 when a check is recorded and is waiting for its ETA, running, "
            "or at most POSTSCHED_LOST_CHECK_GRACE past its ETA; 0 otherwise",
            value=1 if alive else 0,
        )


def create_registry(recorder: MetricsRecorder, chain: Chain) -> CollectorRegistry:
    """Return a registry that contains only postsched's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PostschedCollector(recorder, chain))
    return registry


class MetricsServer:
    """The HTTP endpoint of the metrics, served on a thread of this process."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: Any
        self._thread: threading.Thread
        # Raises OSError when the port is taken.
        self._server, self._thread = start_http_server(
            port, addr=host, registry=registry
        )
        logger.info("serving metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        logger.info("stopped serving metrics on %s:%d", self.host, self.port)


def _post_counters(snapshot: MetricsSnapshot) -> Iterator[CounterMetricFamily]:
    descriptions = {
        PUBLISHED: "Posts the platform accepted, by target",
        FAILED: "Posts failed for good, by target",
        MISSED: "Posts overdue by more than POSTSCHED_MISSED_GRACE, by target",
        UNCONFIRMED: "Posts sent without an answer from the platform, by target",
    }
    for outcome in COUNTED_OUTCOMES:
        family = CounterMetricFamily(
            f"postsched_posts_{outcome}", descriptions[outcome], labels=["target"]
        )
        for (counted_outcome, target), count in sorted(snapshot.posts.items()):
            if counted_outcome == outcome:
                family.add_metric([target], count)
        yield family


def _lateness_histogram(snapshot: MetricsSnapshot) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound in (*(_bound_label(bound) for bound in LATENESS_BUCKETS_S), INF_BUCKET):
        cumulative += snapshot.lateness_buckets.get(bound, 0)
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(
        "postsched_publish_lateness_seconds",
        "Seconds from a post's due time to the platform's acceptance; a retry "
        "moves the due time by its backoff",
        buckets=buckets,
        sum_value=snapshot.lateness_sum_s,
    )


def _bucket_of(value_s: float) -> str:
    for bound in LATENESS_BUCKETS_S:
        if value_s <= bound:
            return _bound_label(bound)
    return INF_BUCKET


def _bound_label(bound: float) -> str:
    return repr(float(bound))


def _posts_field(outcome: str, target: str) -> str:
    return f"{outcome}{FIELD_SEPARATOR}{target}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
