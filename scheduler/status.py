"""The operator's view of the chain and the store: ``postsched status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import kombu.exceptions
import redis

from scheduler.chain import Chain, CheckRecord
from scheduler.model import Post, PostStatus
from scheduler.store.base import Store

# A post this late with no live check means the chain is down, not just busy.
OVERDUE_TOLERANCE_S = 5.0


@dataclass(frozen=True)
class StatusReport:
    """The recorded check, the next due post and the counts by status."""

    now: datetime
    check: CheckRecord | None
    check_state: str | None
    check_lease_live: bool
    next_post: Post | None
    counts: dict[PostStatus, int]
    lost_grace_s: float
    # Why the chain's record could not be read, when Redis was unreachable.
    redis_error: str | None = None

    @property
    def oldest_overdue_s(self) -> float:
        """Seconds the earliest scheduled post is past its due time, or 0."""
        if self.next_post is None:
            return 0.0
        return max((self.now - self.next_post.due_at).total_seconds(), 0.0)

    @property
    def check_alive(self) -> bool:
        """Whether a recorded check is waiting for its ETA, running, or only just late."""
        if self.check is None:
            return False
        return is_check_alive(
            self.check, self.check_lease_live, self.now, self.lost_grace_s
        )

    @property
    def healthy(self) -> bool:
        """False when posts are overdue and no live check will claim them, or Redis is unreachable."""
        if self.redis_error is not None:
            return False
        return self.check_alive or self.oldest_overdue_s <= OVERDUE_TOLERANCE_S

    def as_dict(self) -> dict[str, object]:
        """Return the report as a JSON-serialisable dict."""
        check = None
        if self.check is not None:
            check = {
                "task_id": self.check.task_id,
                "eta": self.check.eta.isoformat(),
                "state": self.check_state,
                "lease_live": self.check_lease_live,
            }
        next_post = None
        if self.next_post is not None:
            next_post = {
                "id": self.next_post.id,
                "due_at": self.next_post.due_at.isoformat(),
            }
        return {
            "healthy": self.healthy,
            "check": check,
            "check_alive": self.check_alive,
            "next_post": next_post,
            "oldest_overdue_s": round(self.oldest_overdue_s, 3),
            "redis_error": self.redis_error,
            # Every status, with 0 for those no post is in, so the keys are stable.
            "counts": {
                str(status): self.counts.get(status, 0) for status in PostStatus
            },
        }


def is_check_alive(
    record: CheckRecord, lease_live: bool, now: datetime, lost_grace_s: float
) -> bool:
    """Return whether the recorded check runs, or is at most ``lost_grace_s`` past its ETA."""
    if lease_live:
        return True
    return (now - record.eta).total_seconds() <= lost_grace_s


def read_status(store: Store, chain: Chain, now: datetime) -> StatusReport:
    """Collect the status report from the store and the chain's record.

    When Redis is unreachable, the report has the store's part, no check,
    and the error in ``redis_error``.
    """
    record = None
    state = None
    lease_live = False
    redis_error = None
    try:
        record = chain.current()
        if record is not None:
            lease_live = chain.is_running(record.task_id)
            state = chain.check_state(record.task_id)
    except (redis.RedisError, kombu.exceptions.KombuError, OSError) as exc:
        record, state, lease_live = None, None, False
        redis_error = str(exc)
    upcoming = store.list_posts(status=PostStatus.SCHEDULED, limit=1)
    return StatusReport(
        now=now,
        check=record,
        check_state=state,
        check_lease_live=lease_live,
        next_post=upcoming[0] if upcoming else None,
        counts=store.count_by_status(),
        lost_grace_s=chain.lost_grace_s,
        redis_error=redis_error,
    )
