"""Request body size limits of the HTTP API, rejected with 413 problem details."""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.http.problems import problem_response

logger = logging.getLogger(__name__)


class BodySizeLimit:
    """ASGI middleware that rejects a request whose body is larger than its path allows.

    A declared Content-Length over the limit is rejected before the body is
    read. A body without one (chunked) is counted as it arrives, and the
    read that crosses the limit raises HTTPException 413, so the endpoint
    stops before it changes anything.
    """

    def __init__(
        self, app: ASGIApp, *, default_max_bytes: int, max_bytes_by_path: dict[str, int]
    ) -> None:
        self.app = app
        self.default_max_bytes = default_max_bytes
        self.max_bytes_by_path = max_bytes_by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes_by_path.get(scope["path"], self.default_max_bytes)
        detail = (
            f"the request body is larger than the limit of {max_bytes:,} bytes for "
            f"{scope['path']}; send a smaller body"
        )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            request = Request(scope)
            logger.info(
                "rejected %s %s with 413: Content-Length %s over %d",
                request.method,
                request.url.path,
                declared,
                max_bytes,
            )
            response = problem_response(request, 413, "content_too_large", detail)
            await response(scope, receive, send)
            return

        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, receive_within_limit, send)
