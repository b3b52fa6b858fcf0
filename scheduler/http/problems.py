"""Errors of the HTTP API as RFC 9457 problem details (``application/problem+json``).

Every error response has ``type`` (``about:blank``, so ``title`` is the
HTTP status phrase), ``title``, ``status``, ``detail`` (what failed and what
to do), ``instance`` (the request path) and ``code``, a stable name of the
error for programs. Invalid fields add ``errors``, one entry per field with
``field``, ``value``, ``reason`` and ``fix``; a rejected CSV import adds
``invalid_rows``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from scheduler.csv_import import CsvFileError
from scheduler.errors import (
    ImportFileError,
    InvalidStateError,
    PostNotFoundError,
    PostschedError,
    StoreUnavailableError,
    ValidationError,
)
from scheduler.http.models import DATE_TIME_PATTERN, POST_ID_PATTERN, SkippedRow

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Seconds a client should wait before retrying after the store was unreachable.
RETRY_AFTER_S = 5
SPEC_FIX = "see the request schema in the OpenAPI spec at /openapi.json"
# Reason and fix for a value that does not match one of these patterns, in
# place of pydantic's message, which quotes the regular expression.
PATTERN_ERRORS = {
    DATE_TIME_PATTERN: (
        "not a date and time with a UTC offset",
        "write it like '2026-12-07T09:00:00Z' or '2026-12-07T09:00:00+01:00'",
    ),
    POST_ID_PATTERN: (
        "not a post id",
        "use the 32 hex digit id that POST /posts or GET /posts returned",
    ),
}


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="Name of the field, dotted for nested fields")
    value: str = Field(description="The rejected value, shortened to 80 characters")
    reason: str = Field(description="What is wrong with the value")
    fix: str = Field(description="What to send instead")


class Problem(BaseModel):
    """An error response, as RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="Problem type URI")
    title: str = Field(description="HTTP status phrase")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What failed, and how to fix it")
    instance: str = Field(description="Path of the request that failed")
    code: str = Field(
        description="Stable name of the error: validation_error, invalid_body, "
        "import_rejected, not_found, invalid_state, store_unavailable, unauthorized, "
        "content_too_large, http_error or internal_error"
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Invalid fields, for validation_error"
    )
    invalid_rows: list[SkippedRow] | None = Field(
        default=None, description="Invalid CSV rows, for import_rejected"
    )


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Return a problem details response for ``request``."""
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
        **extensions,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return the OpenAPI ``responses`` entries of the problem statuses a route may send."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {}},
        }
        for status in statuses
    }


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error of ``app`` into problem details."""
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(ImportFileError, _import_rejected)
    app.add_exception_handler(CsvFileError, _unreadable_csv)
    app.add_exception_handler(PostNotFoundError, _not_found)
    app.add_exception_handler(InvalidStateError, _invalid_state)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    app.add_exception_handler(PostschedError, _internal_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


def _rejected(request: Request, status: int, message: str) -> None:
    logger.info(
        "rejected %s %s with %d: %s", request.method, request.url.path, status, message
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    _rejected(request, 422, str(exc))
    return problem_response(
        request,
        422,
        "validation_error",
        str(exc),
        errors=[FieldError(**exc.to_dict())],
    )


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(error) for error in exc.errors()]
    detail = "; ".join(f"invalid {error.field}: {error.reason}" for error in errors)
    _rejected(request, 422, detail)
    return problem_response(
        request,
        422,
        "validation_error",
        f"{detail}; {SPEC_FIX}",
        errors=errors,
    )


def _field_error(error: Any) -> FieldError:
    """Convert one pydantic error of a request into a FieldError."""
    location = [str(part) for part in error.get("loc", ())]
    if error.get("type") == "json_invalid":
        # The location is ("body", character offset), and the input is empty.
        offset = location[1] if len(location) > 1 else "?"
        detail = (error.get("ctx") or {}).get("error", "invalid JSON")
        return FieldError(
            field="body",
            value="",
            reason=f"not valid JSON at character {offset}: {detail}",
            fix="send one complete JSON object",
        )
    # The first part is where the field was: body, query, path or header.
    field = ".".join(location[1:]) or (location[0] if location else "request")
    reason, fix = error.get("msg", "invalid"), SPEC_FIX
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        reason, fix = PATTERN_ERRORS.get(pattern, (reason, fix))
    shortened = ValidationError(field, error.get("input"), reason, fix).to_dict()
    return FieldError(**shortened)


async def _import_rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImportFileError)
    detail = (
        f"{len(exc.errors)} invalid row(s) in {exc.path}, so nothing was imported; "
        "fix the rows listed in invalid_rows, or set skip_invalid to import the valid rows"
    )
    _rejected(request, 422, detail)
    rows = [SkippedRow(line=error.line, reason=error.reason) for error in exc.errors]
    return problem_response(request, 422, "import_rejected", detail, invalid_rows=rows)


async def _unreadable_csv(request: Request, exc: Exception) -> JSONResponse:
    _rejected(request, 422, str(exc))
    return problem_response(request, 422, "import_rejected", str(exc))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PostNotFoundError)
    detail = f"post {exc.post_id} not found; list the stored posts with GET /posts"
    _rejected(request, 404, detail)
    return problem_response(request, 404, "not_found", detail)


async def _invalid_state(request: Request, exc: Exception) -> JSONResponse:
    _rejected(request, 409, str(exc))
    return problem_response(request, 409, "invalid_state", str(exc))


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning(
        "%s %s failed, the store is unreachable: %s",
        request.method,
        request.url.path,
        exc,
    )
    return problem_response(
        request,
        503,
        "store_unavailable",
        f"{exc}; retry in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {400: "invalid_body", 401: "unauthorized", 413: "content_too_large"}
    detail = str(exc.detail)
    if exc.status_code == 400:
        # FastAPI raises 400 for a body that no parser can read, such as JSON that is not UTF-8.
        detail = f"{detail}; {SPEC_FIX.replace('see', 'send a body that matches', 1)}"
    # Starlette's own 404 and 405 carry only the status phrase.
    if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"no endpoint at {request.url.path}; the endpoints are listed in /openapi.json"
    if exc.status_code == 405 and detail == HTTPStatus.METHOD_NOT_ALLOWED.phrase:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    _rejected(request, exc.status_code, detail)
    return problem_response(
        request,
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        detail,
        headers=dict(exc.headers or {}),
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "%s %s failed with an unexpected error",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return problem_response(
        request,
        500,
        "internal_error",
        "the server failed to handle the request; the error is in the server's log",
    )
