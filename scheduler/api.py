"""The Celery task API: payloads, validation and replies, for callers in any language.

A caller sends a task by name with one JSON object as its only argument:

    app.send_task("postsched.schedule_post", args=[{"target": "outbox:main", ...}])

and gets back ``{"ok": true, "post": {...}}`` or ``{"ok": false, "error":
{"field": ..., "value": ..., "reason": ..., "fix": ...}}``. The JSON Schema
of each payload is in ``docs/schemas``; ``python -m scheduler.api DIR``
writes them from the models below.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from scheduler.errors import InvalidStateError, PostNotFoundError, ValidationError
from scheduler.model import Post, post_to_dict
from scheduler.service import PostService

SCHEDULE_POST = "postsched.schedule_post"
CANCEL_POST = "postsched.cancel_post"
RESCHEDULE_POST = "postsched.reschedule_post"
GET_POST = "postsched.get_post"


class Payload(BaseModel):
    """Base of the payloads: unknown fields are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid")


class SchedulePost(Payload):
    """Schedule one post."""

    target: str = Field(description="PUBLISHER:ACCOUNT, such as outbox:main")
    content: str = Field(description="Text of the post")
    due_at: str | None = Field(
        default=None,
        description="ISO 8601 due time with an offset, or without one plus timezone; omit with publish_now",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of due_at: needed without an offset, and must have that offset when one is given",
    )
    link: str | None = Field(
        default=None, description="Absolute http(s) URL published with the post"
    )
    publish_now: bool = Field(
        default=False, description="Publish at once instead of at due_at"
    )


class PostId(Payload):
    """Name one post by id."""

    id: str = Field(description="Post id, 32 hex digits")


class ReschedulePost(Payload):
    """Move a scheduled post to another due time."""

    id: str = Field(description="Post id, 32 hex digits")
    due_at: str = Field(description="New ISO 8601 due time")
    timezone: str | None = Field(
        default=None,
        description="IANA zone of due_at: needed without an offset, and must have that offset when one is given",
    )


PAYLOADS: dict[str, type[Payload]] = {
    SCHEDULE_POST: SchedulePost,
    CANCEL_POST: PostId,
    RESCHEDULE_POST: ReschedulePost,
    GET_POST: PostId,
}


def handle(name: str, payload: object, service: PostService) -> dict[str, Any]:
    """Validate ``payload`` for task ``name``, run it and return the reply."""
    model = PAYLOADS[name]
    try:
        request = model.model_validate(payload)
        post = _OPERATIONS[name](service, request)
    except pydantic.ValidationError as exc:
        return _error_reply(_first_pydantic_error(exc))
    except ValidationError as exc:
        return _error_reply(exc.to_dict())
    except PostNotFoundError as exc:
        return _error_reply(
            {
                "field": "id",
                "value": exc.post_id,
                "reason": "no post has this id",
                "fix": "use the id that postsched.schedule_post returned",
            }
        )
    except InvalidStateError as exc:
        return _error_reply(
            {
                "field": "id",
                "value": str(getattr(exc, "post_id", "")),
                "reason": str(exc),
                "fix": "read the post's status with postsched.get_post",
            }
        )
    return {"ok": True, "post": post_to_dict(post)}


def schedule_from_payload(service: PostService, request: SchedulePost) -> Post:
    """Schedule the post that ``request`` describes, due at ``due_at`` or now.

    Raises ValidationError unless exactly one of ``due_at`` and
    ``publish_now`` is given.
    """
    if request.publish_now == (request.due_at is not None):
        raise ValidationError(
            "due_at",
            request.due_at,
            "give exactly one of due_at and publish_now",
            "set one",
        )
    return service.schedule(
        target=request.target,
        content=request.content,
        due_at=request.due_at,
        timezone=request.timezone,
        link=request.link,
        publish_now=request.publish_now,
    )


_OPERATIONS: dict[str, Callable[[PostService, Any], Post]] = {
    SCHEDULE_POST: schedule_from_payload,
    CANCEL_POST: lambda service, request: service.cancel(request.id),
    RESCHEDULE_POST: lambda service, request: service.reschedule(
        request.id, request.due_at, request.timezone
    ),
    GET_POST: lambda service, request: service.store.get(request.id),
}


def wrong_arguments_reply(
    name: str, args: tuple[object, ...], kwargs: dict[str, object]
) -> dict[str, Any]:
    """Return the error reply to task ``name`` sent with other arguments than one payload."""
    return _error_reply(
        ValidationError(
            "payload",
            {"args": list(args), "kwargs": kwargs},
            f"{name} takes one JSON object as its only argument, "
            f"got {len(args)} positional and {len(kwargs)} keyword argument(s)",
            "send args=[payload], with the payload described in docs/schemas",
        ).to_dict()
    )


def _error_reply(error: dict[str, str]) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _first_pydantic_error(exc: pydantic.ValidationError) -> dict[str, str]:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "payload"
    return ValidationError(
        field,
        error.get("input"),
        error["msg"],
        "see the payload's JSON Schema in docs/schemas",
    ).to_dict()


def write_schemas(folder: Path) -> list[Path]:
    """Write one JSON Schema file per task payload into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in PAYLOADS.items():
        schema = model.model_json_schema()
        schema["title"] = name
        path = folder / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(
        Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    ):
        print(written_path)
