"""The Python client, on the test Redis, a SQLite store and a real worker."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from faults import free_port

from scheduler.client import PostschedClient
from scheduler.config import Settings
from scheduler.errors import (
    ImportFileError,
    InvalidStateError,
    PostNotFoundError,
    ValidationError,
)
from scheduler.model import Post, PostStatus, utc_now
from scheduler.publishers.outbox import read_outbox
from tasks.app import PostschedCelery

PUBLISH_TIMEOUT_S = 15.0


@pytest.fixture
def client(settings: Settings) -> Iterator[PostschedClient]:
    with PostschedClient(settings) as opened:
        yield opened


def future(minutes: int = 30) -> str:
    return (utc_now() + timedelta(minutes=minutes)).isoformat()


def wait_for_status(client: PostschedClient, post_id: str, status: PostStatus) -> Post:
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while (post := client.get(post_id)).status is not status:
        assert time.monotonic() < deadline, (
            f"post {post_id} still {post.status} after {PUBLISH_TIMEOUT_S} s"
        )
        time.sleep(0.05)
    return post


def test_publish_now_reaches_outbox(
    client: PostschedClient,
    settings: Settings,
    celery_app: PostschedCelery,
    worker: object,
) -> None:
    post = client.publish_now(target="outbox:main", content="from the client")
    wait_for_status(client, post.id, PostStatus.PUBLISHED)
    lines = read_outbox(settings.resolved_outbox_dir / "main.jsonl")
    assert [line["post_id"] for line in lines] == [post.id]
    assert client.wake_error is None


def test_show_lists_attempts(
    client: PostschedClient, celery_app: PostschedCelery, worker: object
) -> None:
    post = client.publish_now(target="outbox:main", content="with history")
    wait_for_status(client, post.id, PostStatus.PUBLISHED)
    shown, attempts = client.show(post.id)
    assert shown.id == post.id
    assert [attempt.outcome for attempt in attempts] == ["published"]


def test_schedule_wakes_chain(
    client: PostschedClient, celery_app: PostschedCelery
) -> None:
    # Within the maximum check interval (60 s), so the check's ETA is the due time.
    due_at = utc_now() + timedelta(seconds=30)
    post = client.schedule(target="outbox:main", content="later", due_at=due_at)
    record = celery_app.runtime.chain.current()
    assert record is not None
    assert record.eta == post.due_at


def test_schedule_invalid_stores_nothing(client: PostschedClient) -> None:
    with pytest.raises(ValidationError) as raised:
        client.schedule(target="outbox:main", content="hi", due_at="2030-01-01 10:00")
    assert raised.value.field == "due_at"
    assert "no time zone given" in raised.value.reason
    assert client.list_posts() == []


def test_schedule_without_due_at_rejected(client: PostschedClient) -> None:
    with pytest.raises(ValidationError) as raised:
        client.schedule(target="outbox:main", content="hi", due_at=None)  # type: ignore[arg-type]
    assert raised.value.field == "due_at"
    assert raised.value.reason == "missing"
    assert "publish_now" in raised.value.fix
    assert client.list_posts() == []


@pytest.mark.parametrize("operation", ["get", "show", "cancel"])
def test_unencodable_id_rejected(client: PostschedClient, operation: str) -> None:
    with pytest.raises(ValidationError) as raised:
        getattr(client, operation)("\ud800" * 32)
    assert raised.value.field == "id"
    assert "lone surrogate" in raised.value.reason


@pytest.mark.parametrize("limit", [0, -1, 2.5, "5", True])
def test_list_invalid_limit_rejected(client: PostschedClient, limit: object) -> None:
    with pytest.raises(ValidationError) as raised:
        client.list_posts(limit=limit)  # type: ignore[arg-type]
    assert raised.value.field == "limit"


def test_schedule_past_rejected(client: PostschedClient) -> None:
    past = (utc_now() - timedelta(minutes=1)).isoformat()
    with pytest.raises(ValidationError, match="in the past"):
        client.schedule(target="outbox:main", content="hi", due_at=past)
    assert client.list_posts() == []


def test_from_env_reads_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_BROKER_URL", settings.broker_url or "")
    monkeypatch.setenv("POSTSCHED_STORE_URL", settings.resolved_store_url)
    monkeypatch.setenv("POSTSCHED_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POSTSCHED_KEY_PREFIX", settings.key_prefix)
    with PostschedClient.from_env(max_attempts=2) as client:
        assert client.settings.key_prefix == settings.key_prefix
        assert client.settings.max_attempts == 2
        post = client.schedule(target="outbox:main", content="env", due_at=future())
    with PostschedClient(settings) as other:
        assert other.get(post.id).content == "env"


def test_edit_reschedule_cancel(client: PostschedClient) -> None:
    post = client.schedule(target="outbox:main", content="draft", due_at=future())
    edited = client.edit(post.id, content="final", link="https://example.org/a")
    assert edited.content == "final"
    assert edited.link == "https://example.org/a"
    unlinked = client.edit(post.id, link="")
    assert unlinked.link is None
    moved = client.reschedule(post.id, "2040-06-01T12:00:00", "Europe/Berlin")
    assert moved.due_at.isoformat() == "2040-06-01T10:00:00+00:00"
    assert moved.timezone == "Europe/Berlin"
    cancelled = client.cancel(post.id)
    assert cancelled.status is PostStatus.CANCELLED
    with pytest.raises(InvalidStateError, match="it is cancelled"):
        client.edit(post.id, content="too late")


def test_update_invalid_field_changes_nothing(client: PostschedClient) -> None:
    post = client.schedule(target="outbox:main", content="draft", due_at=future())
    with pytest.raises(ValidationError) as raised:
        client.update(post.id, content="new text", due_at="not a time")
    assert raised.value.field == "due_at"
    assert client.get(post.id) == post


def test_update_content_and_due_at(client: PostschedClient) -> None:
    post = client.schedule(target="outbox:main", content="draft", due_at=future())
    later = future(90)
    updated = client.update(post.id, content="final", due_at=later)
    assert updated.content == "final"
    assert updated.due_at == datetime.fromisoformat(later)
    assert client.get(post.id) == updated


def test_update_without_changes_rejected(client: PostschedClient) -> None:
    post = client.schedule(target="outbox:main", content="draft", due_at=future())
    with pytest.raises(ValidationError, match="no change given"):
        client.update(post.id)


def test_update_timezone_alone_rejected(client: PostschedClient) -> None:
    post = client.schedule(target="outbox:main", content="draft", due_at=future())
    with pytest.raises(ValidationError) as raised:
        client.update(post.id, content="x", timezone="Europe/Berlin")
    assert raised.value.field == "timezone"
    assert client.get(post.id) == post


def test_get_unknown_raises(client: PostschedClient) -> None:
    with pytest.raises(PostNotFoundError):
        client.get("0" * 32)


def test_list_filters_and_pages(client: PostschedClient) -> None:
    posts = [
        client.schedule(
            target="outbox:main" if minutes % 2 else "outbox:other",
            content=f"post {minutes}",
            due_at=future(minutes),
        )
        for minutes in range(1, 6)
    ]
    client.cancel(posts[0].id)
    scheduled = client.list_posts(status="scheduled")
    assert [p.id for p in scheduled] == [p.id for p in posts[1:]]
    other = client.list_posts(target="outbox:other")
    assert [p.id for p in other] == [posts[1].id, posts[3].id]
    window = client.list_posts(due_after=posts[1].due_at, due_before=posts[3].due_at)
    assert [p.id for p in window] == [posts[1].id, posts[2].id]
    first_page = client.list_posts(limit=2)
    second_page = client.list_posts(
        limit=2, after=(first_page[-1].due_at, first_page[-1].id)
    )
    assert [p.id for p in first_page + second_page] == [p.id for p in posts[:4]]


def test_list_unknown_status_rejected(client: PostschedClient) -> None:
    with pytest.raises(ValidationError) as raised:
        client.list_posts(status="done")
    assert raised.value.field == "status"
    assert "scheduled" in raised.value.fix


def test_list_naive_bound_rejected(client: PostschedClient) -> None:
    with pytest.raises(ValidationError) as raised:
        client.list_posts(due_before=datetime(2030, 1, 1))
    assert raised.value.field == "due_before"
    assert raised.value.reason == "no time zone given"


def test_list_out_of_range_bound_rejected(client: PostschedClient) -> None:
    latest = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))
    with pytest.raises(ValidationError) as raised:
        client.list_posts(due_after=latest)
    assert raised.value.field == "due_after"
    assert "out of the range" in raised.value.reason


def test_import_stream_all_or_nothing(client: PostschedClient) -> None:
    good = f"due_at,target,content\n{future(10)},outbox:main,first\n"
    bad = good + "2030-01-01 10:00,outbox:main,second\n"
    with pytest.raises(ImportFileError) as raised:
        client.import_csv(io.StringIO(bad))
    assert [error.line for error in raised.value.errors] == [3]
    assert client.list_posts() == []
    report = client.import_csv(io.StringIO(good))
    assert [p.content for p in client.list_posts()] == ["first"]
    assert [p.id for p in report.posts] == [p.id for p in client.list_posts()]


def test_import_bulk_file(client: PostschedClient, tmp_path: object) -> None:
    path = tmp_path / "bulk.csv"  # type: ignore[operator]
    path.write_text("2040-12-24 18:00,Doors open,https://example.org\n")
    report = client.import_csv(str(path), tz="Europe/Berlin", target="outbox:news")
    assert len(report.posts) == 1
    stored = client.get(report.posts[0].id)
    assert stored.target == "outbox:news"
    assert stored.due_at.isoformat() == "2040-12-24T17:00:00+00:00"


def test_unreachable_broker_stores_post(settings: Settings) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    offline = settings.model_copy(
        update={"broker_url": closed, "result_backend": closed}
    )
    with PostschedClient(offline) as client:
        post = client.schedule(target="outbox:main", content="kept", due_at=future())
        assert client.wake_error is not None
        assert client.get(post.id).status is PostStatus.SCHEDULED
