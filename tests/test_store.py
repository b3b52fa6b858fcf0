"""One contract suite, run over every store backend.

SQLite always runs. PostgreSQL runs on the server at ``POSTGRES_URL`` in a
schema of its own, and is skipped with the reason when the server does not
answer, unless ``POSTGRES_REQUIRED=1`` (set by CI where PostgreSQL is
installed) turns the skip into a failure. MongoDB runs on mongomock here, and
on a real server only when ``MONGODB_URI`` is set.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.errors import (
    ConfigError,
    InvalidStateError,
    PostNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from scheduler.model import Attempt, Post, PostStatus, utc_now
from scheduler.publishers.base import PublishResult
from scheduler.publishing import publish_claimed
from scheduler.store import open_store
from scheduler.store.base import Store
from scheduler.store.mongo import MongoStore
from scheduler.store.sql import SqlStore

POSTGRES_URL = os.environ.get(
    "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MONGODB_URI = os.environ.get("MONGODB_URI")
LEASE = timedelta(seconds=60)


def postgres_schema() -> Iterator[tuple[str, str]]:
    """Create a fresh schema on the test server; yield the URL and schema name."""
    schema = f"postsched_test_{uuid.uuid4().hex[:12]}"
    url = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        reason = f"PostgreSQL at {POSTGRES_URL} does not answer: {str(exc.orig).splitlines()[0]}"
        if os.environ.get("POSTGRES_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield POSTGRES_URL, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def open_backend(kind: str, tmp_path: Path, postgres: tuple[str, str] | None) -> Store:
    if kind == "sqlite":
        return SqlStore(f"sqlite:///{tmp_path / 'posts.db'}")
    if kind == "postgresql":
        assert postgres is not None
        url, schema = postgres
        return SqlStore(url, schema=schema)
    if kind == "mongomock":
        import mongomock

        return MongoStore(
            "mongodb://127.0.0.1/postsched", client=mongomock.MongoClient(tz_aware=True)
        )
    if MONGODB_URI is None:
        pytest.skip(
            "set MONGODB_URI to run the contract suite on a real MongoDB server"
        )
    store = MongoStore(
        MONGODB_URI.rstrip("/") + f"/postsched_test_{uuid.uuid4().hex[:8]}"
    )
    return store


@pytest.fixture(params=["sqlite", "postgresql", "mongomock", "mongodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgresql":
        schemas = postgres_schema()
        postgres = next(schemas)
        backend = open_backend("postgresql", tmp_path, postgres)
        yield backend
        backend.close()
        next(schemas, None)
        return
    backend = open_backend(request.param, tmp_path, None)
    yield backend
    if request.param == "mongodb":
        backend._client.drop_database(backend._posts.database.name)  # type: ignore[attr-defined]
    backend.close()


def make_post(due_in_s: float = -1.0, **fields: object) -> Post:
    now = utc_now()
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "target": "outbox:main",
        "content": "Doors open at six",
        "due_at": now + timedelta(seconds=due_in_s),
        "timezone": "Europe/Berlin",
        "created_at": now,
        "updated_at": now,
    }
    values.update(fields)
    return Post(**values)  # type: ignore[arg-type]


def test_add_get_round_trip(store: Store) -> None:
    post = make_post(link="https://example.org/x")
    store.add([post])
    assert store.get(post.id) == post


def test_datetimes_come_back_utc_aware(store: Store) -> None:
    post = make_post()
    store.add([post])
    loaded = store.get(post.id)
    assert loaded.due_at.tzinfo is not None
    assert loaded.due_at.utcoffset() == timedelta(0)
    assert loaded.due_at < datetime.now(UTC)


def test_add_duplicate_adds_nothing(store: Store) -> None:
    existing = make_post()
    store.add([existing])
    fresh = make_post()
    with pytest.raises(StoreError, match=existing.id):
        store.add([fresh, make_post(id=existing.id)])
    with pytest.raises(PostNotFoundError):
        store.get(fresh.id)
    assert store.get(existing.id) == existing


def test_get_unknown_raises(store: Store) -> None:
    with pytest.raises(PostNotFoundError, match="nope"):
        store.get("nope")


def test_list_filters_and_orders(store: Store) -> None:
    late = make_post(due_in_s=50)
    early = make_post(due_in_s=10, target="outbox:other")
    done = make_post(due_in_s=20, status=PostStatus.PUBLISHED)
    store.add([late, early, done])
    assert [p.id for p in store.list_posts()] == [early.id, done.id, late.id]
    assert [p.id for p in store.list_posts(status=PostStatus.SCHEDULED)] == [
        early.id,
        late.id,
    ]
    assert [p.id for p in store.list_posts(target="outbox:other")] == [early.id]
    assert [p.id for p in store.list_posts(ids=[late.id, done.id])] == [
        done.id,
        late.id,
    ]
    assert len(store.list_posts(limit=1)) == 1


def test_cancel_scheduled(store: Store) -> None:
    post = make_post(due_in_s=60)
    store.add([post])
    cancelled = store.cancel(post.id, utc_now())
    assert cancelled.status is PostStatus.CANCELLED
    assert store.get(post.id).status is PostStatus.CANCELLED


@pytest.mark.parametrize(
    "status", [PostStatus.PUBLISHING, PostStatus.PUBLISHED, PostStatus.CANCELLED]
)
def test_cancel_other_status_rejected(store: Store, status: PostStatus) -> None:
    post = make_post(status=status)
    store.add([post])
    with pytest.raises(InvalidStateError, match=str(status)):
        store.cancel(post.id, utc_now())
    assert store.get(post.id) == post


def test_claim_takes_due_earliest_first(store: Store) -> None:
    first = make_post(due_in_s=-30)
    second = make_post(due_in_s=-1)
    future = make_post(due_in_s=3600)
    store.add([second, future, first])
    now = utc_now()
    claimed = store.claim_due(now, 10, "attempt-1", now + LEASE)
    assert [p.id for p in claimed] == [first.id, second.id]
    assert all(p.status is PostStatus.PUBLISHING for p in claimed)
    assert all(p.attempt_id == "attempt-1" for p in claimed)
    assert all(p.lease_until == now + LEASE for p in claimed)
    assert all(p.attempts == 1 for p in claimed)
    assert store.get(future.id).status is PostStatus.SCHEDULED


def test_claim_honours_limit(store: Store) -> None:
    store.add([make_post(due_in_s=-i) for i in range(1, 41)])
    now = utc_now()
    assert len(store.claim_due(now, 2, "a", now + LEASE)) == 2
    assert len(store.claim_due(now, 50, "b", now + LEASE)) == 38


def test_claim_twice_returns_nothing(store: Store) -> None:
    store.add([make_post()])
    now = utc_now()
    store.claim_due(now, 10, "a", now + LEASE)
    assert store.claim_due(now, 10, "b", now + LEASE) == []


def test_claim_skips_other_statuses(store: Store) -> None:
    store.add(
        [
            make_post(status=status)
            for status in PostStatus
            if status is not PostStatus.SCHEDULED
        ]
    )
    now = utc_now()
    assert store.claim_due(now, 10, "a", now + LEASE) == []


def test_mark_published_needs_attempt(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    store.claim_due(now, 10, "right", now + LEASE)
    assert not store.mark_published(post.id, "wrong", now, "ext-1")
    assert store.get(post.id).status is PostStatus.PUBLISHING
    assert store.mark_published(post.id, "right", now, "ext-1")
    published = store.get(post.id)
    assert published.status is PostStatus.PUBLISHED
    assert published.external_id == "ext-1"
    assert published.published_at == now
    assert not store.mark_published(post.id, "right", now, "ext-2")


def test_mark_failed_needs_attempt(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    store.claim_due(now, 10, "right", now + LEASE)
    assert not store.mark_failed(post.id, "wrong", "boom", now)
    assert store.mark_failed(post.id, "right", "platform said no", now)
    failed = store.get(post.id)
    assert failed.status is PostStatus.FAILED
    assert failed.last_error == "platform said no"


def test_next_due_ignores_other_statuses(store: Store) -> None:
    assert store.next_due_at() is None
    soon = make_post(due_in_s=5)
    store.add(
        [
            make_post(due_in_s=1, status=PostStatus.CANCELLED),
            soon,
            make_post(due_in_s=50),
        ]
    )
    assert store.next_due_at() == soon.due_at


def test_count_by_status(store: Store) -> None:
    store.add([make_post(), make_post(), make_post(status=PostStatus.FAILED)])
    assert store.count_by_status() == {PostStatus.SCHEDULED: 2, PostStatus.FAILED: 1}


def _claim_until_empty(
    url: str, schema: str | None, queue: multiprocessing.Queue[list[str]]
) -> None:
    store = SqlStore(url, schema=schema)
    mine: list[str] = []
    while True:
        now = datetime.now(UTC)
        batch = store.claim_due(now, 25, uuid.uuid4().hex, now + LEASE)
        if not batch:
            break
        mine.extend(post.id for post in batch)
    store.close()
    queue.put(mine)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_eight_processes_claim_each_post_once(kind: str, tmp_path: Path) -> None:
    if kind == "postgresql":
        schemas = postgres_schema()
        url, schema = next(schemas)
    else:
        url, schema = f"sqlite:///{tmp_path / 'posts.db'}", None
    store = SqlStore(url, schema=schema)
    posts = [make_post(due_in_s=-1) for _ in range(1000)]
    store.add(posts)
    store.close()

    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    workers = [
        context.Process(target=_claim_until_empty, args=(url, schema, queue))
        for _ in range(8)
    ]
    for process in workers:
        process.start()
    claimed = [post_id for _ in workers for post_id in queue.get(timeout=120)]
    for process in workers:
        process.join(timeout=30)
    if kind == "postgresql":
        next(schemas, None)

    assert len(claimed) == len(posts)
    assert set(claimed) == {post.id for post in posts}


def test_unreachable_postgres_is_unavailable() -> None:
    url = "postgresql://postsched:s3cret-pass@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailableError) as caught:
        SqlStore(url)
    message = str(caught.value)
    assert "postsched:***@127.0.0.1:1/test" in message
    assert "s3cret-pass" not in message


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ConfigError, match="redis://user:\\*\\*\\*@127.0.0.1/0"):
        open_store("redis://user:pw@127.0.0.1/0")


def test_unknown_postgres_role_is_unavailable() -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        SqlStore(
            "postgresql://no_such_role_postsched:pw@127.0.0.1:5432/test",
            connect_timeout_s=3,
        )
    message = str(caught.value)
    assert "no_such_role_postsched:***@127.0.0.1:5432/test" in message
    assert "POSTSCHED_STORE_URL" in message


def test_invalid_sql_url_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid store URL"):
        SqlStore("postgresql://user:pw@127.0.0.1:notaport/test")


def test_unreachable_mongodb_is_unavailable() -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        MongoStore(
            "mongodb://admin:hunter2@127.0.0.1:1/postsched",
            server_selection_timeout_ms=300,
        )
    message = str(caught.value)
    assert "admin:***@127.0.0.1:1/postsched" in message
    assert "hunter2" not in message


def test_invalid_mongodb_url_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid store URL"):
        MongoStore("mongodb://127.0.0.1:99999999/postsched")


def test_sqlite_missing_parent_created(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'a' / 'b' / 'posts.db'}")
    store.close()
    assert (tmp_path / "a" / "b" / "posts.db").exists()


class SlowCountingPublisher:
    """A publisher that takes a while and counts the calls per post id."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def for_target(self, target: str) -> SlowCountingPublisher:
        return self

    def publish(self, post: Post) -> PublishResult:
        time.sleep(0.005)
        with self.lock:
            self.calls[post.id] += 1
        return PublishResult(published_at=utc_now(), external_id=f"ext-{post.id}")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_racing_checks_publish_once(kind: str, tmp_path: Path) -> None:
    schemas = postgres_schema() if kind == "postgresql" else None
    url, schema = (
        next(schemas) if schemas else (f"sqlite:///{tmp_path / 'posts.db'}", None)
    )
    posts = [make_post(due_in_s=-1) for _ in range(200)]
    setup = SqlStore(url, schema=schema)
    setup.add(posts)
    setup.close()
    publisher = SlowCountingPublisher()

    def check_loop() -> None:
        store = SqlStore(url, schema=schema)
        while True:
            now = utc_now()
            attempt_id = uuid.uuid4().hex
            claimed = store.claim_due(now, 10, attempt_id, now + LEASE)
            if not claimed:
                break
            publish_claimed(store, publisher, attempt_id, [post.id for post in claimed])  # type: ignore[arg-type]
        store.close()

    threads = [threading.Thread(target=check_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    verify = SqlStore(url, schema=schema)
    statuses = Counter(post.status for post in verify.list_posts(limit=None))
    verify.close()
    if schemas:
        next(schemas, None)

    assert set(publisher.calls) == {post.id for post in posts}
    assert max(publisher.calls.values()) == 1
    assert statuses == {PostStatus.PUBLISHED: len(posts)}


def test_sweep_reschedules_expired_lease(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    store.claim_due(now, 10, "dead-task", now + timedelta(seconds=1))
    assert store.sweep_expired(now, max_attempts=3).total == 0
    result = store.sweep_expired(now + timedelta(seconds=2), max_attempts=3)
    assert result.rescheduled == 1
    swept = store.get(post.id)
    assert swept.status is PostStatus.SCHEDULED
    assert swept.attempt_id is None
    assert not store.mark_published(post.id, "dead-task", now, "ext")


def test_sweep_fails_after_max_attempts(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    for attempt in range(2):
        store.claim_due(now, 10, f"attempt-{attempt}", now)
        store.sweep_expired(now + timedelta(seconds=1), max_attempts=2)
    failed = store.get(post.id)
    assert failed.status is PostStatus.FAILED
    assert failed.attempts == 2
    assert "lease expired" in (failed.last_error or "")


def test_sweep_keeps_live_leases(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    store.claim_due(now, 10, "alive", now + LEASE)
    assert store.sweep_expired(now + timedelta(seconds=1), max_attempts=3).total == 0
    assert store.get(post.id).status is PostStatus.PUBLISHING


def test_sweep_publishes_post_with_external_id(store: Store) -> None:
    now = utc_now()
    post = make_post(
        status=PostStatus.PUBLISHING,
        attempt_id="died-after-send",
        lease_until=now - timedelta(seconds=1),
        external_id="platform-42",
        attempts=1,
    )
    store.add([post])
    result = store.sweep_expired(now, max_attempts=3)
    assert result.published == 1
    assert store.get(post.id).status is PostStatus.PUBLISHED


def test_begin_delivery_counts(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    store.claim_due(now, 10, "right", now + LEASE)
    first = store.begin_delivery(post.id, "right")
    second = store.begin_delivery(post.id, "right")
    assert first is not None
    assert first.deliveries == 1
    assert second is not None
    assert second.deliveries == 2
    assert store.begin_delivery(post.id, "wrong") is None


def test_update_where_checks_status(store: Store) -> None:
    post = make_post(due_in_s=60)
    store.add([post])
    later = post.due_at + timedelta(hours=1)
    moved = store.update_where(
        post.id, {PostStatus.SCHEDULED}, "reschedule", {"due_at": later}
    )
    assert moved.due_at == later
    with pytest.raises(
        InvalidStateError,
        match="cannot retry post .* it is scheduled, and only failed or unconfirmed",
    ):
        store.update_where(
            post.id,
            {PostStatus.FAILED, PostStatus.UNCONFIRMED},
            "retry",
            {"due_at": later},
        )


def test_attempt_history_round_trip(store: Store) -> None:
    now = utc_now()
    first = Attempt("p1", "a1", now, 12.5, "host:1", "retried", "503")
    second = Attempt("p1", "a2", now + timedelta(seconds=5), 3.0, "host:2", "published")
    store.add_attempt(second)
    store.add_attempt(first)
    store.add_attempt(Attempt("p2", "a3", now, 1.0, "host:1", "published"))
    assert store.list_attempts("p1") == [first, second]


def test_mark_missed_only_past_grace(store: Store) -> None:
    old = make_post(due_in_s=-7200)
    recent = make_post(due_in_s=-60)
    done = make_post(due_in_s=-7200, status=PostStatus.PUBLISHED)
    store.add([old, recent, done])
    now = utc_now()
    assert store.mark_missed(now - timedelta(hours=1), now) == 1
    missed = store.get(old.id)
    assert missed.status is PostStatus.MISSED
    assert "postsched retry" in (missed.last_error or "")
    assert store.get(recent.id).status is PostStatus.SCHEDULED
    assert store.get(done.id).status is PostStatus.PUBLISHED
