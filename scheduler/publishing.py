"""Publishing claimed posts, and what happens when the platform fails.

Retries live in the store: a post to be retried goes back to ``scheduled``
with its due time moved by the backoff, so the check chain claims it again
and the broker never contains a retry message.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from scheduler.errors import (
    PublishError,
    RateLimitedError,
    StoreUnavailableError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.metrics import MetricsRecorder
from scheduler.model import Attempt, Post, PostStatus, utc_now
from scheduler.publishers import Publishers
from scheduler.publishers.base import Publisher, PublishResult
from scheduler.store.base import PublishedRecord, Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_AFTER_S = 86_400.0
# Waits before retrying to record a post the platform already accepted.
RECORD_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
# Seconds a published post may wait to be recorded with the next ones of its batch.
RECORD_INTERVAL_S = 0.05
# Batches smaller than this count each delivery on its own: one write either way.
MIN_GROUP_BEGIN = 2


@dataclass(frozen=True)
class AttemptOutcome:
    """Outcome of one attempt to publish a post.

    ``published_at`` is the time the platform accepted a published post.
    ``to_record`` is the platform's result of a post sent now that is still
    to be recorded as published.
    """

    outcome: str
    error: str | None = None
    retry_at: datetime | None = None
    published_at: datetime | None = None
    to_record: PublishResult | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a post that failed with a transient error.

    The n-th retry waits ``backoff_s * 2**(n-1)``, at most ``backoff_max_s``,
    with up to half of it taken off at random so that posts failing together
    do not retry together. A post gets at most ``max_attempts`` attempts (or
    its account's own ``max_attempts``), and
    is failed once ``max_deliveries`` deliveries were cut short by a worker
    that died.
    """

    max_attempts: int = 5
    backoff_s: float = 5.0
    backoff_max_s: float = 600.0
    # Interrupted deliveries (the worker died mid-publish) before a post is failed.
    max_deliveries: int = 3

    def delay_s(self, attempts: int) -> float:
        """Return the wait after attempt number ``attempts`` (1 for the first)."""
        full = min(self.backoff_s * 2 ** max(attempts - 1, 0), self.backoff_max_s)
        return full / 2 + random.uniform(0, full / 2)


def publish_claimed(
    store: Store,
    publishers: Publishers,
    attempt_id: str,
    post_ids: Sequence[str],
    *,
    policy: RetryPolicy | None = None,
    wake: Callable[[datetime], object] | None = None,
    metrics: MetricsRecorder | None = None,
) -> dict[str, int]:
    """Publish each post of ``post_ids`` that is still claimed under ``attempt_id``.

    A post in another status, or claimed under another attempt, is skipped: a
    redelivered task message must not publish a post twice. ``wake`` is
    called with the new due time of each post sent back for a retry. Each
    outcome, and the lateness of each published post, is counted in
    ``metrics`` when given. Returns how many posts ended in each outcome.

    Posts whose publisher can look them up have their first delivery counted
    together, and are recorded as published in groups (see ``PendingRecords``),
    so that a batch of them costs a few store writes instead of three per
    post. A worker that dies mid-batch leaves each post it had not recorded
    with a delivery counted, so the next delivery looks it up on the platform
    before sending it. Every other post is counted right before it is sent and
    recorded right after, one by one.
    """
    policy = policy or RetryPolicy()
    outcomes: Counter[str] = Counter()
    begun = _begin_first_deliveries(store, publishers, attempt_id, post_ids)
    pending = PendingRecords(store, metrics)
    for post_id in post_ids:
        outcome, retry_at = _publish_one(
            store,
            publishers,
            attempt_id,
            post_id,
            policy,
            begun.get(post_id),
            pending,
            metrics,
        )
        outcomes[outcome] += 1
        if retry_at is not None and wake is not None:
            wake(retry_at)
        if pending.is_due():
            pending.flush()
    pending.flush()
    return dict(outcomes)


def _begin_first_deliveries(
    store: Store, publishers: Publishers, attempt_id: str, post_ids: Sequence[str]
) -> dict[str, Post]:
    """Count the first delivery of every post in ``post_ids`` that its publisher can look up.

    Returns the posts counted, by id. A post delivered before, or whose
    publisher cannot look it up, is left to ``begin_delivery`` right before
    it is sent. Counting it here would let a worker death mark it unconfirmed
    although it was never sent. On a redelivery, it would also fail the whole
    batch along with a post that keeps killing the worker.
    """
    if len(post_ids) < MIN_GROUP_BEGIN:
        return {}
    candidates = [
        post.id
        for post in store.list_posts(ids=post_ids, limit=None)
        if post.status is PostStatus.PUBLISHING
        and post.attempt_id == attempt_id
        and post.deliveries == 0
        and _can_find(publishers, post.target)
    ]
    if len(candidates) < MIN_GROUP_BEGIN:
        return {}
    return {
        post.id: post for post in store.begin_first_deliveries(candidates, attempt_id)
    }


def _can_find(publishers: Publishers, target: str) -> bool:
    try:
        publisher = publishers.for_target(target)
    except ValidationError:
        return False
    return publisher.can_find(target.partition(":")[2])


class PendingRecords:
    """Published posts waiting to be recorded in the store together.

    The oldest waits at most ``RECORD_INTERVAL_S`` plus one publish, so a slow
    publisher still has each post recorded right after it was sent. The posts
    recorded are counted in ``metrics``, when given, in one write per group.
    """

    def __init__(self, store: Store, metrics: MetricsRecorder | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.items: list[tuple[Post, Attempt, PublishedRecord]] = []
        self.oldest_at = 0.0

    def add(self, post: Post, attempt: Attempt, result: PublishResult) -> None:
        """Queue ``post`` for recording as published, with its attempt."""
        if not self.items:
            self.oldest_at = time.monotonic()
        record = PublishedRecord(result.published_at, result.external_id)
        self.items.append((post, attempt, record))

    def is_due(self) -> bool:
        """Return whether the oldest waiting post has waited ``RECORD_INTERVAL_S``."""
        return bool(self.items) and (
            time.monotonic() - self.oldest_at >= RECORD_INTERVAL_S
        )

    def flush(self) -> None:
        """Record every waiting post, retrying while the store is unreachable.

        The platform has these posts, so giving up here would let the sweep
        send them again once the lease expires. The retries cover a short
        outage.
        """
        if not self.items:
            return
        items, self.items = self.items, []
        batch = [(attempt, record) for _, attempt, record in items]
        first = items[0][0].id
        recorded = _retry_while_unavailable(
            lambda: self.store.record_published(batch),
            f"{len(items)} published post(s) from {first} on",
        )
        for post, attempt, record in items:
            _log_recorded(post, attempt.attempt_id, record, post.id in recorded)
        if self.metrics is not None:
            self.metrics.count_published(
                [
                    (post.target, (record.published_at - post.due_at).total_seconds())
                    for post, _, record in items
                    if post.id in recorded
                ]
            )


def _log_recorded(
    post: Post, attempt_id: str, record: PublishedRecord, recorded: bool
) -> None:
    if not recorded:
        logger.error(
            "post %s was published as %s but its claim %s had ended",
            post.id,
            record.external_id,
            attempt_id,
        )
        return
    lateness_ms = (record.published_at - post.due_at).total_seconds() * 1000
    logger.info(
        "published post %s to %s, %.0f ms after its due time",
        post.id,
        post.target,
        lateness_ms,
    )


def _publish_one(
    store: Store,
    publishers: Publishers,
    attempt_id: str,
    post_id: str,
    policy: RetryPolicy,
    begun: Post | None,
    pending: PendingRecords,
    metrics: MetricsRecorder | None,
) -> tuple[str, datetime | None]:
    started_at = utc_now()
    started = time.perf_counter()
    post = begun or store.begin_delivery(post_id, attempt_id)
    if post is None:
        logger.info(
            "post %s is not claimed under attempt %s any more; skipping it",
            post_id,
            attempt_id,
        )
        return "skipped", None

    ended = _attempt(store, publishers, post, attempt_id, policy)
    # A post still to be recorded is counted when it is, by ``pending``.
    if metrics is not None and ended.to_record is None:
        lateness_s = None
        if ended.published_at is not None:
            lateness_s = (ended.published_at - post.due_at).total_seconds()
        metrics.count_outcome(post.id, post.target, ended.outcome, lateness_s)
    attempt = Attempt(
        post_id=post_id,
        attempt_id=attempt_id,
        started_at=started_at,
        duration_ms=(time.perf_counter() - started) * 1000,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        outcome=ended.outcome,
        error=ended.error,
    )
    if ended.to_record is not None:
        pending.add(post, attempt, ended.to_record)
        if begun is None:
            pending.flush()
        return ended.outcome, ended.retry_at
    try:
        store.add_attempt(attempt)
    except StoreUnavailableError as exc:
        logger.warning(
            "could not record attempt %s of post %s: %s", attempt_id, post_id, exc
        )
    return ended.outcome, ended.retry_at


def _attempt(
    store: Store,
    publishers: Publishers,
    post: Post,
    attempt_id: str,
    policy: RetryPolicy,
) -> AttemptOutcome:
    """Publish ``post`` once and return how the attempt ended."""
    try:
        publisher = publishers.for_target(post.target)
        if post.deliveries > 1:
            found = _settle_interrupted(store, publisher, post, attempt_id, policy)
            if found is not None:
                return found
        result = publisher.publish(post)
    except UnknownOutcomeError as exc:
        logger.error(
            "post %s to %s has an unknown outcome: %s", post.id, post.target, exc
        )
        store.mark_unconfirmed(post.id, attempt_id, str(exc), utc_now())
        return AttemptOutcome("unconfirmed", str(exc))
    except TransientPublishError as exc:
        account_limit = publishers.for_target(post.target).max_attempts(post.account)
        limit = account_limit or policy.max_attempts
        outcome, retry_at = _retry_or_fail(store, post, attempt_id, exc, policy, limit)
        return AttemptOutcome(outcome, str(exc), retry_at)
    except (PublishError, ValidationError) as exc:
        logger.warning("post %s to %s failed for good: %s", post.id, post.target, exc)
        store.mark_failed(post.id, attempt_id, str(exc), utc_now())
        return AttemptOutcome("failed", str(exc))

    return AttemptOutcome(
        "published", published_at=result.published_at, to_record=result
    )


def _settle_interrupted(
    store: Store, publisher: Publisher, post: Post, attempt_id: str, policy: RetryPolicy
) -> AttemptOutcome | None:
    """Settle a post whose earlier delivery stopped mid-way, before sending it again.

    The worker died while publishing it, so the platform may have it. Returns
    the outcome, or None when the platform does not have the post and it is
    safe to send.
    """
    interrupted = post.deliveries - 1
    if interrupted >= policy.max_deliveries:
        error = (
            f"publishing this post stopped the worker {interrupted} times; it is marked failed "
            "instead of being tried again, so check its content and the publisher"
        )
        logger.error("post %s to %s: %s", post.id, post.target, error)
        store.mark_failed(post.id, attempt_id, error, utc_now())
        return AttemptOutcome("failed", error)
    try:
        found = publisher.find(post)
    except NotImplementedError:
        error = (
            f"the worker stopped while publishing this post and {publisher.name} cannot look posts up, "
            "so it may or may not be out; check the platform"
        )
        logger.error("post %s to %s: %s", post.id, post.target, error)
        store.mark_unconfirmed(post.id, attempt_id, error, utc_now())
        return AttemptOutcome("unconfirmed", error)
    if found is None:
        logger.info(
            "post %s was interrupted before %s got it; sending it again",
            post.id,
            post.target,
        )
        return None
    logger.info(
        "post %s was interrupted after %s got it as %s; recording it",
        post.id,
        post.target,
        found.external_id,
    )
    _record_published(store, post, attempt_id, found)
    return AttemptOutcome("published", published_at=found.published_at)


def _retry_or_fail(
    store: Store,
    post: Post,
    attempt_id: str,
    exc: TransientPublishError,
    policy: RetryPolicy,
    max_attempts: int,
) -> tuple[str, datetime | None]:
    now = utc_now()
    if post.attempts >= max_attempts:
        message = f"{exc} (attempt {post.attempts} of {max_attempts}, no retries left)"
        logger.warning("post %s to %s failed: %s", post.id, post.target, message)
        store.mark_failed(post.id, attempt_id, message, now)
        return "failed", None
    delay_s = policy.delay_s(post.attempts)
    if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
        # Capped, so an absurd header cannot overflow a datetime or park a post for years.
        delay_s = min(exc.retry_after_s, MAX_RETRY_AFTER_S)
    retry_at = now + timedelta(seconds=delay_s)
    logger.info(
        "post %s to %s failed (%s); retrying in %.1f s, attempt %d of %d",
        post.id,
        post.target,
        exc,
        delay_s,
        post.attempts + 1,
        max_attempts,
    )
    store.retry_later(post.id, attempt_id, retry_at, str(exc), now)
    return "retried", retry_at


def _record_published(
    store: Store, post: Post, attempt_id: str, result: PublishResult
) -> None:
    """Record an accepted post, retrying while the store is unreachable.

    The platform has the post now, so giving up here would let the sweep send
    it again once the lease expires; the retries cover a short outage.
    """
    recorded = _retry_while_unavailable(
        lambda: store.mark_published(
            post.id, attempt_id, result.published_at, result.external_id
        ),
        f"published post {post.id} (as {result.external_id})",
    )
    record = PublishedRecord(result.published_at, result.external_id)
    _log_recorded(post, attempt_id, record, recorded)


def _retry_while_unavailable(write: Callable[[], T], posts: str) -> T:
    """Run ``write``, retrying after RECORD_RETRY_DELAYS_S while the store is unreachable.

    ``posts`` names what ``write`` records, for the log. The last failure is
    logged as an error and raised.
    """
    for delay_s in RECORD_RETRY_DELAYS_S:
        try:
            return write()
        except StoreUnavailableError as exc:
            logger.warning(
                "recording %s failed (%s); retrying in %s s", posts, exc, delay_s
            )
            time.sleep(delay_s)
    try:
        return write()
    except StoreUnavailableError as exc:
        logger.error("%s could not be recorded: %s", posts, exc)
        raise
