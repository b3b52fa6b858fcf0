"""Helpers for the service URLs in settings."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from scheduler.errors import ConfigError


def mask_url(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    credentials, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_py_url(url: str) -> str:
    """Return the redis-py form of a Celery Redis URL; raise ConfigError for other schemes."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return url
    raise ConfigError(
        f"the result backend {mask_url(url)!r} is not Redis; postsched records its check chain in the "
        "result backend, so set POSTSCHED_RESULT_BACKEND to a redis:// URL"
    )


def is_redis_url(url: str) -> bool:
    """Return whether ``url`` points at a Redis server."""
    return url.startswith(("redis://", "rediss://", "redis+socket://", "unix://"))
