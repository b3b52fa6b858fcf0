"""The SQL store on SQLAlchemy Core: SQLite and PostgreSQL through one code path."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from scheduler.errors import (
    ConfigError,
    PostNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from scheduler.model import Attempt, Post, PostStatus
from scheduler.store.base import (
    PublishedRecord,
    Store,
    SweepResult,
    lease_error,
    missed_error,
)
from scheduler.urls import mask_url

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_WAL_RETRY_S = 0.05
# Key of the PostgreSQL advisory lock held while the tables are created: the
# ASCII bytes of "postschd", so that it does not collide with small keys.
SCHEMA_LOCK_KEY = 0x706F737473636864


class DuplicatePostError(StoreError):
    """Raised when a post with the same id is already stored."""


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime column that takes and returns UTC-aware datetimes only."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: sa.Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to the store; pass a UTC-aware datetime"
            )
        utc = value.astimezone(UTC)
        # SQLite has no time zone type: it keeps naive UTC text, which sorts right.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(
        self, value: datetime | None, dialect: sa.Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

posts = sa.Table(
    "posts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("link", sa.Text),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("deliveries", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("published_at", UTCDateTime),
    sa.Column("external_id", sa.Text),
    sa.Column("attempt_id", sa.String(64)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_posts_status_due_at", "status", "due_at"),
    sa.Index("ix_posts_status_lease_until", "status", "lease_until"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("post_id", sa.String(64), nullable=False),
    sa.Column("attempt_id", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("worker", sa.String(200), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_attempts_post_id", "post_id"),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
)


# One statement for every post that record_published marks; bound per post.
_PUBLISH_MANY = (
    posts.update()
    .where(
        posts.c.id == sa.bindparam("b_id"),
        posts.c.status == str(PostStatus.PUBLISHING),
        posts.c.attempt_id == sa.bindparam("b_attempt_id"),
    )
    .values(
        status=str(PostStatus.PUBLISHED),
        published_at=sa.bindparam("b_published_at"),
        external_id=sa.bindparam("b_external_id"),
        lease_until=None,
        updated_at=sa.bindparam("b_published_at"),
    )
)


class SqlStore(Store):
    """Posts in a SQL database: ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB``.

    ``schema`` selects a PostgreSQL schema other than the default search path.
    """

    def __init__(
        self, url: str, *, schema: str | None = None, connect_timeout_s: float = 5.0
    ) -> None:
        try:
            parsed = make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(
                f"invalid store URL {mask_url(url)!r}: {exc}; write it like sqlite:///PATH "
                "or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
            ) from exc
        self._display_url = _render_masked(parsed)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._connect_timeout_s = connect_timeout_s
        self._engine = self._create_engine(parsed, schema)
        try:
            self._create_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def _create_schema(self) -> None:
        """Create the tables when missing and check the schema version.

        Every process that opens the store runs this, often at the same time
        on a new database. PostgreSQL would fail the losers of a race between
        two CREATE TABLE statements, so an advisory lock serialises them. On
        SQLite, the BEGIN IMMEDIATE of every transaction serialises them.
        """
        with self._transaction("create the schema") as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY))
                )
            metadata.create_all(connection)
            stored = connection.execute(
                sa.select(sa.func.max(schema_version.c.version))
            ).scalar_one()
            if stored is None:
                connection.execute(
                    schema_version.insert().values(version=SCHEMA_VERSION)
                )
            elif stored != SCHEMA_VERSION:
                raise StoreError(
                    f"the store at {self._display_url} has schema version {stored}, but this "
                    f"postsched uses version {SCHEMA_VERSION}; run the postsched release "
                    "that created it, or point POSTSCHED_STORE_URL at another database"
                )

    @property
    def display_url(self) -> str:
        """URL of the store with the password masked."""
        return self._display_url

    def _create_engine(self, url: sa.URL, schema: str | None) -> Engine:
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                raise ConfigError(
                    f"the store URL {self._display_url!r} names an in-memory SQLite database, "
                    "whose posts are lost when the process exits; use sqlite:///PATH/posts.db"
                )
            try:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the folder of the SQLite store {url.database}: {exc.strerror or exc}; "
                    "set POSTSCHED_STORE_URL or POSTSCHED_DATA_DIR to a writable folder"
                ) from exc
            engine = sa.create_engine(
                url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            )
            sa.event.listen(engine, "connect", _configure_sqlite)
            sa.event.listen(engine, "begin", _begin_immediate)
            return engine
        connect_args: dict[str, Any] = {
            "connect_timeout": max(1, round(self._connect_timeout_s))
        }
        if schema is not None:
            connect_args["options"] = f"-csearch_path={schema}"
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailableError(
                f"could not {operation} in the store at {self._display_url}: {_first_line(exc)}; "
                "check that the database server is running and that POSTSCHED_STORE_URL "
                "names the right host, user, password and database"
            ) from exc
        except sa.exc.TimeoutError as exc:
            raise StoreUnavailableError(
                f"could not {operation} in the store at {self._display_url}: every pooled "
                f"connection stayed busy until the pool timeout ({exc}); retry later"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailableError(
                    f"lost the connection to the store at {self._display_url} during {operation}: {_first_line(exc)}"
                ) from exc
            raise

    @contextmanager
    def _transaction(self, operation: str) -> Iterator[Connection]:
        with self._translate_errors(operation), self._engine.begin() as connection:
            yield connection

    def add(self, new_posts: Sequence[Post]) -> None:
        """Insert ``new_posts`` in one transaction."""
        if not new_posts:
            return
        rows = [_to_row(post) for post in new_posts]
        try:
            with self._transaction("add posts") as connection:
                connection.execute(posts.insert(), rows)
        except IntegrityError as exc:
            duplicates = self._duplicate_ids([post.id for post in new_posts])
            if not duplicates:
                raise StoreError(
                    f"adding {len(new_posts)} post(s) to the store at {self._display_url} failed, "
                    f"so nothing was added: {_first_line(exc)}"
                ) from exc
            raise DuplicatePostError(
                f"post id(s) {', '.join(duplicates)} already stored or given twice; "
                "nothing was added, so use new ids"
            ) from exc

    def _duplicate_ids(self, ids: list[str]) -> list[str]:
        """Return the ids in ``ids`` that are stored already or appear twice."""
        with self._transaction("find duplicate ids") as connection:
            stored = (
                connection.execute(sa.select(posts.c.id).where(posts.c.id.in_(ids)))
                .scalars()
                .all()
            )
        repeated = {post_id for post_id in ids if ids.count(post_id) > 1}
        return sorted(set(stored) | repeated)

    def get(self, post_id: str) -> Post:
        """Return the post ``post_id``."""
        with self._transaction("read a post") as connection:
            row = (
                connection.execute(sa.select(posts).where(posts.c.id == post_id))
                .mappings()
                .first()
            )
        if row is None:
            raise PostNotFoundError(post_id)
        return _from_row(row)

    def list_posts(
        self,
        *,
        status: PostStatus | None = None,
        target: str | None = None,
        ids: Sequence[str] | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return posts ordered by due time, then id."""
        query = sa.select(posts).order_by(posts.c.due_at, posts.c.id)
        if status is not None:
            query = query.where(posts.c.status == str(status))
        if target is not None:
            query = query.where(posts.c.target == target)
        if ids is not None:
            query = query.where(posts.c.id.in_(list(ids)))
        if due_after is not None:
            query = query.where(posts.c.due_at >= due_after)
        if due_before is not None:
            query = query.where(posts.c.due_at < due_before)
        if after is not None:
            last_due_at, last_id = after
            query = query.where(
                sa.or_(
                    posts.c.due_at > last_due_at,
                    sa.and_(posts.c.due_at == last_due_at, posts.c.id > last_id),
                )
            )
        if limit is not None:
            query = query.limit(limit)
        with self._transaction("list posts") as connection:
            return [_from_row(row) for row in connection.execute(query).mappings()]

    def _update_if(
        self, post_id: str, allowed: set[PostStatus], changes: dict[str, Any]
    ) -> Post | None:
        statement = (
            posts.update()
            .where(
                posts.c.id == post_id,
                posts.c.status.in_([str(status) for status in allowed]),
            )
            .values(**changes)
            .returning(*posts.c)
        )
        with self._transaction("update a post") as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else _from_row(row)

    def begin_delivery(self, post_id: str, attempt_id: str) -> Post | None:
        """Count one more delivery of a claimed post; None unless claimed under ``attempt_id``."""
        statement = (
            posts.update()
            .where(
                posts.c.id == post_id,
                posts.c.status == str(PostStatus.PUBLISHING),
                posts.c.attempt_id == attempt_id,
            )
            .values(deliveries=posts.c.deliveries + 1)
            .returning(*posts.c)
        )
        with self._transaction("count a delivery") as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else _from_row(row)

    def begin_first_deliveries(
        self, post_ids: Sequence[str], attempt_id: str
    ) -> list[Post]:
        """Count the first delivery of the posts in one UPDATE ... RETURNING statement."""
        if not post_ids:
            return []
        statement = (
            posts.update()
            .where(
                posts.c.id.in_(list(post_ids)),
                posts.c.status == str(PostStatus.PUBLISHING),
                posts.c.attempt_id == attempt_id,
                posts.c.deliveries == 0,
            )
            .values(deliveries=1)
            .returning(*posts.c)
        )
        with self._transaction("count first deliveries") as connection:
            return [_from_row(row) for row in connection.execute(statement).mappings()]

    def add_attempt(self, attempt: Attempt) -> None:
        """Record one attempt to publish a post."""
        with self._transaction("record an attempt") as connection:
            connection.execute(attempts.insert().values(**vars(attempt)))

    def record_published(
        self, published: Sequence[tuple[Attempt, PublishedRecord]]
    ) -> set[str]:
        """Record the posts and their attempts in one transaction of two executemany calls."""
        if not published:
            return set()
        rows = [
            {
                "b_id": attempt.post_id,
                "b_attempt_id": attempt.attempt_id,
                "b_published_at": record.published_at,
                "b_external_id": record.external_id,
            }
            for attempt, record in published
        ]
        ids = [attempt.post_id for attempt, _ in published]
        with self._transaction("mark posts published") as connection:
            updated = connection.execute(_PUBLISH_MANY, rows).rowcount
            connection.execute(
                attempts.insert(), [vars(attempt) for attempt, _ in published]
            )
            if updated == len(rows):
                return set(ids)
            # Some claims had ended: find the posts this call published.
            found = connection.execute(
                sa.select(posts.c.id, posts.c.attempt_id, posts.c.external_id).where(
                    posts.c.id.in_(ids), posts.c.status == str(PostStatus.PUBLISHED)
                )
            ).all()
        expected = {row["b_id"]: row for row in rows}
        return {
            post_id
            for post_id, attempt_id, external_id in found
            if expected[post_id]["b_attempt_id"] == attempt_id
            and expected[post_id]["b_external_id"] == external_id
        }

    def list_attempts(self, post_id: str) -> list[Attempt]:
        """Return the recorded attempts of a post, oldest first."""
        query = (
            sa.select(attempts)
            .where(attempts.c.post_id == post_id)
            .order_by(attempts.c.started_at)
        )
        with self._transaction("list attempts") as connection:
            rows = connection.execute(query).mappings().all()
        return [
            Attempt(**{key: value for key, value in row.items() if key != "id"})
            for row in rows
        ]

    def claim_due(
        self, now: datetime, limit: int, attempt_id: str, lease_until: datetime
    ) -> list[Post]:
        """Claim up to ``limit`` due posts in one UPDATE ... RETURNING statement.

        On PostgreSQL the subquery locks its rows FOR UPDATE SKIP LOCKED, so
        concurrent claimers take different posts instead of waiting; SQLite
        runs one writer at a time, and the outer status check keeps a post from
        being claimed twice on both.
        """
        # A materialized CTE runs once. As an IN (subquery), PostgreSQL 15 can
        # plan a nested loop that runs the limited subquery again for each
        # outer row. On a table of 2,000 due posts, that form claimed all or
        # nearly all of them with a limit of 2.
        # NOTE: WITH ... AS MATERIALIZED needs PostgreSQL 12 or SQLite 3.35,
        # and UPDATE ... FROM needs SQLite 3.33.
        due = (
            sa.select(posts.c.id)
            .where(posts.c.status == str(PostStatus.SCHEDULED), posts.c.due_at <= now)
            .order_by(posts.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
            .prefix_with("MATERIALIZED")
        )
        statement = (
            posts.update()
            .where(posts.c.id == due.c.id, posts.c.status == str(PostStatus.SCHEDULED))
            .values(
                status=str(PostStatus.PUBLISHING),
                attempt_id=attempt_id,
                lease_until=lease_until,
                attempts=posts.c.attempts + 1,
                updated_at=now,
            )
            .returning(*posts.c)
        )
        with self._transaction("claim due posts") as connection:
            claimed = [
                _from_row(row) for row in connection.execute(statement).mappings()
            ]
        return sorted(claimed, key=lambda post: (post.due_at, post.id))

    def _settle(
        self, post_id: str, attempt_id: str, operation: str, changes: dict[str, Any]
    ) -> bool:
        statement = (
            posts.update()
            .where(
                posts.c.id == post_id,
                posts.c.status == str(PostStatus.PUBLISHING),
                posts.c.attempt_id == attempt_id,
            )
            .values(**changes)
        )
        with self._transaction(operation) as connection:
            return connection.execute(statement).rowcount == 1

    def sweep_expired(self, now: datetime, max_attempts: int) -> SweepResult:
        """Settle publishing posts whose lease ran out, in one transaction."""
        expired = sa.and_(
            posts.c.status == str(PostStatus.PUBLISHING),
            posts.c.lease_until < now,
        )
        released = {"attempt_id": None, "lease_until": None, "updated_at": now}
        with self._transaction("sweep expired leases") as connection:
            published = Counter(
                connection.execute(
                    posts.update()
                    .where(expired, posts.c.external_id.is_not(None))
                    .values(
                        status=str(PostStatus.PUBLISHED), published_at=now, **released
                    )
                    .returning(posts.c.target)
                ).scalars()
            )
            failed = Counter(
                connection.execute(
                    posts.update()
                    .where(expired, posts.c.attempts >= max_attempts)
                    .values(
                        status=str(PostStatus.FAILED),
                        last_error=lease_error(max_attempts),
                        **released,
                    )
                    .returning(posts.c.target)
                ).scalars()
            )
            rescheduled = connection.execute(
                posts.update()
                .where(expired)
                .values(status=str(PostStatus.SCHEDULED), **released)
            ).rowcount
        return SweepResult(
            rescheduled=rescheduled,
            failed=failed.total(),
            published=published.total(),
            failed_by_target=dict(failed),
            published_by_target=dict(published),
        )

    def mark_missed(self, cutoff: datetime, now: datetime) -> dict[str, int]:
        """Set scheduled posts due before ``cutoff`` to ``missed`` in one statement."""
        statement = (
            posts.update()
            # A post with deliveries may be out already: the next claim looks it up.
            .where(
                posts.c.status == str(PostStatus.SCHEDULED),
                posts.c.due_at < cutoff,
                posts.c.deliveries == 0,
            )
            .values(
                status=str(PostStatus.MISSED),
                last_error=missed_error(cutoff, now),
                updated_at=now,
            )
            .returning(posts.c.target)
        )
        with self._transaction("mark missed posts") as connection:
            targets = connection.execute(statement).scalars().all()
        return dict(Counter(targets))

    def next_due_at(self) -> datetime | None:
        """Return the due time of the earliest scheduled post."""
        query = sa.select(sa.func.min(posts.c.due_at)).where(
            posts.c.status == str(PostStatus.SCHEDULED)
        )
        with self._transaction("find the next due time") as connection:
            value = connection.execute(query).scalar_one_or_none()
        if value is None:
            return None
        # An aggregate loses the column type on SQLite, which returns text.
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return UTCDateTime().process_result_value(value, self._engine.dialect)

    def count_due(self, now: datetime) -> int:
        """Return the number of scheduled posts due at or before ``now``."""
        query = (
            sa.select(sa.func.count())
            .select_from(posts)
            .where(posts.c.status == str(PostStatus.SCHEDULED), posts.c.due_at <= now)
        )
        with self._transaction("count due posts") as connection:
            return int(connection.execute(query).scalar_one())

    def count_by_status(self) -> dict[PostStatus, int]:
        """Return the number of posts in each status."""
        query = sa.select(posts.c.status, sa.func.count()).group_by(posts.c.status)
        with self._transaction("count posts") as connection:
            rows = connection.execute(query).all()
        return {PostStatus(status): count for status, count in rows}

    def close(self) -> None:
        """Dispose of the connection pool."""
        self._engine.dispose()


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite's own transaction handling is turned off, so that "begin" below
    # can take the write lock at the start of every transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    # Switching a new database to WAL takes an exclusive lock. When several
    # processes open the new file at once, SQLite 3.40 fails the losers with
    # "database is locked" at once instead of waiting for the busy timeout.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(SQLITE_WAL_RETRY_S)
    if mode not in ("wal", "memory"):
        logger.warning(
            "SQLite could not switch the database to WAL and kept journal mode %s; "
            "keep the database file on a local file system",
            mode,
        )


def _begin_immediate(connection: Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction
    # that reads first and then writes can fail with "database is locked"
    # without waiting for the busy timeout.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _to_row(post: Post) -> dict[str, Any]:
    row = {name: getattr(post, name) for name in posts.c.keys()}  # noqa: SIM118 - a column collection iterates columns
    row["status"] = str(post.status)
    return row


def _from_row(row: Any) -> Post:
    values = dict(row)
    values["status"] = PostStatus(values["status"])
    return Post(**values)


def _render_masked(url: sa.URL) -> str:
    # libpq also reads a password from the query string, which
    # render_as_string leaves in place.
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
