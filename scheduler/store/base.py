"""The interface every post store implements.

The store is the source of truth: the broker only wakes the check chain up.
Every method that changes posts is atomic on its own, so two processes that
claim at the same time never get the same post.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.errors import InvalidStateError
from scheduler.model import Attempt, Post, PostStatus


@dataclass(frozen=True)
class SweepResult:
    """How many posts with an expired lease a sweep settled, by outcome."""

    rescheduled: int = 0
    failed: int = 0
    published: int = 0
    # The failed and published posts again, counted per target.
    failed_by_target: dict[str, int] = field(default_factory=dict)
    published_by_target: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of posts settled."""
        return self.rescheduled + self.failed + self.published


@dataclass(frozen=True)
class PublishedRecord:
    """The platform's publishing time and id of a post, to be recorded as published."""

    published_at: datetime
    external_id: str | None


def lease_error(max_attempts: int) -> str:
    """Return the last error of a post failed by the sweep."""
    return (
        f"the publishing lease expired on attempt {max_attempts} of {max_attempts}; "
        "the worker died or the task was lost, so the post may need a manual check"
    )


def missed_error(cutoff: datetime, now: datetime) -> str:
    """Return the last error of a post marked missed."""
    grace_s = (now - cutoff).total_seconds()
    return (
        f"missed: still unpublished more than {grace_s:g} s after its due time (was the worker down?); "
        "run 'postsched retry ID' to publish it now"
    )


class Store(abc.ABC):
    """A place where posts are kept; see the implementations for the backends.

    Methods raise StoreUnavailableError when the backend cannot be reached,
    PostNotFoundError for an unknown id and InvalidStateError when the post's
    status does not allow the change.
    """

    @abc.abstractmethod
    def add(self, posts: Sequence[Post]) -> None:
        """Insert ``posts`` all together, or none of them when any insert fails."""

    @abc.abstractmethod
    def get(self, post_id: str) -> Post:
        """Return the post with id ``post_id``."""

    @abc.abstractmethod
    def list_posts(
        self,
        *,
        status: PostStatus | None = None,
        target: str | None = None,
        ids: Sequence[str] | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return posts ordered by due time, then id, filtered by every argument given.

        ``due_after`` is inclusive and ``due_before`` exclusive. ``after`` is
        the (due time, id) of the last post of a previous page: only posts
        that come after it in this order are returned.
        """

    def cancel(self, post_id: str, now: datetime) -> Post:
        """Set a scheduled post to ``cancelled`` and return it."""
        changes = {"status": str(PostStatus.CANCELLED), "updated_at": now}
        return self.update_where(post_id, {PostStatus.SCHEDULED}, "cancel", changes)

    def update_where(
        self,
        post_id: str,
        allowed: set[PostStatus],
        operation: str,
        changes: dict[str, Any],
    ) -> Post:
        """Apply ``changes`` to the post if its status is in ``allowed``, atomically.

        Returns the changed post; raises InvalidStateError naming ``operation``
        when the status is another, and PostNotFoundError for an unknown id.
        """
        updated = self._update_if(post_id, allowed, changes)
        if updated is not None:
            return updated
        current = self.get(post_id)
        names = " or ".join(sorted(str(status) for status in allowed))
        raise InvalidStateError(post_id, current.status, operation, names)

    @abc.abstractmethod
    def _update_if(
        self, post_id: str, allowed: set[PostStatus], changes: dict[str, Any]
    ) -> Post | None:
        """Apply ``changes`` if the post's status is in ``allowed``; return it, or None."""

    @abc.abstractmethod
    def begin_delivery(self, post_id: str, attempt_id: str) -> Post | None:
        """Count one more delivery of a post claimed under ``attempt_id`` and return it.

        Returns None when the post is not publishing under ``attempt_id``.
        """

    def begin_first_deliveries(
        self, post_ids: Sequence[str], attempt_id: str
    ) -> list[Post]:
        """Count the first delivery of each post of ``post_ids`` at once, and return them.

        Only posts publishing under ``attempt_id`` with no delivery counted yet
        are changed and returned; the caller begins every other one on its own
        with ``begin_delivery``. This default begins none, which is always
        correct; a store that can do it in one statement overrides it.
        """
        return []

    @abc.abstractmethod
    def add_attempt(self, attempt: Attempt) -> None:
        """Record one attempt to publish a post."""

    def record_published(
        self, published: Sequence[tuple[Attempt, PublishedRecord]]
    ) -> set[str]:
        """Set each post of ``published`` to ``published`` and record its attempt.

        Returns the ids of the posts recorded. A post that is not publishing
        under its attempt id any more is left alone and missing from the
        result, but its attempt is recorded all the same.
        """
        recorded = set()
        for attempt, record in published:
            if self.mark_published(
                attempt.post_id,
                attempt.attempt_id,
                record.published_at,
                record.external_id,
            ):
                recorded.add(attempt.post_id)
            self.add_attempt(attempt)
        return recorded

    @abc.abstractmethod
    def list_attempts(self, post_id: str) -> list[Attempt]:
        """Return the recorded attempts of a post, oldest first."""

    @abc.abstractmethod
    def claim_due(
        self, now: datetime, limit: int, attempt_id: str, lease_until: datetime
    ) -> list[Post]:
        """Move at most ``limit`` posts due at ``now`` from scheduled to publishing.

        Claims the earliest due first, sets ``attempt_id`` and ``lease_until`` on
        them and counts one more attempt. A post is claimed by one caller only.
        """

    def mark_published(
        self,
        post_id: str,
        attempt_id: str,
        published_at: datetime,
        external_id: str | None,
    ) -> bool:
        """Set a publishing post to ``published``.

        Returns False, changing nothing, when the post is not ``publishing``
        under ``attempt_id`` any more. The same holds for every method below
        that takes an ``attempt_id``.
        """
        changes = {
            "status": str(PostStatus.PUBLISHED),
            "published_at": published_at,
            "external_id": external_id,
            "lease_until": None,
            "updated_at": published_at,
        }
        return self._settle(post_id, attempt_id, "mark a post published", changes)

    def mark_failed(
        self, post_id: str, attempt_id: str, error: str, now: datetime
    ) -> bool:
        """Set a publishing post to ``failed`` with ``error`` as its last error."""
        changes = {
            "status": str(PostStatus.FAILED),
            "last_error": error,
            "lease_until": None,
            "updated_at": now,
        }
        return self._settle(post_id, attempt_id, "mark a post failed", changes)

    def mark_unconfirmed(
        self, post_id: str, attempt_id: str, error: str, now: datetime
    ) -> bool:
        """Set a publishing post to ``unconfirmed``: sent, but its outcome is unknown."""
        changes = {
            "status": str(PostStatus.UNCONFIRMED),
            "last_error": error,
            "lease_until": None,
            "updated_at": now,
        }
        return self._settle(post_id, attempt_id, "mark a post unconfirmed", changes)

    def retry_later(
        self, post_id: str, attempt_id: str, due_at: datetime, error: str, now: datetime
    ) -> bool:
        """Send a publishing post back to ``scheduled``, due again at ``due_at``.

        Only for a post the platform did not get: the delivery count starts
        over, so the next attempt publishes without looking the post up first.
        """
        changes = {
            "status": str(PostStatus.SCHEDULED),
            "deliveries": 0,
            "due_at": due_at,
            "last_error": error,
            "attempt_id": None,
            "lease_until": None,
            "updated_at": now,
        }
        return self._settle(post_id, attempt_id, "schedule a retry", changes)

    @abc.abstractmethod
    def _settle(
        self, post_id: str, attempt_id: str, operation: str, changes: dict[str, Any]
    ) -> bool:
        """Apply ``changes`` to a post that is publishing under ``attempt_id``, atomically."""

    @abc.abstractmethod
    def sweep_expired(self, now: datetime, max_attempts: int) -> SweepResult:
        """Settle publishing posts whose lease ran out before ``now``.

        Their publishing task died or was lost. A post with an external id
        reached the platform, so it becomes ``published``; one without goes
        back to ``scheduled`` to be claimed again, or to ``failed`` once it has
        used ``max_attempts`` attempts.
        """

    @abc.abstractmethod
    def mark_missed(self, cutoff: datetime, now: datetime) -> dict[str, int]:
        """Set scheduled posts due before ``cutoff`` to ``missed``; return how many per target.

        Posts with deliveries are left alone: their worker died while
        publishing them, so the platform may have them, and the next claim
        looks them up instead of leaving an operator to send them again.
        """

    @abc.abstractmethod
    def next_due_at(self) -> datetime | None:
        """Return the due time of the earliest scheduled post, or None."""

    @abc.abstractmethod
    def count_due(self, now: datetime) -> int:
        """Return the number of scheduled posts due at or before ``now``."""

    @abc.abstractmethod
    def count_by_status(self) -> dict[PostStatus, int]:
        """Return the number of posts in each status."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connections of the store."""

    @property
    @abc.abstractmethod
    def display_url(self) -> str:
        """URL of the store with any password masked, for logs and messages."""
