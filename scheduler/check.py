"""What one check does: claim the due posts, hand them over, schedule the next."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from scheduler.chain import Chain
from scheduler.metrics import FAILED, MISSED, PUBLISHED, MetricsRecorder
from scheduler.model import Post, utc_now
from scheduler.store.base import Store

logger = logging.getLogger(__name__)

# Receives the attempt id of a claim and one batch of the posts claimed under it.
Dispatch = Callable[[str, Sequence[Post]], None]


@dataclass(frozen=True)
class CheckResult:
    """What a check did, returned as the task's result."""

    superseded: bool
    claimed: int = 0
    successor_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        """Return the result as a JSON-serialisable dict."""
        return {
            "superseded": self.superseded,
            "claimed": self.claimed,
            "successor_id": self.successor_id,
        }


def run_check(
    task_id: str,
    *,
    store: Store,
    chain: Chain,
    dispatch: Dispatch,
    claim_batch_size: int,
    publish_batch_size: int,
    publish_lease_s: float,
    max_attempts: int,
    missed_grace_s: float,
    metrics: MetricsRecorder | None = None,
    publish_spread: int = 1,
) -> CheckResult:
    """Run check ``task_id``: claim every due post, dispatch it, schedule the successor.

    A check that is not the recorded one exits before claiming anything.
    First it settles posts whose publishing lease expired (see
    ``Store.sweep_expired``), so a post whose task died is claimed again, and
    marks ``missed`` the posts overdue by more than ``missed_grace_s``: after
    an outage, a post a day late is listed for an operator, not published.
    Posts are claimed ``claim_batch_size`` at a time and dispatched in groups
    of ``publish_batch_size``, because one task message per post would cap a
    burst at the rate the broker and the pool can move tasks. A claim is split
    into at least ``publish_spread`` groups when it has that many posts, so
    posts due together are published by that many pool processes at once.
    Posts that are missed, or that the sweep fails or finds published, are
    counted in ``metrics`` when given.
    """
    if not chain.is_current(task_id):
        logger.info(
            "check %s is not the recorded check; exiting without claiming", task_id
        )
        return CheckResult(superseded=True)

    chain.hold_lease(task_id)
    try:
        swept = store.sweep_expired(utc_now(), max_attempts)
        if swept.total:
            logger.warning(
                "check %s settled %d post(s) whose publishing lease expired: %d rescheduled, %d failed, %d published",
                task_id,
                swept.total,
                swept.rescheduled,
                swept.failed,
                swept.published,
            )
            if metrics is not None:
                metrics.count_by_target(FAILED, swept.failed_by_target)
                metrics.count_by_target(PUBLISHED, swept.published_by_target)
        now = utc_now()
        missed = store.mark_missed(now - timedelta(seconds=missed_grace_s), now)
        if missed:
            logger.warning(
                "check %s marked %d post(s) missed: overdue by more than %g s; 'postsched list --status missed' lists them",
                task_id,
                sum(missed.values()),
                missed_grace_s,
            )
            if metrics is not None:
                metrics.count_by_target(MISSED, missed)
        claimed = _claim_and_dispatch(
            task_id,
            store,
            chain,
            dispatch,
            claim_batch_size,
            publish_batch_size,
            publish_lease_s,
            publish_spread,
        )
        successor_id = chain.succeed(task_id, store.next_due_at(), utc_now())
    finally:
        chain.release_lease(task_id)
    return CheckResult(superseded=False, claimed=claimed, successor_id=successor_id)


def _claim_and_dispatch(
    task_id: str,
    store: Store,
    chain: Chain,
    dispatch: Dispatch,
    claim_batch_size: int,
    publish_batch_size: int,
    publish_lease_s: float,
    publish_spread: int,
) -> int:
    claimed = 0
    while True:
        now = utc_now()
        attempt_id = uuid.uuid4().hex
        posts = store.claim_due(
            now, claim_batch_size, attempt_id, now + timedelta(seconds=publish_lease_s)
        )
        group_size = group_size_for(len(posts), publish_batch_size, publish_spread)
        for start in range(0, len(posts), group_size):
            # NOTE: a dispatch that fails leaves its posts in ``publishing``
            # until their lease runs out.
            dispatch(attempt_id, posts[start : start + group_size])
        claimed += len(posts)
        if len(posts) < claim_batch_size:
            break
        chain.hold_lease(task_id)
    if claimed:
        logger.info("check %s claimed %d due post(s)", task_id, claimed)
    return claimed


def group_size_for(claimed: int, publish_batch_size: int, publish_spread: int) -> int:
    """Return the posts per publishing task for a claim of ``claimed`` posts.

    At most ``publish_batch_size``, and small enough to give ``publish_spread``
    tasks when there are that many posts: 10 posts on 4 processes go as
    3, 3, 3 and 1.
    """
    per_process = math.ceil(claimed / max(publish_spread, 1))
    return max(1, min(publish_batch_size, per_process))
