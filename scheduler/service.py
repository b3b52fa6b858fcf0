"""Scheduling, importing, listing and cancelling posts: what every interface calls."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import kombu.exceptions
import redis

from scheduler.chain import Chain
from scheduler.csv_import import ImportReport, import_file
from scheduler.errors import PublishError, ValidationError
from scheduler.model import (
    Attempt,
    Post,
    PostStatus,
    check_encodable,
    check_not_past,
    new_post,
    resolve_due_at,
    utc_now,
    validate_content,
    validate_link,
)
from scheduler.publishers import Publishers
from scheduler.store.base import Store

logger = logging.getLogger(__name__)

# Attribute set on the log record of a failed wake-up, for callers that
# report ``PostService.wake_error`` themselves and drop the record.
WAKE_ERROR_RECORD = "postsched_wake_error"


class PostService:
    """Writes posts through the store, then wakes the check chain for them."""

    def __init__(self, store: Store, publishers: Publishers, chain: Chain) -> None:
        self.store = store
        self.publishers = publishers
        self.chain = chain
        # The broker error of the last wake-up that failed, for callers to report.
        self.wake_error: Exception | None = None

    def schedule(
        self,
        *,
        target: str,
        content: str,
        due_at: datetime | str | None,
        timezone: str | None = None,
        link: str | None = None,
        publish_now: bool = False,
    ) -> Post:
        """Validate and store one post, and make sure a check runs when it is due.

        The post is due at ``due_at``, or now with ``publish_now``. Giving
        both or neither raises ValidationError. So a due time that is None
        by mistake never publishes a post at once.
        """
        if publish_now and due_at is not None:
            raise ValidationError(
                "due_at",
                due_at,
                "a due time was given together with publish now",
                "give either a due time or publish now, not both",
            )
        if not publish_now and due_at is None:
            raise ValidationError(
                "due_at",
                None,
                "missing",
                "give a due time, or publish now (publish_now, or --now on the command line)",
            )
        if due_at is None:
            due_at = utc_now()
        post = new_post(
            target=target,
            content=content,
            due_at=due_at,
            timezone=timezone,
            link=link,
            rules=self.publishers,
        )
        self.store.add([post])
        logger.info(
            "scheduled post %s to %s at %s",
            post.id,
            post.target,
            post.due_at.isoformat(),
        )
        self._wake_for([post])
        return post

    def import_csv(
        self, source: Path | TextIO, *, skip_invalid: bool = False, **options: Any
    ) -> ImportReport:
        """Import a CSV file or text stream all together (see ``scheduler.csv_import``) and wake the chain."""
        report = import_file(
            source, self.store, self.publishers, skip_invalid=skip_invalid, **options
        )
        logger.info("imported %d post(s) from %s", len(report.posts), report.path)
        self._wake_for(report.posts)
        return report

    def cancel(self, post_id: str) -> Post:
        """Cancel a scheduled post."""
        check_encodable("id", post_id)
        post = self.store.cancel(post_id, utc_now())
        logger.info("cancelled post %s", post_id)
        return post

    def reschedule(
        self, post_id: str, due_at: datetime | str, timezone: str | None = None
    ) -> Post:
        """Move a scheduled post to ``due_at``; a move earlier wakes the chain."""
        return self.update(post_id, due_at=due_at, timezone=timezone)

    def edit(
        self, post_id: str, *, content: str | None = None, link: str | None = None
    ) -> Post:
        """Change the content or link of a scheduled post, validated like a new one."""
        return self.update(post_id, content=content, link=link)

    def update(
        self,
        post_id: str,
        *,
        content: str | None = None,
        link: str | None = None,
        due_at: datetime | str | None = None,
        timezone: str | None = None,
    ) -> Post:
        """Change the content, link and due time of a scheduled post in one write.

        Every given field is validated as for a new post before the write, so
        an invalid field changes nothing. ``None`` keeps a field and a link of
        ``""`` removes the link. ``timezone`` is the zone of a ``due_at``
        written without an offset. A new due time wakes the chain.
        """
        check_encodable("id", post_id)
        if timezone is not None and due_at is None:
            raise ValidationError(
                "timezone",
                timezone,
                "given without due_at",
                "give the due_at that the time zone applies to, or leave timezone out",
            )
        if content is None and link is None and due_at is None:
            raise ValidationError(
                "changes",
                {},
                "no change given",
                "give a new content, link or due_at",
            )
        now = utc_now()
        changes: dict[str, object] = {"updated_at": now}
        if due_at is not None:
            due_utc, zone_name = resolve_due_at(due_at, timezone)
            check_not_past(due_utc, now, due_at)
            changes.update(due_at=due_utc, timezone=zone_name)
        text_changed = content is not None or link is not None
        if text_changed:
            changes.update(self._text_changes(post_id, content, link))

        if due_at is None:
            operation = "edit"
        else:
            operation = "update" if text_changed else "reschedule"
        post = self.store.update_where(
            post_id, {PostStatus.SCHEDULED}, operation, changes
        )
        if due_at is None:
            logger.info("edited post %s", post_id)
            return post
        logger.info("rescheduled post %s to %s", post_id, post.due_at.isoformat())
        self._wake_for([post])
        return post

    def _text_changes(
        self, post_id: str, content: str | None, link: str | None
    ) -> dict[str, object]:
        """Validate a new content or link of a post and return the changes to store."""
        current = self.store.get(post_id)
        new_link = validate_link(link) if link is not None else current.link
        new_content = content if content is not None else current.content
        # The link counts towards some targets' limits, so a new link re-checks the content.
        return {
            "content": validate_content(
                new_content, current.target, self.publishers, link=new_link
            ),
            "link": new_link,
        }

    def retry(self, post_id: str) -> Post:
        """Publish a failed, unconfirmed or missed post again, now."""
        now = utc_now()
        changes = {
            "status": str(PostStatus.SCHEDULED),
            "due_at": now,
            "attempt_id": None,
            "lease_until": None,
            "deliveries": 0,
            "updated_at": now,
        }
        allowed = {PostStatus.FAILED, PostStatus.UNCONFIRMED, PostStatus.MISSED}
        check_encodable("id", post_id)
        post = self.store.update_where(post_id, allowed, "retry", changes)
        logger.info("post %s will be published again now, by operator request", post_id)
        self._wake_for([post])
        return post

    def mark_published(self, post_id: str, url: str) -> Post:
        """Record that an unconfirmed or failed post is out, at ``url``, so it is never sent again."""
        now = utc_now()
        changes = {
            "status": str(PostStatus.PUBLISHED),
            "external_id": validate_link(url),
            "published_at": now,
            "lease_until": None,
            "updated_at": now,
        }
        allowed = {PostStatus.UNCONFIRMED, PostStatus.FAILED}
        check_encodable("id", post_id)
        post = self.store.update_where(post_id, allowed, "mark published", changes)
        logger.info("post %s marked published at %s by operator request", post_id, url)
        return post

    def reconcile(self) -> dict[str, int]:
        """Settle unconfirmed posts by asking each platform whether it has them.

        A post the platform has becomes ``published``; one it does not have is
        sent again now; one whose publisher cannot look posts up stays
        ``unconfirmed`` for an operator. Returns how many posts went each way.
        """
        outcomes: Counter[str] = Counter()
        for post in self.store.list_posts(status=PostStatus.UNCONFIRMED, limit=None):
            outcomes[self._reconcile_one(post)] += 1
        return dict(outcomes)

    def _reconcile_one(self, post: Post) -> str:
        try:
            found = self.publishers.for_target(post.target).find(post)
        except NotImplementedError:
            return "left unconfirmed"
        except (PublishError, ValidationError) as exc:
            logger.warning(
                "could not look up post %s on %s: %s", post.id, post.target, exc
            )
            return "left unconfirmed"
        if found is None:
            self.retry(post.id)
            return "sent again"
        now = utc_now()
        changes = {
            "status": str(PostStatus.PUBLISHED),
            "external_id": found.external_id,
            "published_at": found.published_at,
            "updated_at": now,
        }
        self.store.update_where(post.id, {PostStatus.UNCONFIRMED}, "reconcile", changes)
        logger.info(
            "reconciled post %s: %s has it as %s",
            post.id,
            post.target,
            found.external_id,
        )
        return "published"

    def get(self, post_id: str) -> Post:
        """Return the post with id ``post_id``; raise PostNotFoundError when none has it."""
        check_encodable("id", post_id)
        return self.store.get(post_id)

    def show(self, post_id: str) -> tuple[Post, list[Attempt]]:
        """Return a post and its attempts, oldest first."""
        check_encodable("id", post_id)
        return self.store.get(post_id), self.store.list_attempts(post_id)

    def list_posts(
        self,
        *,
        status: PostStatus | None = None,
        target: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return stored posts ordered by due time, then id.

        ``due_after`` is inclusive, ``due_before`` exclusive, and ``after`` is
        the (due time, id) of the last post of the previous page.
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValidationError(
                "limit",
                limit,
                "not a whole number of 1 or more",
                "give a limit such as 100, or None for every matching post",
            )
        if target is not None:
            check_encodable("target", target)
        if after is not None:
            check_encodable("after", after[1])
        return self.store.list_posts(
            status=status,
            target=target,
            due_after=due_after,
            due_before=due_before,
            after=after,
            limit=limit,
        )

    def _wake_for(self, posts: Sequence[Post]) -> None:
        """Wake the chain for ``posts``; a broker that cannot be reached is only logged.

        The posts are stored by now, and the store is the source of truth: a
        worker's watchdog arms the chain for them once Redis is reachable.
        """
        if not posts:
            return
        try:
            self.chain.wake(min(post.due_at for post in posts), utc_now())
        except (redis.RedisError, kombu.exceptions.KombuError, OSError) as exc:
            self.wake_error = exc
            logger.warning(
                "stored %d post(s) but could not wake the check chain: %s; a worker arms it when Redis is reachable",
                len(posts),
                exc,
                extra={WAKE_ERROR_RECORD: True},
            )
