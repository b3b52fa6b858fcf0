"""Publishing claimed posts through their publishers."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from scheduler.errors import PostNotFoundError, PublishError, ValidationError
from scheduler.model import PostStatus, utc_now
from scheduler.publishers import Publishers
from scheduler.store.base import Store

logger = logging.getLogger(__name__)


def publish_claimed(
    store: Store, publishers: Publishers, attempt_id: str, post_ids: Sequence[str]
) -> dict[str, int]:
    """Publish each post of ``post_ids`` that is still claimed under ``attempt_id``.

    A post in another status, or claimed under another attempt, is skipped: a
    redelivered task message must not publish a post twice. Returns how many
    posts ended in each outcome.
    """
    outcomes: Counter[str] = Counter()
    for post_id in post_ids:
        outcomes[_publish_one(store, publishers, attempt_id, post_id)] += 1
    return dict(outcomes)


def _publish_one(
    store: Store, publishers: Publishers, attempt_id: str, post_id: str
) -> str:
    try:
        post = store.get(post_id)
    except PostNotFoundError:
        logger.warning("post %s was not found; skipping it", post_id)
        return "skipped"
    if post.status is not PostStatus.PUBLISHING or post.attempt_id != attempt_id:
        logger.info(
            "post %s is %s under attempt %s, not claimed under %s; skipping it",
            post_id,
            post.status,
            post.attempt_id,
            attempt_id,
        )
        return "skipped"

    try:
        publisher = publishers.for_target(post.target)
        result = publisher.publish(post)
    except (PublishError, ValidationError) as exc:
        logger.warning("post %s to %s failed: %s", post_id, post.target, exc)
        store.mark_failed(post_id, attempt_id, str(exc), utc_now())
        return "failed"

    if not store.mark_published(
        post_id, attempt_id, result.published_at, result.external_id
    ):
        logger.error(
            "post %s was published as %s but its claim %s had expired",
            post_id,
            result.external_id,
            attempt_id,
        )
        return "published"
    lateness_ms = (result.published_at - post.due_at).total_seconds() * 1000
    logger.info(
        "published post %s to %s, %.0f ms after its due time",
        post_id,
        post.target,
        lateness_ms,
    )
    return "published"
