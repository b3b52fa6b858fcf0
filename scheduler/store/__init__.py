"""Post stores, chosen by URL: SQL through SQLAlchemy Core, or MongoDB."""

from __future__ import annotations

from scheduler.errors import ConfigError
from scheduler.store.base import Store
from scheduler.urls import mask_url

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
MONGO_SCHEMES = ("mongodb", "mongodb+srv")


def open_store(
    url: str, *, connect_timeout_s: float = 5.0, write_concern: str | int = "majority"
) -> Store:
    """Open the store at ``url``; raise ConfigError for an unsupported scheme.

    ``connect_timeout_s`` bounds the wait for an unreachable server, and
    ``write_concern`` is MongoDB's ``w`` for every write.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in SQL_SCHEMES:
        from scheduler.store.sql import SqlStore

        return SqlStore(url, connect_timeout_s=connect_timeout_s)
    if scheme in MONGO_SCHEMES:
        from scheduler.store.mongo import MongoStore

        return MongoStore(
            url,
            server_selection_timeout_ms=int(connect_timeout_s * 1000),
            write_concern=write_concern,
        )
    supported = ", ".join(SQL_SCHEMES + MONGO_SCHEMES)
    raise ConfigError(
        f"unsupported store URL {mask_url(url)!r}: the scheme must be one of {supported}; "
        "set POSTSCHED_STORE_URL like sqlite:///PATH, postgresql://USER@HOST/DB or mongodb://HOST/DB"
    )
