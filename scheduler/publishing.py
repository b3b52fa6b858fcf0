"""Publishing claimed posts, and what happens when the platform fails.

Retries live in the store: a post to be retried goes back to ``scheduled``
with its due time moved by the backoff, so the check chain claims it again
and the broker never holds a retry message.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.errors import (
    PostNotFoundError,
    PublishError,
    RateLimitedError,
    StoreUnavailableError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.model import Post, PostStatus, utc_now
from scheduler.publishers import Publishers
from scheduler.publishers.base import PublishResult
from scheduler.store.base import Store

logger = logging.getLogger(__name__)

# Waits before retrying to record a post the platform already accepted.
RECORD_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a post that failed with a transient error.

    The n-th retry waits ``backoff_s * 2**(n-1)``, at most ``backoff_max_s``,
    with up to half of it taken off at random so that posts failing together
    do not retry together. A post gets at most ``max_attempts`` attempts.
    """

    max_attempts: int = 5
    backoff_s: float = 5.0
    backoff_max_s: float = 600.0

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
) -> dict[str, int]:
    """Publish each post of ``post_ids`` that is still claimed under ``attempt_id``.

    A post in another status, or claimed under another attempt, is skipped: a
    redelivered task message must not publish a post twice. ``wake`` is
    called with the new due time of each post sent back for a retry. Returns
    how many posts ended in each outcome.
    """
    policy = policy or RetryPolicy()
    outcomes: Counter[str] = Counter()
    for post_id in post_ids:
        outcome, retry_at = _publish_one(store, publishers, attempt_id, post_id, policy)
        outcomes[outcome] += 1
        if retry_at is not None and wake is not None:
            wake(retry_at)
    return dict(outcomes)


def _publish_one(
    store: Store,
    publishers: Publishers,
    attempt_id: str,
    post_id: str,
    policy: RetryPolicy,
) -> tuple[str, datetime | None]:
    try:
        post = store.get(post_id)
    except PostNotFoundError:
        logger.warning("post %s was not found; skipping it", post_id)
        return "skipped", None
    if post.status is not PostStatus.PUBLISHING or post.attempt_id != attempt_id:
        logger.info(
            "post %s is %s under attempt %s, not claimed under %s; skipping it",
            post_id,
            post.status,
            post.attempt_id,
            attempt_id,
        )
        return "skipped", None

    try:
        result = publishers.for_target(post.target).publish(post)
    except UnknownOutcomeError as exc:
        logger.error(
            "post %s to %s has an unknown outcome: %s", post_id, post.target, exc
        )
        store.mark_unconfirmed(post_id, attempt_id, str(exc), utc_now())
        return "unconfirmed", None
    except TransientPublishError as exc:
        return _retry_or_fail(store, post, attempt_id, exc, policy)
    except (PublishError, ValidationError) as exc:
        logger.warning("post %s to %s failed for good: %s", post_id, post.target, exc)
        store.mark_failed(post_id, attempt_id, str(exc), utc_now())
        return "failed", None

    _record_published(store, post, attempt_id, result)
    return "published", None


def _retry_or_fail(
    store: Store,
    post: Post,
    attempt_id: str,
    exc: TransientPublishError,
    policy: RetryPolicy,
) -> tuple[str, datetime | None]:
    now = utc_now()
    if post.attempts >= policy.max_attempts:
        message = (
            f"{exc} (attempt {post.attempts} of {policy.max_attempts}, no retries left)"
        )
        logger.warning("post %s to %s failed: %s", post.id, post.target, message)
        store.mark_failed(post.id, attempt_id, message, now)
        return "failed", None
    delay_s = policy.delay_s(post.attempts)
    if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
        delay_s = exc.retry_after_s
    retry_at = now + timedelta(seconds=delay_s)
    logger.info(
        "post %s to %s failed (%s); retrying in %.1f s, attempt %d of %d",
        post.id,
        post.target,
        exc,
        delay_s,
        post.attempts + 1,
        policy.max_attempts,
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
    for delay_s in (*RECORD_RETRY_DELAYS_S, None):
        try:
            recorded = store.mark_published(
                post.id, attempt_id, result.published_at, result.external_id
            )
        except StoreUnavailableError as exc:
            if delay_s is None:
                logger.error(
                    "post %s was published as %s but could not be recorded: %s",
                    post.id,
                    result.external_id,
                    exc,
                )
                raise
            logger.warning(
                "recording published post %s failed (%s); retrying in %s s",
                post.id,
                exc,
                delay_s,
            )
            time.sleep(delay_s)
            continue
        if not recorded:
            logger.error(
                "post %s was published as %s but its claim %s had ended",
                post.id,
                result.external_id,
                attempt_id,
            )
            return
        lateness_ms = (result.published_at - post.due_at).total_seconds() * 1000
        logger.info(
            "published post %s to %s, %.0f ms after its due time",
            post.id,
            post.target,
            lateness_ms,
        )
        return
