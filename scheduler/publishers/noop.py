"""The no-op publisher: accepts every post and sends it nowhere.

For dry runs of a schedule and for benchmarks: the posts go through the whole
chain (claim, delivery count, attempt history, lateness in the log) without a
platform, so what is measured is postsched alone.
"""

from __future__ import annotations

from scheduler.errors import ValidationError
from scheduler.model import Post, utc_now
from scheduler.publishers.base import Publisher, PublishResult
from scheduler.publishers.outbox import ACCOUNT_PATTERN, MAX_CONTENT_LENGTH


class NoopPublisher(Publisher):
    """Publisher that accepts every post without sending it."""

    name = "noop"

    def check_account(self, account: str) -> None:
        """Raise ValidationError unless ``account`` is a plain name."""
        if ACCOUNT_PATTERN.fullmatch(account) is None:
            raise ValidationError(
                "target",
                f"{self.name}:{account}",
                "invalid noop account",
                "use 1 to 64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit, such as 'noop:dry-run'",
            )

    def max_length(self, account: str) -> int:
        """Return the content limit, the same as the outbox's."""
        return MAX_CONTENT_LENGTH

    def publish(self, post: Post) -> PublishResult:
        """Return at once, with the current time as the publishing time."""
        return PublishResult(utc_now(), external_id=f"noop:{post.id}")

    def can_find(self, account: str) -> bool:
        """Return True, because ``find`` always settles a post."""
        return True

    def find(self, post: Post) -> PublishResult | None:
        """Return None: nothing was sent, so sending the post again is harmless."""
        return None
