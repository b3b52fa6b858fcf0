"""The FastAPI application of the HTTP API, built from postsched's settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pydantic
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.config import Settings, load_settings
from scheduler.errors import ConfigError
from scheduler.http import health
from scheduler.http.auth import check_token, token_dependency
from scheduler.http.health import ProbeLog
from scheduler.http.limits import BodySizeLimit
from scheduler.http.problems import PROBLEM_JSON, install_problem_handlers
from scheduler.http.routes import IMPORT_PATH, posts_router
from tasks.app import create_app

logger = logging.getLogger(__name__)

API_VERSION = "1"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Largest JSON body: a post's content, link and fields fit in far less.
MAX_JSON_BODY_BYTES = 1024 * 1024

DESCRIPTION = """\
Schedule, read, list, change and cancel posts, import CSV files and check
health. Errors are RFC 9457 problem details (`application/problem+json`).
When the server has a token (`POSTSCHED_HTTP_TOKEN`), every endpoint except
`GET /health` needs the header `Authorization: Bearer TOKEN`.
"""


class HttpSettings(BaseSettings):
    """Settings of the HTTP API, from ``POSTSCHED_HTTP_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="POSTSCHED_HTTP_", extra="ignore")

    token: SecretStr | None = None
    max_upload_bytes: int = Field(default=DEFAULT_MAX_UPLOAD_BYTES, gt=0)


def load_http_settings() -> HttpSettings:
    """Return the HTTP settings from the environment; raise ConfigError naming an invalid one."""
    try:
        http_settings = HttpSettings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"POSTSCHED_HTTP_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    check_token(http_settings.token)
    return http_settings


def build_api(
    http_settings: HttpSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Build the routes, error handlers and OpenAPI spec, without any connection.

    The app serves requests only once ``app.state.celery_app`` and
    ``app.state.probe_log`` are set, as :func:`create_http_app` does; the docs are generated from this app alone.
    """
    app = FastAPI(
        title="postsched",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
    )
    app.add_middleware(
        BodySizeLimit,
        default_max_bytes=MAX_JSON_BODY_BYTES,
        max_bytes_by_path={IMPORT_PATH: http_settings.max_upload_bytes},
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    auth = token_dependency(http_settings.token)
    app.include_router(posts_router(auth))
    app.openapi = lambda: _openapi_spec(app)  # type: ignore[method-assign]
    return app


def _openapi_spec(app: FastAPI) -> dict[str, Any]:
    """Return the OpenAPI spec of ``app``, problem responses as ``application/problem+json`` only.

    FastAPI documents a response model under ``application/json``, so the
    schema of each problem response moves to the media type actually sent.
    """
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path_item in spec["paths"].values():
            for operation in path_item.values():
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if PROBLEM_JSON in content and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = spec
    return app.openapi_schema


def create_http_app(
    settings: Settings | None = None, http_settings: HttpSettings | None = None
) -> FastAPI:
    """Create the HTTP API on the store and broker of ``settings``.

    Both default to the environment. Opens the store at once, so a wrong
    store URL raises ConfigError, and an unreachable store
    StoreUnavailableError, before the server listens. A token shorter than
    16 characters raises ConfigError. Like the command line, the API
    attaches to an embedded Redis but never starts one.
    """
    settings = settings or load_settings()
    http_settings = http_settings or load_http_settings()
    check_token(http_settings.token)
    celery_app = create_app(settings, start_embedded=False)
    store_url = celery_app.runtime.store.display_url
    # Creates the service, publishers and Redis client now: request threads
    # that raced to create them on first use would each build their own.
    celery_app.runtime.service  # noqa: B018

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "HTTP API started on the store at %s, token %s",
            store_url,
            "required" if http_settings.token else "not required",
        )
        yield
        celery_app.runtime.close()
        celery_app.close()
        logger.info("HTTP API stopped")

    app = build_api(http_settings, lifespan)
    app.state.celery_app = celery_app
    app.state.probe_log = ProbeLog()
    return app
