"""Fixtures on real components: a Redis server, SQLite stores and Celery workers.

Redis is the server at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``)
when it answers, otherwise an embedded one started for the session. Each test
gets the database flushed before and after it, and a key prefix of its own.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from scheduler.config import Settings
from scheduler.embedded import EmbeddedRedis
from scheduler.urls import redis_py_url
from tasks.app import PostschedCelery, create_app

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Celery URL of the Redis server the tests use."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            client.ping()
    except redis.RedisError:
        # A short folder, because a unix socket path must stay under 108 bytes.
        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="postsched-redis-")))
        embedded.ensure_running()
        yield embedded.url
        embedded.stop()
        return
    yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """Client of the test Redis database, flushed before and after the test."""
    client = redis.Redis.from_url(redis_py_url(redis_url))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Settings:
    """Settings for one test: its own SQLite file, outbox and key prefix."""
    return Settings(
        broker_url=redis_url,
        result_backend=redis_url,
        store_url=f"sqlite:///{tmp_path / 'posts.db'}",
        data_dir=tmp_path,
        outbox_dir=tmp_path / "outbox",
        key_prefix=f"test{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def celery_app(settings: Settings) -> Iterator[PostschedCelery]:
    """A postsched Celery app on the test Redis and store."""
    app = create_app(settings)
    # Keeps pytest's log capture: a worker that hijacks the root logger drops its handler.
    app.conf.worker_hijack_root_logger = False
    yield app
    app.runtime.close()
    app.close()


@pytest.fixture
def worker(celery_app: PostschedCelery) -> Iterator[object]:
    """An in-process Celery worker with a thread pool."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="INFO",
    ) as started:
        yield started
