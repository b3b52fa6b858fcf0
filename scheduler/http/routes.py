"""Endpoints of the HTTP API for posts: create, read, list, update, cancel and import."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from typing import IO, Annotated, Literal

from fastapi import (
    APIRouter,
    Body,
    Depends,
    File,
    Form,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)

from scheduler.api import SchedulePost, schedule_from_payload
from scheduler.csv_import import DEFAULT_TARGET
from scheduler.errors import ValidationError
from scheduler.http.models import (
    DATE_TIME_PATTERN,
    EXAMPLE_DUE_AT,
    POST_ID_PATTERN,
    AttemptOut,
    ImportResult,
    PostDetail,
    PostOut,
    PostPage,
    PostUpdate,
    SkippedRow,
    decode_cursor,
    encode_cursor,
)
from scheduler.http.problems import problem_responses
from scheduler.model import MAX_TARGET_LENGTH, PostStatus, to_utc
from scheduler.service import PostService

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
IMPORT_PATH = "/posts/import"

PostId = Annotated[
    str, Path(pattern=POST_ID_PATTERN, description="Post id, 32 hex digits")
]


def get_service(request: Request) -> PostService:
    """Return the PostService of the app that serves ``request``."""
    service: PostService = request.app.state.celery_app.runtime.service
    return service


Service = Annotated[PostService, Depends(get_service)]

SCHEDULE_EXAMPLE = {
    "target": "outbox:main",
    "content": "Doors open at 6",
    "due_at": EXAMPLE_DUE_AT,
    "link": "https://example.org/doors",
}


class UploadText(io.TextIOWrapper):
    """An uploaded file read as UTF-8 text, named as the client named it.

    Bytes that are not UTF-8 become lone surrogates, as when the CSV import
    reads a file, so the import reports them by line instead of failing.
    """

    def __init__(self, buffer: IO[bytes], name: str) -> None:
        super().__init__(
            buffer,  # type: ignore[arg-type]
            encoding="utf-8",
            errors="surrogateescape",
            newline="",
        )
        self._upload_name = name

    @property
    def name(self) -> str:  # type: ignore[override]
        """File name that the client sent, for messages."""
        return self._upload_name


def posts_router(auth: Callable[..., None]) -> APIRouter:
    """Return the router of the post endpoints, each guarded by the ``auth`` dependency."""
    router = APIRouter(
        prefix="/posts",
        tags=["posts"],
        dependencies=[Depends(auth)],
        responses=problem_responses(401, 422, 503),
    )
    router.add_api_route(
        "",
        create_post,
        methods=["POST"],
        status_code=201,
        response_model=PostOut,
        responses=problem_responses(400),
        summary="Schedule a post",
    )
    router.add_api_route(
        "",
        list_posts,
        methods=["GET"],
        response_model=PostPage,
        summary="List posts",
    )
    router.add_api_route(
        IMPORT_PATH.removeprefix("/posts"),
        import_posts,
        methods=["POST"],
        response_model=ImportResult,
        responses=problem_responses(400, 413),
        dependencies=[Depends(reject_repeated_fields)],
        summary="Import posts from a CSV file",
    )
    router.add_api_route(
        "/{post_id}",
        get_post,
        methods=["GET"],
        response_model=PostDetail,
        responses=problem_responses(404),
        summary="Read a post and its attempts",
    )
    router.add_api_route(
        "/{post_id}",
        update_post,
        methods=["PATCH"],
        response_model=PostOut,
        responses=problem_responses(400, 404, 409),
        summary="Change a scheduled post",
    )
    router.add_api_route(
        "/{post_id}/cancel",
        cancel_post,
        methods=["POST"],
        response_model=PostOut,
        responses=problem_responses(404, 409),
        summary="Cancel a scheduled post",
    )
    return router


def create_post(
    body: Annotated[SchedulePost, Body(examples=[SCHEDULE_EXAMPLE])],
    service: Service,
    request: Request,
    response: Response,
) -> PostOut:
    """Validate and store one post, due at `due_at` or, with `publish_now`, at once.

    A due time more than 5 s in the past is rejected. The post is stored
    before the check chain is woken, so a broker that cannot be reached
    delays publishing but loses nothing.
    """
    post = schedule_from_payload(service, body)
    response.headers["Location"] = str(request.url_for("get_post", post_id=post.id))
    return PostOut.from_post(post)


def list_posts(
    service: Service,
    status: Annotated[
        PostStatus | None, Query(description="Only posts in this status")
    ] = None,
    target: Annotated[
        str | None,
        Query(max_length=MAX_TARGET_LENGTH, description="Only posts to this target"),
    ] = None,
    due_after: Annotated[
        str | None,
        Query(
            pattern=DATE_TIME_PATTERN,
            description="Only posts due at or after this time, RFC 3339 with offset",
        ),
    ] = None,
    due_before: Annotated[
        str | None,
        Query(
            pattern=DATE_TIME_PATTERN,
            description="Only posts due before this time, RFC 3339 with offset",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="next_cursor of the previous page"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Maximum posts on the page")
    ] = DEFAULT_PAGE_SIZE,
) -> PostPage:
    """List posts ordered by due time, then id, one page at a time."""
    if target is not None and "\x00" in target:
        raise ValidationError(
            "target",
            target,
            "contains a NUL character",
            "remove the NUL (%00) characters",
        )
    after = decode_cursor(cursor) if cursor is not None else None
    # One post more than the page shows whether another page follows.
    posts = service.list_posts(
        status=status,
        target=target,
        due_after=parse_bound(due_after, "due_after"),
        due_before=parse_bound(due_before, "due_before"),
        after=after,
        limit=limit + 1,
    )
    page = posts[:limit]
    next_cursor = encode_cursor(page[-1]) if len(posts) > limit else None
    return PostPage(
        posts=[PostOut.from_post(post) for post in page], next_cursor=next_cursor
    )


def parse_bound(value: str | None, field: str) -> datetime | None:
    """Return the UTC datetime of a list filter, or None; raise ValidationError if it is invalid."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(
            field,
            value,
            "not a date and time",
            "write it like '2030-12-24T18:00:00+01:00'",
        ) from exc
    return to_utc(moment, field)


def get_post(post_id: PostId, service: Service) -> PostDetail:
    """Return a post and the history of its publishing attempts."""
    post, attempts = service.show(post_id)
    return PostDetail(
        **PostOut.from_post(post).model_dump(),
        history=[AttemptOut.from_attempt(attempt) for attempt in attempts],
    )


def update_post(post_id: PostId, body: PostUpdate, service: Service) -> PostOut:
    """Change the content, link or due time of a scheduled post, in one write.

    Every field is validated before the write, so an invalid field changes
    nothing. A post that is no longer scheduled is rejected with 409.
    """
    for field in ("content", "due_at", "timezone"):
        if field in body.model_fields_set and getattr(body, field) is None:
            raise ValidationError(
                field, None, "null is not allowed", f"leave {field} out to keep it"
            )
    link = body.link
    if "link" in body.model_fields_set and link is None:
        link = ""
    post = service.update(
        post_id,
        content=body.content,
        link=link,
        due_at=body.due_at,
        timezone=body.timezone,
    )
    return PostOut.from_post(post)


def cancel_post(post_id: PostId, service: Service) -> PostOut:
    """Cancel a scheduled post. It stays readable, with status `cancelled`."""
    return PostOut.from_post(service.cancel(post_id))


async def reject_repeated_fields(request: Request) -> None:
    """Raise ValidationError for a form field sent more than once, whose other values would be dropped."""
    form = await request.form()
    for name in form:
        values = form.getlist(name)
        if len(values) > 1:
            raise ValidationError(
                name,
                [value if isinstance(value, str) else "<file>" for value in values],
                f"given {len(values)} times",
                "send each form field once",
            )


def import_posts(
    service: Service,
    file: Annotated[UploadFile, File(description="CSV file, UTF-8")],
    target: Annotated[
        str, Form(max_length=MAX_TARGET_LENGTH, description="Target of every bulk row")
    ] = DEFAULT_TARGET,
    date_format: Annotated[
        Literal["ymd", "mdy", "dmy"], Form(description="Date order of bulk rows")
    ] = "ymd",
    tz: Annotated[
        str | None,
        Form(max_length=64, description="IANA zone of times written without offset"),
    ] = None,
    skip_invalid: Annotated[
        bool, Form(description="Import the valid rows and report the invalid ones")
    ] = False,
) -> ImportResult:
    """Import a CSV file of posts in the bulk or header format, all rows or none.

    Without `skip_invalid`, a file with an invalid row is rejected with every
    invalid row listed, and nothing is stored.
    """
    stream = UploadText(file.file, file.filename or "upload.csv")
    try:
        report = service.import_csv(
            stream,
            skip_invalid=skip_invalid,
            target=target,
            date_format=date_format,
            tz=tz,
        )
    finally:
        # FastAPI closes the upload's file itself, so the wrapper detaches instead of closing it.
        stream.detach()
    return ImportResult(
        imported=len(report.posts),
        ids=[post.id for post in report.posts],
        skipped=[SkippedRow(line=row.line, reason=row.reason) for row in report.errors],
    )
