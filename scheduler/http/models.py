"""Request and response bodies of the HTTP API, as pydantic models."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.errors import ValidationError
from scheduler.model import Attempt, Post, PostStatus, to_utc

POST_ID_PATTERN = "^[0-9a-f]{32}$"
# An RFC 3339 date and time with a UTC offset, such as 2030-12-24T18:00:00+01:00.
# Pydantic's datetime would also take numbers as Unix times, which the spec does not list.
DATE_TIME_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$"
)

# A due time far enough ahead that the examples in the spec stay valid.
EXAMPLE_DUE_AT = "2099-12-24T18:00:00+01:00"


class PostUpdate(BaseModel):
    """Changes to a scheduled post, where omitted fields keep their value.

    As in a JSON merge patch (RFC 7396), ``link: null`` removes the link.
    The other fields cannot be removed, so null is rejected for them.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"content": "Doors open at 7", "due_at": EXAMPLE_DUE_AT}]
        },
    )

    content: str | None = Field(default=None, description="New text of the post")
    link: str | None = Field(
        default=None,
        description="New absolute http(s) URL, or null or an empty string to remove the link",
    )
    due_at: str | None = Field(
        default=None,
        description="New ISO 8601 due time with an offset, or without one plus timezone",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of due_at, given only with it: needed without an offset, and must have that offset when one is given",
    )


class PostOut(BaseModel):
    """A stored post and its publishing state, every time in UTC."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="Post id, 32 hex digits")
    target: str = Field(description="PUBLISHER:ACCOUNT")
    content: str
    link: str | None
    due_at: datetime
    timezone: str = Field(description="Zone the due time was written in")
    status: PostStatus
    attempts: int = Field(description="Attempts to publish the post so far")
    deliveries: int = Field(
        description="Deliveries to a publishing task that did not end cleanly"
    )
    last_error: str | None
    published_at: datetime | None
    external_id: str | None = Field(description="Id or URL of the post on the platform")
    attempt_id: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_post(cls, post: Post) -> PostOut:
        """Return the response body of ``post``."""
        return cls.model_validate(post)


class AttemptOut(BaseModel):
    """One attempt to publish a post."""

    model_config = ConfigDict(from_attributes=True)

    attempt_id: str
    started_at: datetime
    duration_ms: float
    worker: str
    outcome: str
    error: str | None

    @classmethod
    def from_attempt(cls, attempt: Attempt) -> AttemptOut:
        """Return the response body of ``attempt``."""
        return cls.model_validate(attempt)


class PostDetail(PostOut):
    """A stored post with the history of its publishing attempts, oldest first."""

    history: list[AttemptOut] = Field(description="Publishing attempts, oldest first")


class PostPage(BaseModel):
    """One page of posts, ordered by due time, then id."""

    posts: list[PostOut]
    next_cursor: str | None = Field(
        description="Cursor of the next page, or null on the last page"
    )


class SkippedRow(BaseModel):
    """An invalid CSV row, by 1-based line number."""

    line: int
    reason: str


class ImportResult(BaseModel):
    """Outcome of a CSV import."""

    imported: int = Field(description="Number of posts stored")
    ids: list[str] = Field(description="Ids of the stored posts, in file order")
    skipped: list[SkippedRow] = Field(
        description="Invalid rows left out, always empty without skip_invalid"
    )


class Health(BaseModel):
    """State of the store, the broker and the check chain."""

    status: Literal["ok", "unavailable"] = Field(
        description="ok when the store, the broker and Redis are reachable and no post is overdue without a live check"
    )
    store_reachable: bool
    broker_reachable: bool
    chain_alive: bool | None = Field(
        description="Whether a live check is recorded, or null when the store or Redis cannot be reached"
    )
    overdue: int | None = Field(
        description="Scheduled posts more than 5 s past their due time, or null when the store cannot be reached"
    )


def encode_cursor(post: Post) -> str:
    """Return the opaque cursor of the page that follows ``post``."""
    raw = json.dumps([post.due_at.isoformat(), post.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Return the (due time, id) that ``cursor`` encodes; raise ValidationError if it is invalid."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        due_text, post_id = json.loads(base64.urlsafe_b64decode(padded))
        due_at = datetime.fromisoformat(due_text)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise _invalid_cursor(cursor) from exc
    if due_at.utcoffset() is None or not isinstance(post_id, str):
        raise _invalid_cursor(cursor)
    try:
        # JSON may escape a lone surrogate, which no stored id contains.
        post_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid_cursor(cursor) from exc
    return to_utc(due_at, "cursor"), post_id


def _invalid_cursor(cursor: str) -> ValidationError:
    return ValidationError(
        "cursor",
        cursor,
        "not a cursor returned by this API",
        "pass the next_cursor of the previous page unchanged, or leave cursor out",
    )
