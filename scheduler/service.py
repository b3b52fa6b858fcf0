"""Scheduling, importing, listing and cancelling posts: what every interface calls."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.chain import Chain
from scheduler.csv_import import ImportReport, import_file
from scheduler.model import Post, PostStatus, new_post, utc_now
from scheduler.publishers import Publishers
from scheduler.store.base import Store

logger = logging.getLogger(__name__)


class PostService:
    """Writes posts through the store, then wakes the check chain for them."""

    def __init__(self, store: Store, publishers: Publishers, chain: Chain) -> None:
        self.store = store
        self.publishers = publishers
        self.chain = chain

    def schedule(
        self,
        *,
        target: str,
        content: str,
        due_at: datetime | str,
        timezone: str | None = None,
        link: str | None = None,
    ) -> Post:
        """Validate and store one post, and make sure a check runs when it is due."""
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
        self, path: Path, *, skip_invalid: bool = False, **options: Any
    ) -> ImportReport:
        """Import a CSV file all together (see ``scheduler.csv_import``) and wake the chain."""
        report = import_file(
            path, self.store, self.publishers, skip_invalid=skip_invalid, **options
        )
        logger.info("imported %d post(s) from %s", len(report.posts), path)
        self._wake_for(report.posts)
        return report

    def cancel(self, post_id: str) -> Post:
        """Cancel a scheduled post."""
        post = self.store.cancel(post_id, utc_now())
        logger.info("cancelled post %s", post_id)
        return post

    def list_posts(
        self,
        *,
        status: PostStatus | None = None,
        target: str | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return stored posts ordered by due time."""
        return self.store.list_posts(status=status, target=target, limit=limit)

    def _wake_for(self, posts: Sequence[Post]) -> None:
        if posts:
            self.chain.wake(min(post.due_at for post in posts), utc_now())
