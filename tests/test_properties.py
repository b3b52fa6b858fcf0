"""Property tests of submission and CSV import: bad input is rejected cleanly.

Hypothesis feeds ``PostService.schedule`` and ``PostService.import_csv``
arbitrary text, datetimes (naive, aware, with odd offsets and zone names,
years 1 to 9999), time zone names and targets. Each call must either store
exactly what it returns, or raise one of the project's input errors and
leave the store unchanged. They run on SQLite and on PostgreSQL, whose
column limits SQLite does not enforce.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from scheduler.config import Settings, WebhookSettings
from scheduler.csv_import import CsvFileError
from scheduler.errors import ImportFileError, ValidationError
from scheduler.model import Post
from scheduler.service import PostService
from scheduler.store.sql import SqlStore
from scheduler.urls import mask_url
from tasks.app import PostschedCelery, create_app

POSTGRES_URL = os.environ.get(
    "POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The errors that bad input may raise: every one names the value and the fix.
INPUT_ERRORS = (ValidationError, ImportFileError, CsvFileError)

ZONE_NAMES = sorted(available_timezones())
PUBLISHERS = ["outbox", "webhook", "mastodon", "rss", ""]
VALID_TARGETS = ["outbox:main", "webhook:alerts"]


# Fixed at import, whole days, so that every example draws from the same range.
TODAY = datetime.now(UTC).replace(
    hour=0, minute=0, second=0, microsecond=0, tzinfo=None
)
NEAR_FIRST = TODAY + timedelta(days=2)
NEAR_LAST = TODAY + timedelta(days=3650)


def half_valid(
    valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Draw from ``valid`` half of the time, so that whole posts are often valid."""
    return st.booleans().flatmap(lambda use_valid: valid if use_valid else anything)


# Offsets with arbitrary names: short ones, and ones longer than the stores'
# 64-character zone column.
named_offsets = st.builds(
    timezone,
    st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59),
        max_value=timedelta(hours=23, minutes=59),
    ),
    st.text(max_size=8) | st.text(min_size=60, max_size=100),
)
tzinfos = st.none() | st.timezones() | named_offsets | st.just(UTC)
any_datetimes = st.datetimes(timezones=tzinfos, allow_imaginary=True)
near_datetimes = st.datetimes(
    min_value=NEAR_FIRST, max_value=NEAR_LAST, timezones=tzinfos
)
datetimes = any_datetimes | near_datetimes
due_values: st.SearchStrategy[Any] = half_valid(
    near_datetimes | near_datetimes.map(datetime.isoformat) | st.none(),
    any_datetimes
    | any_datetimes.map(datetime.isoformat)
    | st.text(max_size=40)
    | st.integers()
    | st.dates(),
)
zone_names = st.sampled_from(ZONE_NAMES)
zone_arguments = half_valid(st.none() | zone_names, st.text(max_size=40))
valid_targets = st.sampled_from(VALID_TARGETS)
targets = half_valid(
    valid_targets,
    st.text(max_size=40)
    | st.builds("{}:{}".format, st.sampled_from(PUBLISHERS), st.text(max_size=220)),
)
contents = half_valid(
    st.just("Doors open at 6") | st.text(min_size=1, max_size=280),
    st.text(max_size=300) | st.integers() | st.none(),
)
valid_links = st.none() | st.just("https://example.org/page")
links = half_valid(
    valid_links,
    st.text(max_size=60)
    | st.builds("https://{}/{}".format, st.text(max_size=20), st.text(max_size=40)),
)


@pytest.fixture(scope="module")
def celery_app(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostschedCelery]:
    """A Celery app whose chain records wake-ups in the test Redis; no worker runs."""
    data_dir = tmp_path_factory.mktemp("properties")
    app = create_app(
        Settings(
            broker_url=redis_url,
            result_backend=redis_url,
            data_dir=data_dir,
            outbox_dir=data_dir / "outbox",
            key_prefix=f"test{uuid.uuid4().hex[:8]}",
            # Loopback only: no worker runs, so nothing is ever sent there.
            webhooks={
                "alerts": WebhookSettings(url="http://127.0.0.1:9/hook", max_length=280)
            },
        )
    )
    yield app
    app.runtime.close()
    app.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SqlStore]:
    """A fresh SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        sqlite_store = SqlStore(
            f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'posts.db'}"
        )
        yield sqlite_store
        sqlite_store.close()
        return
    yield from _postgres_store()


def _postgres_store() -> Iterator[SqlStore]:
    schema = f"postsched_test_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = f"PostgreSQL at {mask_url(POSTGRES_URL)} is unreachable: {str(exc.orig).splitlines()[0]}"
        if os.environ.get("POSTGRES_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    postgres_store = SqlStore(POSTGRES_URL, schema=schema)
    try:
        yield postgres_store
    finally:
        postgres_store.close()
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="module")
def service(store: SqlStore, celery_app: PostschedCelery) -> PostService:
    return PostService(store, celery_app.runtime.publishers, celery_app.runtime.chain)


def snapshot(store: SqlStore) -> dict[str, Post]:
    """Return every stored post by id."""
    return {post.id: post for post in store.list_posts(limit=None)}


def run_and_compare(
    store: SqlStore, call: Callable[[], list[Post]], outcomes: Counter[str]
) -> None:
    """Run ``call`` and check that the store changed by exactly the posts it returned.

    A call that raises one of INPUT_ERRORS must leave the store as it was,
    and any other exception fails the test.
    """
    before = snapshot(store)
    try:
        added = call()
    except INPUT_ERRORS as exc:
        assert str(exc), "an input error must carry a message"
        assert snapshot(store) == before
        outcomes["rejected"] += 1
        return
    after = snapshot(store)
    assert set(after) - set(before) == {post.id for post in added}
    assert {post_id: after[post_id] for post_id in before} == before
    for post in added:
        assert after[post.id] == post
    outcomes["stored" if added else "empty"] += 1


def check_schedule(
    service: PostService,
    store: SqlStore,
    fields: st.SearchStrategy[dict[str, Any]],
) -> Counter[str]:
    """Schedule each example of ``fields``, check the store after each, and count the outcomes."""
    outcomes: Counter[str] = Counter()

    @EXAMPLES
    @given(fields=fields)
    def schedule_one(fields: dict[str, Any]) -> None:
        def call() -> list[Post]:
            return [service.schedule(**fields)]

        run_and_compare(store, call, outcomes)

    schedule_one()
    return outcomes


def test_schedule_any_fields(service: PostService, store: SqlStore) -> None:
    fields = st.fixed_dictionaries(
        {
            "target": targets,
            "content": contents,
            "due_at": due_values,
            "timezone": zone_arguments,
            "link": links,
        }
    )
    outcomes = check_schedule(service, store, fields)
    # Both branches ran, so neither set of checks passed for want of cases.
    assert outcomes["rejected"] > 0
    assert outcomes["stored"] > 0


def test_schedule_any_due_time(service: PostService, store: SqlStore) -> None:
    fields = st.fixed_dictionaries(
        {
            "target": st.sampled_from(VALID_TARGETS),
            "content": st.just("Doors open at 6"),
            "due_at": due_values,
            "timezone": zone_arguments,
        }
    )
    outcomes = check_schedule(service, store, fields)
    assert outcomes["rejected"] > 0
    assert outcomes["stored"] > 0


BULK_PATTERNS = {
    "ymd": ["%Y-%m-%d %H:%M", "%Y-%m-%d %I:%M %p"],
    "mdy": ["%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p"],
    "dmy": ["%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M"],
}
HEADER = ["due_at", "target", "content", "link", "timezone"]


def as_cell(value: object) -> str:
    """Write ``value`` as a CSV cell: a datetime in ISO 8601, None as empty."""
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else str(value)


valid_contents = st.just("Doors open at 6") | st.text(min_size=1, max_size=280)
aware_near_datetimes = st.datetimes(
    min_value=NEAR_FIRST,
    max_value=NEAR_LAST,
    timezones=st.timezones() | named_offsets | st.just(UTC),
)


@st.composite
def bulk_rows(draw: st.DrawFn, date_format: str, clean: bool) -> list[str]:
    """A bulk row: date and time, message, optional link; any part may be invalid unless ``clean``."""
    moment = draw(st.datetimes(min_value=NEAR_FIRST, max_value=NEAR_LAST))
    written = st.just(
        moment.strftime(draw(st.sampled_from(BULK_PATTERNS[date_format])))
    )
    cells = [
        draw(written if clean else half_valid(written, st.text(max_size=20))),
        draw((valid_contents if clean else contents).map(as_cell)),
    ]
    if draw(st.booleans()):
        cells.append(draw((valid_links if clean else links).map(as_cell)))
    return cells


@st.composite
def header_rows(draw: st.DrawFn, clean: bool) -> list[str]:
    """A row in the order of HEADER; any cell may be invalid unless ``clean``."""
    if clean:
        cells = [
            aware_near_datetimes,
            valid_targets,
            valid_contents,
            valid_links,
            zone_names,
        ]
    else:
        cells = [due_values, targets, contents, links, zone_arguments]
    return [draw(cell.map(as_cell)) for cell in cells]


@st.composite
def csv_imports(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A CSV file and the import options: rows of any cells, trailing text, or raw bytes.

    Half of the files are clean: every row and option valid, apart from
    times that a daylight-saving change skips or repeats.
    """
    date_format = draw(st.sampled_from(sorted(BULK_PATTERNS)))
    clean = draw(st.booleans())
    if clean:
        options = {
            "date_format": date_format,
            "tz": draw(zone_names),
            "target": draw(valid_targets),
            "skip_invalid": draw(st.booleans()),
        }
    else:
        options = {
            "date_format": draw(half_valid(st.just(date_format), st.text(max_size=5))),
            "tz": draw(zone_arguments),
            "target": draw(targets),
            "skip_invalid": draw(st.booleans()),
        }
        if draw(st.integers(0, 4)) == 0:
            return draw(st.binary(max_size=400)), options

    header = draw(st.booleans())
    rows: list[list[str]] = [HEADER] if header else []
    row = header_rows(clean) if header else bulk_rows(date_format, clean)
    stray = st.lists(st.text(max_size=20), max_size=6)
    rows += draw(st.lists(row if clean else half_valid(row, stray), max_size=6))
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    text = buffer.getvalue()
    if not clean and draw(st.booleans()):
        text += draw(st.text(max_size=80))
    return text.encode("utf-8", errors="surrogatepass"), options


def test_import_stores_whole_or_rejects(
    service: PostService, store: SqlStore, tmp_path: Path
) -> None:
    outcomes: Counter[str] = Counter()

    @EXAMPLES
    @given(csv_import=csv_imports())
    def import_one(csv_import: tuple[bytes, dict[str, Any]]) -> None:
        data, options = csv_import
        path = tmp_path / f"{uuid.uuid4().hex}.csv"
        path.write_bytes(data)

        def call() -> list[Post]:
            report = service.import_csv(path, **options)
            if not options["skip_invalid"]:
                assert report.errors == []
            return report.posts

        run_and_compare(store, call, outcomes)

    import_one()
    assert outcomes["rejected"] > 0
    assert outcomes["stored"] > 0
