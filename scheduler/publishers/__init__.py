"""Publishers, one per kind of target, and the registry that picks them."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scheduler.config import Settings
from scheduler.errors import ValidationError
from scheduler.publishers.base import Publisher, PublishResult
from scheduler.publishers.mastodon import MastodonPublisher
from scheduler.publishers.noop import NoopPublisher
from scheduler.publishers.outbox import OutboxPublisher
from scheduler.publishers.webhook import WebhookPublisher

__all__ = ["LengthCounter", "Publisher", "PublishResult", "Publishers"]


@runtime_checkable
class LengthCounter(Protocol):
    """A publisher whose platform counts the length of a post its own way."""

    def counted_length(self, content: str, link: str | None) -> int:
        """Return the length the platform counts for ``content`` sent with ``link``."""
        ...


class Publishers:
    """The publishers configured by ``settings``, looked up by target.

    A target is ``PUBLISHER:ACCOUNT``, such as ``outbox:main``.
    """

    def __init__(self, settings: Settings) -> None:
        outbox = OutboxPublisher(settings.resolved_outbox_dir)
        webhook = WebhookPublisher(settings.webhooks)
        mastodon = MastodonPublisher(settings.mastodon)
        noop = NoopPublisher()
        self._by_name: dict[str, Publisher] = {
            outbox.name: outbox,
            webhook.name: webhook,
            mastodon.name: mastodon,
            noop.name: noop,
        }

    def for_target(self, target: str) -> Publisher:
        """Return the publisher of ``target``; raise ValidationError if none serves it."""
        name, _, account = target.partition(":")
        publisher = self._by_name.get(name)
        if publisher is None:
            known = ", ".join(sorted(self._by_name))
            raise ValidationError(
                "target",
                target,
                f"unknown publisher {name!r}",
                f"use one of: {known}, such as 'outbox:main'",
            )
        publisher.check_account(account)
        return publisher

    def check_target(self, target: str) -> None:
        """Raise ValidationError when no publisher serves ``target``."""
        self.for_target(target)

    def max_length(self, target: str) -> int:
        """Return the content limit of ``target``, in characters."""
        return self.for_target(target).max_length(target.partition(":")[2])

    def content_length(self, target: str, content: str, link: str | None = None) -> int:
        """Return the length of ``content`` that counts against the limit of ``target``.

        A publisher that is a LengthCounter counts it, ``link`` included.
        Every other one counts the characters of ``content``, because it sends
        the link apart from the text.
        """
        publisher = self.for_target(target)
        if isinstance(publisher, LengthCounter):
            return publisher.counted_length(content, link)
        return len(content)

    def close(self) -> None:
        """Release what every publisher holds."""
        for publisher in self._by_name.values():
            publisher.close()
