"""The Python client: schedule, edit, cancel and list posts from another service.

A service that shares postsched's store and broker uses :class:`PostschedClient`
instead of the Celery task API when it can import postsched. The client writes
each post to the store first and then wakes the check chain through the
broker, as the command line does, so the same validation and errors apply.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TextIO

from scheduler.config import Settings, load_settings
from scheduler.csv_import import DEFAULT_DATE_FORMAT, DEFAULT_TARGET, ImportReport
from scheduler.errors import ValidationError
from scheduler.model import (
    Attempt,
    Post,
    PostStatus,
    optional_utc,
    to_utc,
)
from scheduler.service import PostService
from tasks.app import PostschedCelery, create_app


class PostschedClient:
    """A typed facade over :class:`~scheduler.service.PostService`.

    Methods raise the errors of :mod:`scheduler.errors`: ValidationError for
    an invalid field (nothing is stored), PostNotFoundError for an unknown id,
    InvalidStateError when the post's status forbids the change, and
    StoreUnavailableError when the store cannot be reached. A broker that
    cannot be reached is not an error: the post is stored, ``wake_error``
    contains the broker's error, and a worker's watchdog arms the chain later.

    The client never starts the embedded Redis, because it would stop it on
    close under the workers attached to it. Its store and Redis clients are
    thread-safe, so one client can serve the threads of a process, but it
    must not be shared across a fork. Close it, or use it as a context
    manager.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._app: PostschedCelery = create_app(
            settings or load_settings(), start_embedded=False
        )
        self._service: PostService = self._app.runtime.service

    @classmethod
    def from_env(cls, **overrides: object) -> PostschedClient:
        """Create a client from the POSTSCHED_* environment variables, ``overrides`` on top.

        Raises ConfigError naming the invalid variable.
        """
        return cls(load_settings(**overrides))

    @property
    def settings(self) -> Settings:
        """Settings the client was created with."""
        return self._app.settings

    @property
    def wake_error(self) -> Exception | None:
        """Broker error of the last wake-up that failed, or None when every one succeeded."""
        return self._service.wake_error

    def schedule(
        self,
        *,
        target: str,
        content: str,
        due_at: datetime | str,
        timezone: str | None = None,
        link: str | None = None,
    ) -> Post:
        """Validate and store one post due at ``due_at``, and wake the chain for it.

        ``due_at`` is a datetime or an ISO 8601 string; one without a UTC
        offset is read in ``timezone``. A due time more than a few seconds in
        the past is rejected: use :meth:`publish_now` to publish at once.
        """
        return self._service.schedule(
            target=target, content=content, due_at=due_at, timezone=timezone, link=link
        )

    def publish_now(
        self, *, target: str, content: str, link: str | None = None
    ) -> Post:
        """Validate and store one post due now, and wake the chain for it."""
        return self._service.schedule(
            target=target, content=content, due_at=None, link=link, publish_now=True
        )

    def get(self, post_id: str) -> Post:
        """Return the post with id ``post_id``."""
        return self._service.get(post_id)

    def show(self, post_id: str) -> tuple[Post, list[Attempt]]:
        """Return the post with id ``post_id`` and its publishing attempts, oldest first."""
        return self._service.show(post_id)

    def list_posts(
        self,
        *,
        status: PostStatus | str | None = None,
        target: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return posts ordered by due time, then id, filtered by every argument given.

        ``due_after`` is inclusive and ``due_before`` exclusive, and both must
        be UTC-aware. ``after`` is the ``(due_at, id)`` of the last post of the
        previous page. ``limit`` None returns every matching post.
        """
        return self._service.list_posts(
            status=_status(status),
            target=target,
            due_after=optional_utc(due_after, "due_after"),
            due_before=optional_utc(due_before, "due_before"),
            after=(to_utc(after[0], "after"), after[1]) if after else None,
            limit=limit,
        )

    def edit(
        self, post_id: str, *, content: str | None = None, link: str | None = None
    ) -> Post:
        """Change the content or link of a scheduled post. A link of ``""`` removes it."""
        return self._service.edit(post_id, content=content, link=link)

    def reschedule(
        self, post_id: str, due_at: datetime | str, timezone: str | None = None
    ) -> Post:
        """Move a scheduled post to ``due_at``, and wake the chain for it."""
        return self._service.reschedule(post_id, due_at, timezone)

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

        Either every given field is valid and stored, or nothing changes.
        """
        return self._service.update(
            post_id, content=content, link=link, due_at=due_at, timezone=timezone
        )

    def cancel(self, post_id: str) -> Post:
        """Cancel a scheduled post and return it."""
        return self._service.cancel(post_id)

    def import_csv(
        self,
        source: str | Path | TextIO,
        *,
        target: str = DEFAULT_TARGET,
        date_format: str = DEFAULT_DATE_FORMAT,
        tz: str | None = None,
        skip_invalid: bool = False,
    ) -> ImportReport:
        """Import a CSV file, or text stream, in the bulk or header format.

        Without ``skip_invalid`` an invalid row raises ImportFileError and
        nothing is stored. ``target`` and ``date_format`` (``ymd``, ``mdy`` or
        ``dmy``) apply to bulk rows; ``tz`` is the zone of times written
        without a UTC offset.
        """
        return self._service.import_csv(
            Path(source) if isinstance(source, str) else source,
            skip_invalid=skip_invalid,
            target=target,
            date_format=date_format,
            tz=tz,
        )

    def close(self) -> None:
        """Close the store, Redis and broker connections of the client."""
        self._app.runtime.close()
        self._app.close()

    def __enter__(self) -> PostschedClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _status(value: PostStatus | str | None) -> PostStatus | None:
    """Return ``value`` as a PostStatus; raise ValidationError for an unknown name."""
    if value is None:
        return None
    try:
        return PostStatus(value)
    except ValueError as exc:
        names = ", ".join(str(status) for status in PostStatus)
        raise ValidationError(
            "status", value, "unknown status", f"use one of {names}"
        ) from exc
