"""The check chain on a real in-process Celery worker, a real Redis and SQLite."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from scheduler.check import group_size_for, run_check
from scheduler.config import Settings
from scheduler.errors import StoreUnavailableError
from scheduler.model import Post, PostStatus, utc_now
from scheduler.publishers.outbox import read_outbox
from scheduler.store.base import Store
from tasks.app import PostschedCelery

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 15.0) -> T:
    """Return the first truthy value of ``condition``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout_s} s")
        time.sleep(0.02)


def schedule_in(app: PostschedCelery, seconds: float, content: str = "hello") -> Post:
    due = utc_now() + timedelta(seconds=seconds)
    return app.runtime.service.schedule(
        target="outbox:main", content=content, due_at=due
    )


def status_of(app: PostschedCelery, post: Post) -> PostStatus:
    return app.runtime.store.get(post.id).status


class StoreWrapper:
    """Passes every call to a real store; tests override single methods."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FailingClaims(StoreWrapper):
    """A store whose claims fail as if the server were down, noting each call's time."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: list[float] = []

    def claim_due(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(time.monotonic())
        raise StoreUnavailableError("store at sqlite:///test.db is unreachable")


class BlockingFirstClaim(StoreWrapper):
    """A store whose first claim waits until the test releases it."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.entered = threading.Event()
        self.release = threading.Event()

    def claim_due(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(timeout=30)
        return self.inner.claim_due(*args, **kwargs)


def test_post_published_within_one_second(
    celery_app: PostschedCelery, worker: object, settings: Settings
) -> None:
    post = schedule_in(celery_app, 2)
    wait_for(lambda: status_of(celery_app, post) is PostStatus.PUBLISHED)
    lines = read_outbox(settings.resolved_outbox_dir / "main.jsonl")
    assert [line["post_id"] for line in lines] == [post.id]
    published_at = datetime.fromisoformat(lines[0]["published_at"])
    assert published_at >= post.due_at
    assert published_at - post.due_at < timedelta(seconds=1)


def test_earlier_post_replaces_pending_check(
    celery_app: PostschedCelery, worker: object
) -> None:
    chain = celery_app.runtime.chain
    wait_for(chain.current)
    later = schedule_in(celery_app, 30, "later")
    replaced = chain.current()
    assert replaced is not None
    earlier = schedule_in(celery_app, 1, "earlier")
    replacement = chain.current()
    assert replacement is not None
    assert replacement.task_id != replaced.task_id
    assert abs((replacement.eta - earlier.due_at).total_seconds()) < 0.01
    wait_for(lambda: status_of(celery_app, earlier) is PostStatus.PUBLISHED)
    assert status_of(celery_app, later) is PostStatus.SCHEDULED


def test_replaced_check_never_claims(
    celery_app: PostschedCelery, worker: object
) -> None:
    chain = celery_app.runtime.chain
    wait_for(chain.current)
    schedule_in(celery_app, 30, "later")
    replaced = chain.current()
    assert replaced is not None
    schedule_in(celery_app, 20, "earlier")
    due_now = celery_app.runtime.service.schedule(
        target="outbox:main", content="due", due_at=utc_now()
    )
    # Runs the replaced check as if its revoke had been lost.
    result = run_check(
        replaced.task_id,
        store=celery_app.runtime.store,
        chain=chain,
        dispatch=lambda attempt_id, ids: pytest.fail(
            "a replaced check dispatched posts"
        ),
        claim_batch_size=10,
        publish_batch_size=10,
        publish_lease_s=60,
        max_attempts=3,
        missed_grace_s=3600,
    )
    assert result.superseded
    assert result.claimed == 0
    wait_for(lambda: status_of(celery_app, due_now) is PostStatus.PUBLISHED)


def test_unrecorded_check_exits_without_claiming(
    celery_app: PostschedCelery, settings: Settings
) -> None:
    store = celery_app.runtime.store
    post = celery_app.runtime.service.schedule(
        target="outbox:main", content="due", due_at=utc_now()
    )
    result = run_check(
        "a-check-nobody-recorded",
        store=store,
        chain=celery_app.runtime.chain,
        dispatch=lambda attempt_id, ids: pytest.fail(
            "an unrecorded check dispatched posts"
        ),
        claim_batch_size=10,
        publish_batch_size=10,
        publish_lease_s=60,
        max_attempts=3,
        missed_grace_s=3600,
    )
    assert result.superseded
    assert store.get(post.id).status is PostStatus.SCHEDULED


def test_store_error_retried_then_cleared(
    celery_app: PostschedCelery,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    celery_app.settings.watchdog_interval_s = 3600
    failing = FailingClaims(celery_app.runtime.store)
    celery_app.runtime.__dict__["store"] = failing
    with caplog.at_level(logging.INFO):
        request.getfixturevalue("worker")
        first = wait_for(celery_app.runtime.chain.current)
        wait_for(
            lambda: (
                len(failing.calls) == 4 and celery_app.runtime.chain.current() is None
            ),
            timeout_s=20,
        )
    gaps = [
        later - earlier
        for earlier, later in zip(failing.calls, failing.calls[1:], strict=False)
    ]
    assert gaps[0] == pytest.approx(1, abs=0.5)
    assert gaps[1] == pytest.approx(2, abs=0.5)
    assert gaps[2] == pytest.approx(4, abs=0.5)
    assert f"check {first.task_id} failed" in caplog.text
    assert "retrying in 1 s, attempt 1 of 3" in caplog.text
    assert "retrying in 4 s, attempt 3 of 3" in caplog.text
    assert f"check {first.task_id} failed after 3 retries" in caplog.text
    assert "cleared the chain" in caplog.text


def test_running_check_not_revoked(
    celery_app: PostschedCelery,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocking = BlockingFirstClaim(celery_app.runtime.store)
    celery_app.runtime.__dict__["store"] = blocking
    revoked: list[str] = []
    celery_app.control.revoke = lambda task_id, **kwargs: revoked.append(task_id)  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="scheduler.chain"):
        request.getfixturevalue("worker")
        assert blocking.entered.wait(timeout=15)
        running = celery_app.runtime.chain.current()
        assert running is not None
        wait_for(lambda: celery_app.AsyncResult(running.task_id).state == "STARTED")
        soon = schedule_in(celery_app, 1, "soon")
        overdue = celery_app.runtime.service.schedule(
            target="outbox:main",
            content="overdue",
            due_at=utc_now() - timedelta(seconds=1),
        )
        blocking.release.set()
        wait_for(lambda: status_of(celery_app, overdue) is PostStatus.PUBLISHED)
        wait_for(lambda: status_of(celery_app, soon) is PostStatus.PUBLISHED)
    assert revoked == []
    assert f"check {running.task_id} is running; replaced by check" in caplog.text


@pytest.mark.parametrize(
    ("claimed", "batch_size", "spread", "expected"),
    [
        (10, 50, 4, 3),
        (10, 50, 1, 10),
        (500, 50, 2, 50),
        (1, 50, 4, 1),
        (0, 50, 4, 1),
        (7, 2, 2, 2),
    ],
)
def test_group_size_spreads_claim(
    claimed: int, batch_size: int, spread: int, expected: int
) -> None:
    assert group_size_for(claimed, batch_size, spread) == expected
