"""One contract suite, run over every store backend.

SQLite always runs. PostgreSQL runs on the server at ``POSTGRES_URL`` in a
fresh schema per test, and is skipped with the reason when the server cannot
be reached, unless ``POSTGRES_REQUIRED=1`` turns the skip into a failure:
the CI script sets it whenever a PostgreSQL server is installed, so CI runs
these tests there and skips them only on a machine without PostgreSQL. MongoDB runs on mongomock, and on a real server only when
``MONGODB_URI`` is set.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.synchronize
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import mongomock
import pymongo
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from scheduler.errors import (
    ConfigError,
    InvalidStateError,
    PostNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from scheduler.model import Attempt, Post, PostStatus, utc_now
from scheduler.store import open_store
from scheduler.store.base import Store
from scheduler.store.mongo import DuplicatePostError, MongoStore
from scheduler.store.sql import SQLITE_BUSY_TIMEOUT_MS, SqlStore
from scheduler.urls import mask_url

if TYPE_CHECKING:
    from scheduler.publishers.base import PublishResult

Result = TypeVar("Result")

POSTGRES_URL = os.environ.get(
    "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MONGODB_URI = os.environ.get("MONGODB_URI")
LEASE = timedelta(seconds=60)
PROCESSES = 8
CLAIM_BATCH = 25
CONCURRENT_POSTS = 1000
DATETIME_FIELDS = ("due_at", "published_at", "lease_until", "created_at", "updated_at")


def postgres_required() -> bool:
    """Return whether a missing PostgreSQL server fails the tests instead of skipping them."""
    return os.environ.get("POSTGRES_REQUIRED") == "1"


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """Create a fresh schema on the test server; yield the URL and schema name, then drop it."""
    schema = f"postsched_test_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL at {mask_url(POSTGRES_URL)} is unreachable: {str(exc.orig).splitlines()[0]}"
        if postgres_required():
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield POSTGRES_URL, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def mongodb_url() -> Iterator[str]:
    """URL of a fresh database on the server at ``MONGODB_URI``, dropped afterwards."""
    if MONGODB_URI is None:
        pytest.skip(
            "set MONGODB_URI to run the contract suite on a real MongoDB server"
        )
    name = f"postsched_test_{uuid.uuid4().hex[:12]}"
    yield urlunsplit(urlsplit(MONGODB_URI)._replace(path=f"/{name}"))
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        MONGODB_URI, serverSelectionTimeoutMS=5000
    )
    client.drop_database(name)
    client.close()


def sql_location(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, str | None]:
    """Return the URL and PostgreSQL schema of a fresh SQL store of ``kind``."""
    if kind == "postgresql":
        url, schema = request.getfixturevalue("postgres_schema")
        return url, schema
    return f"sqlite:///{tmp_path / 'posts.db'}", None


def open_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Open a fresh, empty store of ``kind``."""
    if kind in ("sqlite", "postgresql"):
        url, schema = sql_location(kind, request, tmp_path)
        return SqlStore(url, schema=schema)
    if kind == "mongomock":
        return MongoStore(
            "mongodb://127.0.0.1/postsched", client=mongomock.MongoClient(tz_aware=True)
        )
    return MongoStore(request.getfixturevalue("mongodb_url"))


@pytest.fixture(params=["sqlite", "postgresql", "mongomock", "mongodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = open_backend(request.param, request, tmp_path)
    yield backend
    backend.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """URL and schema of a fresh SQL database, for the tests that open several stores."""
    return sql_location(request.param, request, tmp_path)


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


def make_full_post() -> Post:
    """Return a post whose every field differs from its default."""
    now = utc_now()
    return make_post(
        link="https://example.org/launch",
        status=PostStatus.PUBLISHING,
        attempts=2,
        deliveries=1,
        last_error="HTTP 503 from the platform",
        published_at=now - timedelta(seconds=3),
        external_id="platform-7",
        attempt_id="attempt-7",
        lease_until=now + LEASE,
        created_at=now - timedelta(days=1),
        updated_at=now - timedelta(minutes=5),
    )


def test_full_post_sets_every_field() -> None:
    post = make_full_post()
    left_default = [
        field.name
        for field in dataclasses.fields(Post)
        if getattr(post, field.name) == field.default
    ]
    assert left_default == []


def test_add_get_round_trip(store: Store) -> None:
    post = make_full_post()
    store.add([post])
    assert store.get(post.id) == post


@pytest.mark.parametrize("field", DATETIME_FIELDS)
def test_datetimes_come_back_utc_aware(store: Store, field: str) -> None:
    post = make_full_post()
    store.add([post])
    loaded = getattr(store.get(post.id), field)
    assert loaded.utcoffset() == timedelta(0)
    assert loaded == getattr(post, field)


def test_offset_datetime_comes_back_in_utc(store: Store) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    due_at = datetime(2030, 7, 1, 18, 0, tzinfo=berlin_summer)
    post = make_post(due_at=due_at)
    store.add([post])
    loaded = store.get(post.id).due_at
    assert loaded == due_at
    assert loaded.utcoffset() == timedelta(0)


def test_naive_datetime_rejected(store: Store) -> None:
    naive = make_post(due_at=datetime(2030, 7, 1, 18, 0))
    with pytest.raises((ValueError, sa.exc.StatementError), match="naive datetime"):
        store.add([naive])
    assert store.list_posts() == []


def test_add_duplicate_adds_nothing(store: Store) -> None:
    existing = make_post()
    store.add([existing])
    fresh = make_post()
    with pytest.raises(StoreError, match=existing.id):
        store.add([fresh, make_post(id=existing.id, content="Another text")])
    with pytest.raises(PostNotFoundError):
        store.get(fresh.id)
    assert store.get(existing.id) == existing


def test_add_repeated_id_adds_nothing(store: Store) -> None:
    fresh = make_post()
    repeated = make_post()
    with pytest.raises(StoreError, match=repeated.id):
        store.add([repeated, fresh, make_post(id=repeated.id)])
    assert store.list_posts() == []


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


def test_list_due_range(store: Store) -> None:
    posts = [make_post(due_in_s=seconds) for seconds in (10, 20, 30)]
    store.add(posts)
    start = posts[1].due_at
    listed = store.list_posts(due_after=start)
    assert [p.id for p in listed] == [posts[1].id, posts[2].id]
    listed = store.list_posts(due_before=start)
    assert [p.id for p in listed] == [posts[0].id]
    listed = store.list_posts(due_after=posts[0].due_at, due_before=posts[2].due_at)
    assert [p.id for p in listed] == [posts[0].id, posts[1].id]


def test_list_pages_by_cursor(store: Store) -> None:
    # Four posts share one due time, so the id alone orders them.
    shared = utc_now() + timedelta(seconds=30)
    same_time = [make_post(due_at=shared) for _ in range(4)]
    later = make_post(due_in_s=60)
    store.add([*same_time, later])
    expected = [p.id for p in sorted(same_time, key=lambda p: p.id)] + [later.id]
    seen: list[str] = []
    after: tuple[datetime, str] | None = None
    while page := store.list_posts(after=after, limit=2):
        seen += [p.id for p in page]
        after = (page[-1].due_at, page[-1].id)
    assert seen == expected


def test_count_due(store: Store) -> None:
    now = utc_now()
    store.add(
        [
            make_post(due_at=now - timedelta(seconds=10)),
            make_post(due_at=now),
            make_post(due_at=now + timedelta(seconds=10)),
            make_post(due_at=now - timedelta(seconds=10), status=PostStatus.CANCELLED),
        ]
    )
    assert store.count_due(now) == 2
    assert store.count_due(now - timedelta(seconds=20)) == 0


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
    assert all(p.updated_at == now for p in claimed)
    assert store.get(future.id).status is PostStatus.SCHEDULED


def test_claim_stored_as_returned(store: Store) -> None:
    store.add([make_post()])
    now = utc_now()
    [claimed] = store.claim_due(now, 10, "attempt-1", now + LEASE)
    assert store.get(claimed.id) == claimed


def test_claim_due_boundary(store: Store) -> None:
    just_due = make_post(due_in_s=-1)
    in_an_hour = make_post(due_in_s=3600)
    store.add([just_due, in_an_hour])
    now = utc_now()
    claimed = store.claim_due(now, 10, "attempt-1", now + LEASE)
    assert [p.id for p in claimed] == [just_due.id]
    assert store.get(in_an_hour.id).status is PostStatus.SCHEDULED


def test_claim_honours_limit(store: Store) -> None:
    # With this many rows, PostgreSQL 15 often plans the IN (subquery) form of
    # the claim as a nested loop that reruns the limited subquery per row, so
    # that form claimed all 2,000 posts in two of three runs of this test.
    store.add([make_post(due_in_s=-i) for i in range(1, 2001)])
    now = utc_now()
    assert len(store.claim_due(now, 2, "a", now + LEASE)) == 2
    assert len(store.claim_due(now, 50, "b", now + LEASE)) == 50
    assert store.count_by_status()[PostStatus.PUBLISHING] == 52


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
    [claimed] = store.claim_due(now, 10, "right", now + LEASE)
    assert not store.mark_published(post.id, "wrong", now, "ext-1")
    assert store.get(post.id) == claimed
    assert store.mark_published(post.id, "right", now, "ext-1")
    published = store.get(post.id)
    assert published.status is PostStatus.PUBLISHED
    assert published.external_id == "ext-1"
    assert published.published_at == now
    assert published.lease_until is None
    assert not store.mark_published(post.id, "right", now, "ext-2")
    assert store.get(post.id) == published


def test_mark_failed_needs_attempt(store: Store) -> None:
    post = make_post()
    store.add([post])
    now = utc_now()
    [claimed] = store.claim_due(now, 10, "right", now + LEASE)
    assert not store.mark_failed(post.id, "wrong", "HTTP 400", now)
    assert store.get(post.id) == claimed
    assert store.mark_failed(post.id, "right", "HTTP 400: text too long", now)
    failed = store.get(post.id)
    assert failed.status is PostStatus.FAILED
    assert failed.last_error == "HTTP 400: text too long"
    assert not store.mark_failed(post.id, "right", "HTTP 500", now)
    assert store.get(post.id) == failed


def test_settle_unknown_post_returns_false(store: Store) -> None:
    assert not store.mark_published("nope", "attempt-1", utc_now(), "ext-1")


def test_next_due_none_when_empty(store: Store) -> None:
    store.add([make_post(status=PostStatus.PUBLISHED)])
    assert store.next_due_at() is None


def test_next_due_ignores_other_statuses(store: Store) -> None:
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
    url: str, schema: str | None, results: multiprocessing.Queue[list[list[str]]]
) -> None:
    store = SqlStore(url, schema=schema)
    batches: list[list[str]] = []
    while True:
        now = utc_now()
        batch = store.claim_due(now, CLAIM_BATCH, uuid.uuid4().hex, now + LEASE)
        if not batch:
            break
        batches.append([post.id for post in batch])
    store.close()
    results.put(batches)


def _open_at_once(
    url: str,
    schema: str | None,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[str],
) -> None:
    barrier.wait(timeout=60)
    try:
        SqlStore(url, schema=schema).close()
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("opened")


def collect_results(
    results: multiprocessing.Queue[Result],
    processes: list[multiprocessing.process.BaseProcess],
    timeout_s: float = 120.0,
) -> list[Result]:
    """Return one result per process, failing the test when a process exits without one."""
    collected: list[Result] = []
    deadline = time.monotonic() + timeout_s
    last_try = False
    while len(collected) < len(processes):
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if last_try or time.monotonic() > deadline:
                exit_codes = [process.exitcode for process in processes]
                pytest.fail(
                    f"{len(processes) - len(collected)} of {len(processes)} processes "
                    f"returned no result within {timeout_s:g} s; exit codes {exit_codes}"
                )
            # A process puts its result before it exits, so once none is
            # alive, one more get finds any result still in the pipe.
            last_try = not any(process.is_alive() for process in processes)
    return collected


def join_processes(
    processes: list[multiprocessing.process.BaseProcess],
) -> list[int | None]:
    """Wait for ``processes``, terminate those still running, and return the exit codes."""
    for process in processes:
        process.join(timeout=30)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join()
    return [process.exitcode for process in processes]


def schema_versions(url: str, schema: str | None) -> list[int]:
    """Return the rows of the schema_version table of the store at ``url``."""
    engine = sa.create_engine(make_url(url).set(drivername=sql_driver(url)))
    table = sa.table("schema_version", sa.column("version"), schema=schema)
    with engine.connect() as connection:
        versions = list(connection.execute(sa.select(table.c.version)).scalars())
    engine.dispose()
    return versions


def sql_driver(url: str) -> str:
    """Return the SQLAlchemy driver name of the test URL ``url``."""
    return "sqlite" if url.startswith("sqlite") else "postgresql+psycopg"


def test_processes_claim_each_post_once(sql_url: tuple[str, str | None]) -> None:
    url, schema = sql_url
    store = SqlStore(url, schema=schema)
    posts = [make_post(due_in_s=-1) for _ in range(CONCURRENT_POSTS)]
    store.add(posts)
    store.close()

    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[list[list[str]]] = context.Queue()
    workers = [
        context.Process(target=_claim_until_empty, args=(url, schema, results))
        for _ in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    try:
        reports = collect_results(results, workers)
    finally:
        exit_codes = join_processes(workers)

    batches = [batch for report in reports for batch in report]
    claimed = Counter(post_id for batch in batches for post_id in batch)
    assert exit_codes == [0] * PROCESSES
    assert max(len(batch) for batch in batches) <= CLAIM_BATCH
    assert [post_id for post_id, count in claimed.items() if count > 1] == []
    assert set(claimed) == {post.id for post in posts}


def test_processes_open_new_database_at_once(sql_url: tuple[str, str | None]) -> None:
    url, schema = sql_url
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: multiprocessing.Queue[str] = context.Queue()
    openers = [
        context.Process(target=_open_at_once, args=(url, schema, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in openers:
        process.start()
    try:
        outcomes = collect_results(results, openers)
    finally:
        exit_codes = join_processes(openers)

    assert exit_codes == [0] * PROCESSES
    assert [outcome for outcome in outcomes if outcome != "opened"] == []
    assert schema_versions(url, schema) == [1]


def test_schema_version_written_once(sql_url: tuple[str, str | None]) -> None:
    url, schema = sql_url
    SqlStore(url, schema=schema).close()
    SqlStore(url, schema=schema).close()
    assert schema_versions(url, schema) == [1]


def test_newer_schema_version_rejected(sql_url: tuple[str, str | None]) -> None:
    url, schema = sql_url
    SqlStore(url, schema=schema).close()
    engine = sa.create_engine(make_url(url).set(drivername=sql_driver(url)))
    table = sa.table("schema_version", sa.column("version"), schema=schema)
    with engine.begin() as connection:
        connection.execute(sa.update(table).values(version=2))
    engine.dispose()
    with pytest.raises(StoreError, match="schema version 2"):
        SqlStore(url, schema=schema)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "posts.db"
    SqlStore(f"sqlite:///{path}").close()
    connection = sqlite3.connect(path)
    journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert journal_mode == "wal"


def test_sqlite_sets_busy_timeout(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'posts.db'}")
    with store._engine.connect() as connection:
        busy_timeout_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    store.close()
    assert busy_timeout_ms == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        (
            "postgresql://postsched:s3cret-pass@127.0.0.1:1/test",
            "postsched:***@127.0.0.1:1/test",
            "s3cret-pass",
        ),
        (
            "postgres://postsched@127.0.0.1:1/test?password=s3cret-pass",
            "postgres://postsched@127.0.0.1:1/test?password=",
            "s3cret-pass",
        ),
    ],
)
def test_unreachable_postgres_is_unavailable(url: str, shown: str, secret: str) -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        SqlStore(url, connect_timeout_s=3)
    message = str(caught.value)
    assert shown in message
    assert secret not in message
    assert "POSTSCHED_STORE_URL" in message
    assert caught.value.__cause__ is not None


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ConfigError, match="redis://user:\\*\\*\\*@127.0.0.1/0"):
        open_store("redis://user:pw@127.0.0.1/0")


def test_unknown_scheme_names_supported() -> None:
    with pytest.raises(ConfigError, match="sqlite, postgresql, postgres"):
        open_store("redis://127.0.0.1/0")


def test_unknown_scheme_hides_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("redis://user:pw-secret@127.0.0.1/0")
    assert "pw-secret" not in str(caught.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_open_store_postgres_schemes(
    scheme: str, postgres_schema: tuple[str, str]
) -> None:
    url, schema = postgres_schema
    rest = url.partition("://")[2]
    # The options parameter keeps the tables in the test's own schema.
    store = open_store(f"{scheme}://{rest}?options=-csearch_path%3D{schema}")
    post = make_post()
    store.add([post])
    loaded = store.get(post.id)
    store.close()
    assert isinstance(store, SqlStore)
    assert loaded == post


def test_open_store_sqlite(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'posts.db'}")
    store.close()
    assert isinstance(store, SqlStore)


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
    # pymongo's description of every known server is left out.
    assert "Topology" not in message
    assert len(message.splitlines()) == 1
    assert message.endswith(
        "check that MongoDB is running and POSTSCHED_STORE_URL is right"
    )


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

    def can_find(self, account: str) -> bool:
        # True, so racing batches take the grouped path of publish_claimed.
        return True

    def publish(self, post: Post) -> PublishResult:
        from scheduler.publishers.base import PublishResult

        time.sleep(0.005)
        with self.lock:
            self.calls[post.id] += 1
        return PublishResult(published_at=utc_now(), external_id=f"ext-{post.id}")


def test_racing_checks_publish_once(sql_url: tuple[str, str | None]) -> None:
    # Imported here, so that the processes spawned by other tests in this
    # module do not import the publishing code.
    from scheduler.publishing import publish_claimed

    url, schema = sql_url
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

    assert set(publisher.calls) == {post.id for post in posts}
    assert max(publisher.calls.values()) == 1
    assert statuses == {PostStatus.PUBLISHED: len(posts)}


def test_mongo_failed_insert_removes_inserted(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MongoStore(
        "mongodb://127.0.0.1/postsched", client=mongomock.MongoClient(tz_aware=True)
    )
    existing = make_post()
    store.add([existing])
    real_check = store._stored_ids

    def check_before_race(ids: list[str]) -> list[str]:
        # As if another process inserted ``existing`` right after this check.
        monkeypatch.setattr(store, "_stored_ids", real_check)
        return []

    monkeypatch.setattr(store, "_stored_ids", check_before_race)
    first, last = make_post(), make_post()
    with pytest.raises(DuplicatePostError, match=existing.id) as caught:
        store.add([first, make_post(id=existing.id), last])
    remaining = store.list_posts(limit=None)
    store.close()
    assert "nothing was added" in str(caught.value)
    assert remaining == [existing]


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


def test_sweep_counts_failed_per_target(store: Store) -> None:
    now = utc_now()
    expired = {
        "status": PostStatus.PUBLISHING,
        "attempt_id": "dead",
        "lease_until": now - timedelta(seconds=1),
        "attempts": 2,
    }
    store.add(
        [
            make_post(target="outbox:main", **expired),
            make_post(target="outbox:main", **expired),
            make_post(target="outbox:other", **expired),
            make_post(target="outbox:retry", **{**expired, "attempts": 1}),
        ]
    )
    result = store.sweep_expired(now, max_attempts=2)
    assert result.failed == 3
    assert result.failed_by_target == {"outbox:main": 2, "outbox:other": 1}
    assert result.rescheduled == 1
    assert result.published_by_target == {}


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
    assert result.published_by_target == {post.target: 1}
    assert result.failed_by_target == {}
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
    assert store.mark_missed(now - timedelta(hours=1), now) == {old.target: 1}
    missed = store.get(old.id)
    assert missed.status is PostStatus.MISSED
    assert "postsched retry" in (missed.last_error or "")
    assert store.get(recent.id).status is PostStatus.SCHEDULED
    assert store.get(done.id).status is PostStatus.PUBLISHED


def test_mark_missed_keeps_interrupted_posts(store: Store) -> None:
    interrupted = make_post(due_in_s=-7200, deliveries=1)
    store.add([interrupted])
    now = utc_now()
    assert store.mark_missed(now - timedelta(hours=1), now) == {}
    assert store.get(interrupted.id).status is PostStatus.SCHEDULED


def test_mark_missed_counts_per_target(store: Store) -> None:
    store.add(
        [
            make_post(due_in_s=-7200, target="outbox:main"),
            make_post(due_in_s=-7200, target="outbox:main"),
            make_post(due_in_s=-7200, target="outbox:other"),
            make_post(due_in_s=-60, target="outbox:recent"),
        ]
    )
    now = utc_now()
    missed = store.mark_missed(now - timedelta(hours=1), now)
    assert missed == {"outbox:main": 2, "outbox:other": 1}
    assert store.mark_missed(now - timedelta(hours=1), now) == {}


def test_in_memory_sqlite_rejected() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigError, match="in-memory SQLite"):
            SqlStore(url)
