"""Post stores, chosen by URL: SQL through SQLAlchemy Core, or MongoDB."""

from __future__ import annotations

from scheduler.errors import ConfigError
from scheduler.store.base import Store
from scheduler.urls import mask_url

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
MONGO_SCHEMES = ("mongodb", "mongodb+srv")


def open_store(url: str) -> Store:
    """Open the store at ``url``; raise ConfigError for an unsupported scheme."""
    scheme = url.partition("://")[0].lower()
    if scheme in SQL_SCHEMES:
        from scheduler.store.sql import SqlStore

        return SqlStore(url)
    if scheme in MONGO_SCHEMES:
        from scheduler.store.mongo import MongoStore

        return MongoStore(url)
    raise ConfigError(
        f"unsupported store URL {mask_url(url)!r}; use sqlite:///PATH, postgresql://USER@HOST/DB "
        "or mongodb://HOST/DB in POSTSCHED_STORE_URL"
    )
