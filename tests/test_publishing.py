"""Publishing claimed posts: outcomes, retries in the store, redeliveries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings, WebhookSettings
from scheduler.errors import (
    PermanentPublishError,
    PublishError,
    RateLimitedError,
    StoreUnavailableError,
    TransientPublishError,
    UnknownOutcomeError,
)
from scheduler.model import Post, PostStatus, utc_now
from scheduler.publishers import Publishers
from scheduler.publishers.base import PublishResult
from scheduler.publishers.outbox import read_outbox
from scheduler.publishing import RetryPolicy, publish_claimed
from scheduler.store.sql import SqlStore

POLICY = RetryPolicy(max_attempts=3, backoff_s=10.0, backoff_max_s=600.0)


class ScriptedPublisher:
    """Raises the scripted errors in turn, then publishes; counts calls per post."""

    name = "scripted"

    def __init__(self, *script: PublishError) -> None:
        self.script = list(script)
        self.calls: Counter[str] = Counter()

    def for_target(self, target: str) -> ScriptedPublisher:
        return self

    def can_find(self, account: str) -> bool:
        return False

    def max_attempts(self, account: str) -> int | None:
        return None

    def publish(self, post: Post) -> PublishResult:
        self.calls[post.id] += 1
        if self.script:
            raise self.script.pop(0)
        return PublishResult(published_at=utc_now(), external_id=f"ext-{post.id}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    sql = SqlStore(f"sqlite:///{tmp_path / 'posts.db'}")
    yield sql
    sql.close()


def claim_one(store: SqlStore, attempt_id: str = "attempt-1") -> Post:
    now = utc_now()
    claimed = store.claim_due(now, 1, attempt_id, now + timedelta(minutes=5))
    assert len(claimed) == 1
    return claimed[0]


def add_due_post(store: SqlStore) -> Post:
    now = utc_now()
    post = Post(
        id="p1",
        target="outbox:main",
        content="hi",
        due_at=now - timedelta(seconds=1),
        timezone="UTC",
    )
    store.add([post])
    return post


def run(
    store: SqlStore, publisher: ScriptedPublisher, attempt_id: str = "attempt-1"
) -> tuple[dict[str, int], list[datetime]]:
    woken: list[datetime] = []
    outcomes = publish_claimed(
        store, publisher, attempt_id, ["p1"], policy=POLICY, wake=woken.append
    )  # type: ignore[arg-type]
    return outcomes, woken


def test_success_marks_published(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    publisher = ScriptedPublisher()
    outcomes, _ = run(store, publisher)
    post = store.get("p1")
    assert outcomes == {"published": 1}
    assert post.status is PostStatus.PUBLISHED
    assert post.external_id == "ext-p1"


def test_transient_error_retries_in_store(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    before = utc_now()
    outcomes, woken = run(
        store, ScriptedPublisher(TransientPublishError("503 from platform"))
    )
    post = store.get("p1")
    assert outcomes == {"retried": 1}
    assert post.status is PostStatus.SCHEDULED
    assert post.attempts == 1
    assert post.last_error == "503 from platform"
    assert (
        before + timedelta(seconds=5)
        <= post.due_at
        <= utc_now() + timedelta(seconds=10)
    )
    assert woken == [post.due_at]


def test_rate_limit_waits_retry_after(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    before = utc_now()
    run(
        store,
        ScriptedPublisher(RateLimitedError("429 Too Many Requests", retry_after_s=2.0)),
    )
    post = store.get("p1")
    assert post.status is PostStatus.SCHEDULED
    assert (
        before + timedelta(seconds=2) <= post.due_at <= utc_now() + timedelta(seconds=2)
    )


def test_retry_then_success_publishes_once(store: SqlStore) -> None:
    add_due_post(store)
    publisher = ScriptedPublisher(TransientPublishError("connection refused"))
    claim_one(store, "attempt-1")
    run(store, publisher, "attempt-1")
    # Makes the retry due now instead of after the backoff.
    with store._transaction("test") as connection:
        connection.exec_driver_sql(
            "UPDATE posts SET due_at = '2000-01-01 00:00:00.000000'"
        )
    claim_one(store, "attempt-2")
    outcomes, _ = run(store, publisher, "attempt-2")
    post = store.get("p1")
    assert outcomes == {"published": 1}
    assert post.attempts == 2
    assert publisher.calls["p1"] == 2


def test_no_retries_left_fails(store: SqlStore) -> None:
    add_due_post(store)
    with store._transaction("test") as connection:
        connection.exec_driver_sql("UPDATE posts SET attempts = 2")
    claim_one(store)
    outcomes, woken = run(store, ScriptedPublisher(TransientPublishError("503")))
    post = store.get("p1")
    assert outcomes == {"failed": 1}
    assert post.status is PostStatus.FAILED
    assert "attempt 3 of 3, no retries left" in (post.last_error or "")
    assert woken == []


def test_permanent_error_fails_once(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    publisher = ScriptedPublisher(PermanentPublishError("422: text too long"))
    outcomes, _ = run(store, publisher)
    post = store.get("p1")
    assert outcomes == {"failed": 1}
    assert post.status is PostStatus.FAILED
    assert post.last_error == "422: text too long"
    assert publisher.calls["p1"] == 1


def test_unknown_outcome_is_unconfirmed(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    outcomes, woken = run(
        store, ScriptedPublisher(UnknownOutcomeError("read timed out"))
    )
    post = store.get("p1")
    assert outcomes == {"unconfirmed": 1}
    assert post.status is PostStatus.UNCONFIRMED
    assert woken == []


def test_redelivered_message_skipped(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store, "current-attempt")
    publisher = ScriptedPublisher()
    outcomes, _ = run(store, publisher, "stale-attempt")
    assert outcomes == {"skipped": 1}
    assert publisher.calls["p1"] == 0
    assert store.get("p1").status is PostStatus.PUBLISHING


class FlakyRecordStore(SqlStore):
    """Fails the first two attempts to record a published post."""

    failures_left = 2

    def mark_published(self, *args: Any, **kwargs: Any) -> bool:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreUnavailableError("store at sqlite:///posts.db is unreachable")
        return super().mark_published(*args, **kwargs)


def test_store_outage_after_send_no_resend(tmp_path: Path) -> None:
    store = FlakyRecordStore(f"sqlite:///{tmp_path / 'posts.db'}")
    add_due_post(store)
    claim_one(store)
    publisher = ScriptedPublisher()
    outcomes = publish_claimed(store, publisher, "attempt-1", ["p1"], policy=POLICY)  # type: ignore[arg-type]
    post = store.get("p1")
    store.close()
    assert outcomes == {"published": 1}
    assert publisher.calls["p1"] == 1
    assert post.status is PostStatus.PUBLISHED
    assert post.external_id == "ext-p1"


@pytest.fixture
def outbox_publishers(tmp_path: Path) -> Iterator[Publishers]:
    publishers = Publishers(Settings(data_dir=tmp_path, outbox_dir=tmp_path / "outbox"))
    yield publishers
    publishers.close()


def deliver(
    store: SqlStore, publishers: Any, attempt_id: str = "attempt-1"
) -> dict[str, int]:
    return publish_claimed(store, publishers, attempt_id, ["p1"], policy=POLICY)


def outbox_ids(tmp_path: Path) -> list[str]:
    return [line["post_id"] for line in read_outbox(tmp_path / "outbox" / "main.jsonl")]


def test_interrupted_after_write_not_resent(
    store: SqlStore, outbox_publishers: Publishers, tmp_path: Path
) -> None:
    post = add_due_post(store)
    claim_one(store)
    store.begin_delivery("p1", "attempt-1")
    # The first delivery wrote the line, then its worker died before the store update.
    outbox_publishers.for_target(post.target).publish(post)
    outcomes = deliver(store, outbox_publishers)
    assert outcomes == {"published": 1}
    assert outbox_ids(tmp_path) == ["p1"]
    assert store.get("p1").external_id == "main:0"


def test_interrupted_before_write_sends_once(
    store: SqlStore, outbox_publishers: Publishers, tmp_path: Path
) -> None:
    add_due_post(store)
    claim_one(store)
    store.begin_delivery("p1", "attempt-1")
    outcomes = deliver(store, outbox_publishers)
    assert outcomes == {"published": 1}
    assert outbox_ids(tmp_path) == ["p1"]


def test_interrupted_without_lookup_unconfirmed(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    store.begin_delivery("p1", "attempt-1")

    class NoLookup(ScriptedPublisher):
        name = "nolookup"

        def find(self, post: Post) -> PublishResult | None:
            raise NotImplementedError

    publisher = NoLookup()
    outcomes = deliver(store, publisher)
    post = store.get("p1")
    assert outcomes == {"unconfirmed": 1}
    assert publisher.calls["p1"] == 0
    assert "cannot look posts up" in (post.last_error or "")


def test_poison_post_fails_after_max_deliveries(
    store: SqlStore, outbox_publishers: Publishers
) -> None:
    add_due_post(store)
    claim_one(store)
    for _ in range(POLICY.max_deliveries):
        store.begin_delivery("p1", "attempt-1")
    outcomes = deliver(store, outbox_publishers)
    post = store.get("p1")
    assert outcomes == {"failed": 1}
    assert post.status is PostStatus.FAILED
    assert "stopped the worker 3 times" in (post.last_error or "")


def test_attempts_recorded_in_history(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store, "attempt-1")
    run(
        store,
        ScriptedPublisher(TransientPublishError("503 from platform")),
        "attempt-1",
    )
    with store._transaction("test") as connection:
        connection.exec_driver_sql(
            "UPDATE posts SET due_at = '2000-01-01 00:00:00.000000'"
        )
    claim_one(store, "attempt-2")
    run(store, ScriptedPublisher(), "attempt-2")
    history = store.list_attempts("p1")
    assert [attempt.outcome for attempt in history] == ["retried", "published"]
    assert history[0].error == "503 from platform"
    assert history[1].error is None
    assert all(attempt.duration_ms >= 0 for attempt in history)


def test_account_max_attempts_overrides_global(tmp_path: Path, store: SqlStore) -> None:
    hooks = {"strict": WebhookSettings(url="http://127.0.0.1:9/hook", max_attempts=1)}
    publishers = Publishers(Settings(data_dir=tmp_path, webhooks=hooks))
    now = utc_now()
    store.add(
        [
            Post(
                id="p1",
                target="webhook:strict",
                content="hi",
                due_at=now,
                timezone="UTC",
            )
        ]
    )
    claim_one(store)
    outcomes = publish_claimed(store, publishers, "attempt-1", ["p1"], policy=POLICY)
    publishers.close()
    post = store.get("p1")
    assert outcomes == {"failed": 1}
    assert "attempt 1 of 1, no retries left" in (post.last_error or "")


def test_huge_retry_after_capped(store: SqlStore) -> None:
    add_due_post(store)
    claim_one(store)
    run(
        store,
        ScriptedPublisher(RateLimitedError("429", retry_after_s=99_999_999_999_999.0)),
    )
    post = store.get("p1")
    assert post.status is PostStatus.SCHEDULED
    assert post.due_at <= utc_now() + timedelta(days=1)


def test_batch_one_failure_others_published(tmp_path: Path, store: SqlStore) -> None:
    now = utc_now()
    batch = [
        Post(
            id=f"b{index}",
            target="outbox:main",
            content=f"post {index}",
            due_at=now - timedelta(seconds=1),
            timezone="UTC",
        )
        for index in range(5)
    ]
    # Its webhook account was removed from the settings after it was scheduled.
    batch[2] = Post(
        id="b2",
        target="webhook:removed",
        content="post 2",
        due_at=now - timedelta(seconds=1),
        timezone="UTC",
    )
    store.add(batch)
    claimed = store.claim_due(now, 10, "attempt-1", now + timedelta(minutes=5))
    publishers = Publishers(Settings(data_dir=tmp_path, outbox_dir=tmp_path))

    outcomes = publish_claimed(
        store, publishers, "attempt-1", [post.id for post in claimed], policy=POLICY
    )

    assert outcomes == {"published": 4, "failed": 1}
    failed = store.get("b2")
    assert failed.status is PostStatus.FAILED
    assert "not configured" in (failed.last_error or "")
    for post_id in ("b0", "b1", "b3", "b4"):
        assert store.get(post_id).status is PostStatus.PUBLISHED
        assert store.get(post_id).deliveries == 1
        assert [a.outcome for a in store.list_attempts(post_id)] == ["published"]
    lines = read_outbox(tmp_path / "main.jsonl")
    assert sorted(line["post_id"] for line in lines) == ["b0", "b1", "b3", "b4"]


def test_batch_redelivered_sends_nothing_twice(tmp_path: Path, store: SqlStore) -> None:
    now = utc_now()
    store.add(
        [
            Post(
                id=f"r{index}",
                target="outbox:main",
                content=f"post {index}",
                due_at=now - timedelta(seconds=1),
                timezone="UTC",
            )
            for index in range(4)
        ]
    )
    ids = [
        post.id for post in store.claim_due(now, 10, "a1", now + timedelta(minutes=5))
    ]
    publishers = Publishers(Settings(data_dir=tmp_path, outbox_dir=tmp_path))
    # A first delivery that died after sending r0 and before recording it.
    store.begin_first_deliveries(ids, "a1")
    publishers.for_target("outbox:main").publish(store.get("r0"))

    outcomes = publish_claimed(store, publishers, "a1", ids, policy=POLICY)

    assert outcomes == {"published": 4}
    lines = read_outbox(tmp_path / "main.jsonl")
    assert sorted(line["post_id"] for line in lines) == ids
    for post_id in ids:
        assert store.get(post_id).status is PostStatus.PUBLISHED
        assert store.get(post_id).deliveries == 2
