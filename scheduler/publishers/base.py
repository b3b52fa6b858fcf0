"""The interface every publisher implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from scheduler.model import Post


@dataclass(frozen=True)
class PublishResult:
    """What the platform returned for a published post."""

    published_at: datetime
    external_id: str | None = None
    url: str | None = None


class Publisher(abc.ABC):
    """Sends posts of one kind of target, such as ``outbox`` or ``webhook``.

    ``publish`` raises TransientPublishError when the post may be sent again,
    and PermanentPublishError when the platform rejected it.
    """

    name: str

    @abc.abstractmethod
    def check_account(self, account: str) -> None:
        """Raise ValidationError when this publisher cannot post as ``account``."""

    @abc.abstractmethod
    def max_length(self, account: str) -> int:
        """Return the content limit of ``account``, in characters."""

    @abc.abstractmethod
    def publish(self, post: Post) -> PublishResult:
        """Send ``post`` to the platform and return what it answered."""

    def max_attempts(self, account: str) -> int | None:
        """Return the attempts allowed for posts of ``account``, or None for the global setting."""
        return None

    def can_find(self, account: str) -> bool:
        """Return whether ``find`` can look up the posts of ``account``."""
        return False

    def find(self, post: Post) -> PublishResult | None:
        """Return what the platform holds for ``post``, looked up by its idempotency key.

        Returns None when the platform does not have it. Raises
        NotImplementedError when the platform offers no such lookup, so an
        interrupted attempt can only be settled by an operator.
        """
        raise NotImplementedError(f"the {self.name} publisher cannot look posts up")

    def close(self) -> None:  # noqa: B027 - most publishers hold nothing to release
        """Release connections and files held by the publisher."""
