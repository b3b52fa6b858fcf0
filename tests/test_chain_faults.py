"""The check chain under faults, on real workers, a real Redis and SQLite.

Each test reproduces one way a chain of self-scheduling check tasks breaks:
a redelivered message, forked chains, a lost revoke, a check message that
never existed, a worker killed during a check, a broker that lost its state,
and a pile-up of ETA messages. Workers are ``celery worker`` subprocesses
unless a test needs log capture, which takes the in-process ``worker``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import states
from celery.signals import task_success
from faults import (
    INSPECT_TIMEOUT_S,
    RedisServer,
    WorkerProcess,
    Workers,
    outbox_counts,
    pending_checks,
    wait_for,
)
from typer.testing import CliRunner

from scheduler.cli import EXIT_FAILED
from scheduler.cli import app as cli_app
from scheduler.config import Settings
from scheduler.errors import ConfigError
from scheduler.keys import CHECK_QUEUE, CHECK_TASK_NAME, RedisKeys
from scheduler.model import Post, PostStatus, utc_now
from tasks.app import PostschedCelery, create_app

# Settings of the tests that wait for the watchdog, in seconds.
FAST_CHECK_LEASE_S = 3.0
FAST_WATCHDOG_INTERVAL_S = 0.5
FAST_LOST_GRACE_S = 1.0
FAST_CHAIN_ENV = {
    "POSTSCHED_CHECK_LEASE": str(FAST_CHECK_LEASE_S),
    "POSTSCHED_WATCHDOG_INTERVAL": str(FAST_WATCHDOG_INTERVAL_S),
    "POSTSCHED_LOST_CHECK_GRACE": str(FAST_LOST_GRACE_S),
}
# How long a test watches the chain for a second pending check, in seconds.
WATCH_WINDOW_S = 3.0
# Watchdog interval of the Redis restart test, in seconds.
REARM_WATCHDOG_INTERVAL_S = 1.0
# Lead time of the post scheduled just before Redis restarts, in seconds.
REDIS_RESTART_LEAD_S = 8.0
# Time for a worker to notice that Redis restarted and connect again, in seconds.
RECONNECT_ALLOWANCE_S = 5.0
# Time for 50 posts due over about 8 s to be published, in seconds.
CYCLES_TIMEOUT_S = 40.0
# Resident memory that 9,900 more future posts may add to a worker, in KiB.
RSS_GROWTH_LIMIT_KB = 3 * 1024


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    """Starts ``celery worker`` subprocesses on the test's settings; stops them all after."""
    started = Workers(settings, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def check_runs() -> Iterator[list[tuple[str, dict[str, object]]]]:
    """Collects ``(task_id, result)`` of every check that the in-process worker runs."""
    runs: list[tuple[str, dict[str, object]]] = []

    def record(sender: Any, result: Any, **kwargs: Any) -> None:
        if sender.name == CHECK_TASK_NAME:
            runs.append((sender.request.id, result))

    task_success.connect(record, weak=False)
    yield runs
    task_success.disconnect(record)


def make_post(due_at: datetime, content: str = "hello") -> Post:
    return Post(
        id=uuid.uuid4().hex,
        target="outbox:main",
        content=content,
        due_at=due_at,
        timezone="UTC",
    )


def schedule_in(app: PostschedCelery, seconds: float, content: str = "hello") -> Post:
    due = utc_now() + timedelta(seconds=seconds)
    return app.runtime.service.schedule(
        target="outbox:main", content=content, due_at=due
    )


def all_published(app: PostschedCelery, posts: list[Post]) -> bool:
    stored = app.runtime.store.list_posts(ids=[post.id for post in posts], limit=None)
    return len(stored) == len(posts) and all(
        post.status is PostStatus.PUBLISHED for post in stored
    )


def recorded_id(app: PostschedCelery) -> str | None:
    record = app.runtime.chain.current()
    return None if record is None else record.task_id


def start_ready(workers: Workers, name: str, **env: str) -> WorkerProcess:
    worker = workers.start(name, **env)
    worker.wait_ready()
    return worker


def waiting_check(app: PostschedCelery) -> str | None:
    """Return the recorded check when it waits for an ETA in the future, else None."""
    record = app.runtime.chain.current()
    if record is None or record.eta <= utc_now():
        return None
    return record.task_id


def wait_for_next_check(app: PostschedCelery, timeout_s: float = 10.0) -> str:
    """Wait until another check is recorded; return its task id."""
    previous = recorded_id(app)
    return wait_for(
        lambda: (current := recorded_id(app)) != previous and current,
        timeout_s=timeout_s,
    )


def runs_of(
    check_runs: list[tuple[str, dict[str, object]]], task_id: str, count: int
) -> list[dict[str, object]] | None:
    """Return the results of check ``task_id`` once it ran ``count`` times, else None."""
    results = [result for ran_id, result in check_runs if ran_id == task_id]
    return results if len(results) >= count else None


def watch_pending(
    app: PostschedCelery, worker_count: int, duration_s: float
) -> list[list[str]]:
    """Sample the pending check messages for ``duration_s`` seconds."""
    samples = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        samples.append(pending_checks(app, worker_count))
    return samples


# -- A message delivered twice: the visibility timeout, or a duplicate.


def test_app_rejects_interval_over_visibility(settings: Settings) -> None:
    risky = settings.model_copy(
        update={"visibility_timeout_s": 5.0, "max_check_interval_s": 10.0}
    )
    with pytest.raises(ConfigError) as caught:
        create_app(risky)
    message = str(caught.value)
    assert "POSTSCHED_MAX_CHECK_INTERVAL=10 s" in message
    assert "visibility timeout of 5 s" in message
    assert "at most 2.5 s" in message
    assert "raise POSTSCHED_VISIBILITY_TIMEOUT" in message


def test_redelivered_check_claims_once(
    celery_app: PostschedCelery,
    worker: object,
    settings: Settings,
    check_runs: list[tuple[str, dict[str, object]]],
) -> None:
    chain = celery_app.runtime.chain
    wait_for(chain.current)
    posts = [schedule_in(celery_app, 2, f"post {index}") for index in range(5)]
    record = chain.current()
    assert record is not None
    # A second copy with the same ETA, as the Redis transport restores an
    # unacknowledged message after its visibility timeout.
    celery_app.send_task(
        CHECK_TASK_NAME, task_id=record.task_id, eta=record.eta, queue=CHECK_QUEUE
    )
    wait_for(lambda: all_published(celery_app, posts))
    copies = wait_for(lambda: runs_of(check_runs, record.task_id, count=2))
    pending = watch_pending(celery_app, 1, WATCH_WINDOW_S)
    assert outbox_counts(settings) == {post.id: 1 for post in posts}
    assert sum(copy["successor_id"] is not None for copy in copies) == 1
    assert max(len(sample) for sample in pending) == 1
    assert {task_id for sample in pending for task_id in sample} == {
        recorded_id(celery_app)
    }


# -- Chain forks.


def test_stale_duplicate_exits_at_start(
    celery_app: PostschedCelery,
    worker: object,
    settings: Settings,
    check_runs: list[tuple[str, dict[str, object]]],
) -> None:
    chain = celery_app.runtime.chain
    wait_for(chain.current)
    post = schedule_in(celery_app, 1)
    ran = chain.current()
    assert ran is not None
    wait_for(lambda: all_published(celery_app, [post]))
    successor = wait_for(lambda: waiting_check(celery_app))
    # The same message again, after its check ran and handed over.
    celery_app.send_task(CHECK_TASK_NAME, task_id=ran.task_id, queue=CHECK_QUEUE)
    copies = wait_for(lambda: runs_of(check_runs, ran.task_id, count=2))
    pending = watch_pending(celery_app, 1, WATCH_WINDOW_S)
    assert copies[1] == {"superseded": True, "claimed": 0, "successor_id": None}
    assert outbox_counts(settings) == {post.id: 1}
    assert recorded_id(celery_app) == successor
    assert pending
    assert all(sample == [successor] for sample in pending)


def test_three_workers_arm_one_check(
    celery_app: PostschedCelery, workers: Workers
) -> None:
    started = [
        workers.start(f"w{index}", POSTSCHED_MAX_CHECK_INTERVAL="1")
        for index in range(3)
    ]
    for worker in started:
        worker.wait_ready()
    pending = watch_pending(celery_app, len(started), WATCH_WINDOW_S)
    logs = "".join(worker.log_text() for worker in started)
    assert logs.count("armed the check chain") == 1
    assert max(len(sample) for sample in pending) == 1
    assert recorded_id(celery_app) is not None


def test_fifty_cycles_one_pending_check(
    celery_app: PostschedCelery,
    workers: Workers,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = [start_ready(workers, f"w{index}") for index in range(3)]
    wait_for(lambda: recorded_id(celery_app))
    shuffle = random.Random(50)
    due_at = utc_now() + timedelta(seconds=1)
    plan: list[tuple[datetime, datetime]] = []
    for _ in range(50):
        due_at += timedelta(seconds=shuffle.uniform(0.1, 0.2))
        # Random lead times submit some posts after a later one, so they
        # replace the pending check; others arrive while a check runs.
        submit_at = due_at - timedelta(seconds=shuffle.uniform(0.15, 0.6))
        plan.append((submit_at, due_at))
    plan.sort()
    posts: list[Post] = []
    samples: list[tuple[str | None, list[str], str | None]] = []
    deadline = time.monotonic() + CYCLES_TIMEOUT_S
    with caplog.at_level(logging.DEBUG, logger="scheduler.chain"):
        while plan or not all_published(celery_app, posts):
            assert time.monotonic() < deadline, "posts still unpublished"
            while plan and plan[0][0] <= utc_now():
                _, due = plan.pop(0)
                posts.append(
                    celery_app.runtime.service.schedule(
                        target="outbox:main", content=f"post {len(posts)}", due_at=due
                    )
                )
            before = recorded_id(celery_app)
            pending = pending_checks(celery_app, len(started))
            samples.append((before, pending, recorded_id(celery_app)))
    unrecorded = [
        task_id
        for before, pending, after in samples
        for task_id in pending
        if task_id not in (before, after)
    ]
    assert outbox_counts(settings) == {post.id: 1 for post in posts}
    assert max(len(pending) for _, pending, _ in samples) == 1
    assert unrecorded == []
    assert "revoked check" in caplog.text


# -- A revoke sent while no worker listens is lost.


def test_lost_revoke_check_exits(
    celery_app: PostschedCelery, workers: Workers, settings: Settings
) -> None:
    first = start_ready(workers, "first")
    wait_for(lambda: waiting_check(celery_app))
    first.stop()
    later = schedule_in(celery_app, 6, "later")
    superseded = recorded_id(celery_app)
    earlier = schedule_in(celery_app, 3, "earlier")
    assert superseded is not None
    assert recorded_id(celery_app) != superseded
    second = start_ready(workers, "second")
    result = celery_app.AsyncResult(superseded).get(timeout=15)
    wait_for(lambda: all_published(celery_app, [earlier, later]))
    assert result == {"superseded": True, "claimed": 0, "successor_id": None}
    assert (
        f"check {superseded} is not the recorded check; exiting without claiming"
        in second.log_text()
    )
    assert outbox_counts(settings) == {earlier.id: 1, later.id: 1}


# -- PENDING also means "unknown": a recorded check whose message never existed.


def test_unknown_pending_check_replaced(
    celery_app: PostschedCelery,
    settings: Settings,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.lost_check_grace_s = FAST_LOST_GRACE_S
    settings.watchdog_interval_s = FAST_WATCHDOG_INTERVAL_S
    due = make_post(utc_now() - timedelta(seconds=1))
    celery_app.runtime.store.add([due])
    phantom = str(uuid.uuid4())
    redis_client.hset(
        RedisKeys(settings.key_prefix).chain,
        mapping={"task_id": phantom, "eta_ms": int(time.time() * 1000)},
    )
    with caplog.at_level(logging.INFO):
        request.getfixturevalue("worker")
        wait_for(lambda: all_published(celery_app, [due]))
        pending = watch_pending(celery_app, 1, WATCH_WINDOW_S)
    assert caplog.text.count("taking it as lost and replacing it") == 1
    assert f"check {phantom} is still PENDING" in caplog.text
    assert caplog.text.count("the chain watchdog started check") == 1
    assert all(sample == [recorded_id(celery_app)] for sample in pending)
    assert outbox_counts(settings) == {due.id: 1}


# -- STARTED forever: the worker running a check was killed.


def lock_store(settings: Settings) -> sqlite3.Connection:
    """Hold the write lock of the SQLite store, so a check blocks in its first statement."""
    path = settings.resolved_store_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def test_killed_check_replaced_after_lease(
    celery_app: PostschedCelery, workers: Workers, settings: Settings
) -> None:
    first = start_ready(workers, "first", **FAST_CHAIN_ENV)
    chain = celery_app.runtime.chain
    wait_for(lambda: waiting_check(celery_app))
    posts = [make_post(utc_now(), f"post {index}") for index in range(20)]
    celery_app.runtime.store.add(posts)
    lock = lock_store(settings)
    try:
        stuck = chain.wake(utc_now(), utc_now())
        assert stuck is not None
        wait_for(lambda: chain.is_running(stuck))
        first.kill()
    finally:
        lock.rollback()
        lock.close()
    # The dead worker never reports an end: the check stays STARTED.
    state_after_kill = celery_app.AsyncResult(stuck).state
    second = workers.start("second", **FAST_CHAIN_ENV)
    ready_at = second.wait_ready()
    wait_for(lambda: recorded_id(celery_app) != stuck, timeout_s=30)
    replaced_after_s = time.monotonic() - ready_at
    wait_for(lambda: all_published(celery_app, posts))
    assert state_after_kill == "STARTED"
    assert replaced_after_s <= (
        FAST_CHECK_LEASE_S + FAST_WATCHDOG_INTERVAL_S + FAST_LOST_GRACE_S
    )
    assert outbox_counts(settings) == {post.id: 1 for post in posts}


# -- The broker lost its state: Redis restarted empty.


def test_empty_redis_rearmed_by_watchdog(settings: Settings, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    own = settings.model_copy(
        update={"broker_url": server.url, "result_backend": server.url}
    )
    app = create_app(own)
    own_workers = Workers(own, tmp_path)
    env = {"POSTSCHED_WATCHDOG_INTERVAL": str(REARM_WATCHDOG_INTERVAL_S)}
    try:
        # Two workers: one holds the pending check message, the other none.
        started = [start_ready(own_workers, f"w{index}", **env) for index in range(2)]
        wait_for(lambda: waiting_check(app))
        # Scheduled while the chain is intact, due after Redis has lost the
        # check message and the chain record.
        post = schedule_in(app, REDIS_RESTART_LEAD_S, "after the restart")
        lost = recorded_id(app)
        assert lost is not None
        server.shutdown()
        server.start()
        restarted_at = time.monotonic()
        wait_for(lambda: recorded_id(app) not in (None, lost), timeout_s=30)
        armed_after_s = time.monotonic() - restarted_at
        wait_for(lambda: all_published(app, [post]))
        exit_codes = {worker.name: worker.process.poll() for worker in started}
    finally:
        own_workers.close()
        server.shutdown()
        app.runtime.close()
        app.close()
    assert armed_after_s <= REARM_WATCHDOG_INTERVAL_S + RECONNECT_ALLOWANCE_S
    assert outbox_counts(own) == {post.id: 1}
    # The worker that held the check message survives the lost connection.
    assert exit_codes == {"w0": None, "w1": None}


# -- Self-healing logs.


def test_scheduled_check_log_names_post(
    celery_app: PostschedCelery, worker: object, caplog: pytest.LogCaptureFixture
) -> None:
    wait_for(celery_app.runtime.chain.current)
    with caplog.at_level(logging.INFO, logger="tasks.app"):
        post = schedule_in(celery_app, 3)
    record = celery_app.runtime.chain.current()
    assert record is not None
    match = re.search(
        rf"scheduled check {record.task_id} in (\S+) s for the post due at (\S+)",
        caplog.text,
    )
    assert match is not None
    assert float(match.group(1)) == pytest.approx(3, abs=0.5)
    assert match.group(2) == post.due_at.isoformat()


# -- Pile-up: many future posts, one ETA message.


def test_many_posts_one_eta_message(
    celery_app: PostschedCelery, workers: Workers
) -> None:
    worker = start_ready(workers, "w1", POSTSCHED_MAX_CHECK_INTERVAL="2")
    chain = celery_app.runtime.chain
    inspect = celery_app.control.inspect(timeout=INSPECT_TIMEOUT_S, limit=1)
    start = utc_now() + timedelta(seconds=10)
    posts = [
        make_post(start + timedelta(seconds=index * 0.35)) for index in range(10_000)
    ]
    rss_kb = []
    for batch in (posts[:100], posts[100:]):
        celery_app.runtime.store.add(batch)
        chain.wake(batch[0].due_at, utc_now())
        # The pending check runs over the stored posts, then its successor does.
        for _ in range(2):
            wait_for_next_check(celery_app)
        rss_kb.append(worker.rss_kb())
    scheduled = [inspect.scheduled() for _ in range(20)]
    assert all(len(reply) == 1 for reply in scheduled)
    assert max(len(entries) for reply in scheduled for entries in reply.values()) <= 1
    assert rss_kb[1] - rss_kb[0] < RSS_GROWTH_LIMIT_KB


# -- postsched status.


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the command line at the test settings through the environment."""
    monkeypatch.setenv("POSTSCHED_BROKER_URL", settings.broker_url or "")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", settings.result_backend or "")
    monkeypatch.setenv("POSTSCHED_STORE_URL", settings.resolved_store_url)
    monkeypatch.setenv("POSTSCHED_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POSTSCHED_KEY_PREFIX", settings.key_prefix)
    return settings


def run_status() -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli_app, ["status", "--json"])
    return result.exit_code, json.loads(result.output)


def test_status_live_check_exits_zero(
    cli_env: Settings, celery_app: PostschedCelery
) -> None:
    celery_app.runtime.store.add([make_post(utc_now() - timedelta(seconds=10))])
    celery_app.runtime.chain.arm(utc_now())
    code, report = run_status()
    assert code == 0
    assert report["check_alive"] is True


def test_status_no_check_exits_one(
    cli_env: Settings, celery_app: PostschedCelery
) -> None:
    celery_app.runtime.store.add([make_post(utc_now() - timedelta(seconds=10))])
    code, report = run_status()
    assert code == EXIT_FAILED
    assert report["check"] is None


def test_status_dead_check_exits_one(
    cli_env: Settings, celery_app: PostschedCelery, redis_client: redis.Redis
) -> None:
    celery_app.runtime.store.add([make_post(utc_now() - timedelta(seconds=60))])
    dead = str(uuid.uuid4())
    eta_ms = int((time.time() - 60) * 1000)
    redis_client.hset(
        RedisKeys(cli_env.key_prefix).chain,
        mapping={"task_id": dead, "eta_ms": eta_ms},
    )
    celery_app.backend.store_result(dead, {"pid": 1}, states.STARTED)
    code, report = run_status()
    assert code == EXIT_FAILED
    assert report["check_alive"] is False
