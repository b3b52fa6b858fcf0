"""Short argument reprs for task messages and events, as Flower shows them.

Celery puts ``argsrepr`` in each message header and in the task-sent and
task-received events. Without it, the repr of the arguments is used, and for
the API tasks that would contain the whole content of a post. These reprs
name the post id and target and never the content.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery.worker.request import Request

from scheduler.model import Post

# Posts named in the repr of one publishing task; the rest are counted.
MAX_POSTS_IN_REPR = 3
# Cap on a value copied from a client's payload, such as an id or target.
MAX_VALUE_CHARS = 80
API_FIELDS = ("id", "target", "due_at", "timezone", "publish_now")


def check_argsrepr(due_at: datetime | None) -> str:
    """Describe a check task: the due time it runs for, or a keep-alive."""
    if due_at is None:
        return "keep-alive"
    return f"due_at={due_at.isoformat(timespec='milliseconds')}"


def publish_argsrepr(posts: Sequence[Post]) -> str:
    """Describe a publishing task by the id and target of its first posts."""
    named = [f"post={post.id} target={post.target}" for post in posts]
    if len(named) == 1:
        return named[0]
    shown = ", ".join(named[:MAX_POSTS_IN_REPR])
    hidden = len(named) - MAX_POSTS_IN_REPR
    more = f", and {hidden} more" if hidden > 0 else ""
    return f"{len(named)} posts: {shown}{more}"


def api_argsrepr(args: Any) -> str:
    """Describe an API task's payload by its id, target and due time, never its content."""
    payload = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
    if not isinstance(payload, dict):
        return f"<{type(args).__name__} payload>"
    parts = []
    for field in API_FIELDS:
        if field in payload:
            value = str(payload[field])[:MAX_VALUE_CHARS]
            name = "post" if field == "id" else field
            parts.append(f"{name}={value}")
    return " ".join(parts) or "<payload without id or target>"


class ApiRequest(Request):  # type: ignore[misc]
    """Worker-side request of an API task that keeps the payload's content out of events.

    The worker builds the task-received event from this request. The
    client's ``argsrepr`` header, missing or set by Celery to the repr of the
    whole payload, is ignored.
    """

    @property
    def argsrepr(self) -> str:
        """The payload's id, target and due time."""
        return api_argsrepr(self._args)

    @property
    def kwargsrepr(self) -> str:
        """The keyword arguments, which the API tasks do not take."""
        return "{}"
