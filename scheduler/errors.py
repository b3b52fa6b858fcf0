"""Exceptions raised by postsched.

Every exception derives from :class:`PostschedError`, so callers can catch the
project's errors without catching programming errors. Transient errors are the
ones worth retrying: the check chain retries them with backoff.
"""

from __future__ import annotations

from typing import Any


class PostschedError(Exception):
    """Base class of every error raised by postsched."""


class ConfigError(PostschedError):
    """Raised when a setting is missing or invalid."""


class ValidationError(PostschedError):
    """Raised when a post, or one field of it, is invalid.

    ``field`` names the field, ``value`` is the rejected value, ``reason``
    says what is wrong with it and ``fix`` says what to do instead.
    """

    def __init__(self, field: str, value: Any, reason: str, fix: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.fix = fix
        super().__init__(f"invalid {field} {_shorten(value)}: {reason}; {fix}")

    def to_dict(self) -> dict[str, str]:
        """Return the error as a JSON-serialisable dict."""
        return {
            "field": self.field,
            "value": _shorten_text(self.value),
            "reason": self.reason,
            "fix": self.fix,
        }


class ImportFileError(PostschedError):
    """Raised when a CSV file has invalid rows and nothing was imported.

    ``errors`` lists one :class:`RowError` per invalid row.
    """

    def __init__(self, path: str, errors: list[RowError]) -> None:
        self.path = path
        self.errors = errors
        lines = [f"{path}: {len(errors)} invalid row(s), nothing imported"]
        lines += [str(error) for error in errors]
        lines.append(
            "fix the rows above, or pass --skip-invalid to import the valid rows"
        )
        super().__init__("\n".join(lines))


class RowError(PostschedError):
    """One invalid row of a CSV file, with its 1-based line number."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


class StoreError(PostschedError):
    """Base class of the errors raised by a post store."""


class StoreUnavailableError(StoreError):
    """Raised when the store cannot be reached; the operation may be retried."""


class PostNotFoundError(StoreError):
    """Raised when no post has the given id."""

    def __init__(self, post_id: str) -> None:
        self.post_id = post_id
        super().__init__(
            f"post {post_id} not found; run 'postsched list' to see the stored ids"
        )


class InvalidStateError(StoreError):
    """Raised when a post is not in a status that allows the operation."""

    def __init__(self, post_id: str, status: str, operation: str, allowed: str) -> None:
        self.post_id = post_id
        self.status = status
        super().__init__(
            f"cannot {operation} post {post_id}: it is {status}, and only {allowed} posts can be changed"
        )


class PublishError(PostschedError):
    """Base class of the errors raised by a publisher."""


class TransientPublishError(PublishError):
    """Raised when publishing failed before the platform accepted the post."""


class RateLimitedError(TransientPublishError):
    """Raised when the platform asks to wait ``retry_after_s`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class PermanentPublishError(PublishError):
    """Raised when the platform rejected the post; retrying would not help."""


class UnknownOutcomeError(PublishError):
    """Raised when the request was sent but no answer came back.

    The platform may have published the post, so it is never sent again
    automatically.
    """


def _shorten(value: Any, limit: int = 80) -> str:
    """Return ``value`` as Python writes it, quotes included, cut to ``limit``."""
    return _cut(repr(value), limit)


def _shorten_text(value: Any, limit: int = 80) -> str:
    """Return a string ``value`` as it is, and any other value as Python writes it, cut to ``limit``.

    For JSON responses, where a string value needs no quotes of its own. A lone
    surrogate, which UTF-8 cannot encode, is written as its escape (\\ud800).
    """
    if not isinstance(value, str):
        return _cut(repr(value), limit)
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...({len(text)} chars)"
