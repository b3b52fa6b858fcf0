"""The chain's compare-and-set record, on a real Redis, with a recording task sender."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
import redis

from scheduler.chain import Chain
from scheduler.keys import RedisKeys
from scheduler.model import utc_now

MAX_INTERVAL_S = 60.0
LOST_GRACE_S = 30.0


@dataclass
class RecordingTasks:
    """Check tasks that are recorded instead of sent; states are set by the test."""

    sent: list[tuple[str, float]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    fail_sends: bool = False

    def send_check(
        self, task_id: str, countdown_s: float, due_at: datetime | None
    ) -> None:
        if self.fail_sends:
            raise ConnectionError("broker unreachable")
        self.sent.append((task_id, countdown_s))

    def check_state(self, task_id: str) -> str:
        return self.states.get(task_id, "PENDING")

    def revoke_check(self, task_id: str) -> None:
        self.revoked.append(task_id)


@pytest.fixture
def tasks() -> RecordingTasks:
    return RecordingTasks()


@pytest.fixture
def chain(redis_client: redis.Redis, tasks: RecordingTasks) -> Chain:
    return Chain(
        redis_client, RedisKeys("chaintest"), tasks, MAX_INTERVAL_S, LOST_GRACE_S
    )


def test_arm_records_and_sends(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    task_id = chain.arm(now)
    record = chain.current()
    assert record is not None
    assert record.task_id == task_id
    assert tasks.sent == [(task_id, 0.0)]


def test_arm_twice_keeps_first(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    first = chain.arm(now)
    second = chain.arm(now)
    assert second is None
    assert chain.is_current(first or "")
    assert len(tasks.sent) == 1


def test_wake_idle_arms_at_due_time(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    task_id = chain.wake(now + timedelta(seconds=5), now)
    assert task_id is not None
    assert tasks.sent == [(task_id, 5.0)]


def test_wake_later_post_keeps_pending_check(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    first = chain.wake(now + timedelta(seconds=5), now)
    assert chain.wake(now + timedelta(seconds=30), now) is None
    assert chain.is_current(first or "")
    assert tasks.revoked == []


def test_wake_earlier_post_replaces_and_revokes(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    first = chain.wake(now + timedelta(seconds=30), now)
    second = chain.wake(now + timedelta(seconds=2), now)
    assert second is not None
    assert second != first
    assert chain.is_current(second)
    assert tasks.revoked == [first]
    assert tasks.sent[-1] == (second, 2.0)


def test_wake_earlier_never_revokes_started(
    chain: Chain, tasks: RecordingTasks, caplog: pytest.LogCaptureFixture
) -> None:
    now = utc_now()
    running = chain.wake(now + timedelta(seconds=30), now) or ""
    tasks.states[running] = "STARTED"
    chain.hold_lease(running)
    with caplog.at_level(logging.DEBUG, logger="scheduler.chain"):
        replacement = chain.wake(now + timedelta(seconds=2), now)
    assert replacement is not None
    assert tasks.revoked == []
    assert (
        f"check {running} is running; replaced by check {replacement} without revoking it"
        in caplog.text
    )


def test_wake_earlier_revokes_started_without_lease(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    dead = chain.wake(now + timedelta(seconds=30), now) or ""
    tasks.states[dead] = "STARTED"
    replacement = chain.wake(now + timedelta(seconds=2), now)
    assert replacement is not None
    assert tasks.revoked == [dead]


def test_released_lease_is_not_running(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    task_id = chain.arm(now) or ""
    tasks.states[task_id] = "STARTED"
    chain.hold_lease(task_id)
    assert chain.is_running(task_id)
    chain.release_lease(task_id)
    assert not chain.is_running(task_id)


def test_wake_during_running_check_leaves_note(
    chain: Chain, tasks: RecordingTasks
) -> None:
    started_at = utc_now()
    running = chain.arm(started_at) or ""
    now = started_at + timedelta(seconds=1)
    due = now + timedelta(seconds=3)
    assert chain.wake(due, now) is None
    record = chain.current()
    assert record is not None
    assert record.wake_at == due
    successor = chain.succeed(running, due + timedelta(seconds=40), now)
    assert successor is not None
    assert tasks.sent[-1] == (successor, 3.0)


def test_succeed_caps_at_max_interval(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    running = chain.arm(now) or ""
    successor = chain.succeed(running, now + timedelta(hours=5), now)
    assert tasks.sent[-1] == (successor, MAX_INTERVAL_S)


def test_succeed_idle_store_keeps_chain_alive(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    running = chain.arm(now) or ""
    successor = chain.succeed(running, None, now)
    assert successor is not None
    assert tasks.sent[-1] == (successor, MAX_INTERVAL_S)


def test_succeed_overdue_post_runs_now(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    running = chain.arm(now) or ""
    successor = chain.succeed(running, now - timedelta(seconds=10), now)
    assert tasks.sent[-1] == (successor, 0.0)


def test_succeed_by_superseded_check_sends_nothing(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    chain.arm(now)
    assert chain.succeed("not-the-recorded-id", now, now) is None
    assert len(tasks.sent) == 1


def test_clear_only_own_record(chain: Chain) -> None:
    now = utc_now()
    task_id = chain.arm(now) or ""
    assert not chain.clear("another-id")
    assert chain.clear(task_id)
    assert chain.current() is None


def test_failed_send_clears_record(chain: Chain, tasks: RecordingTasks) -> None:
    tasks.fail_sends = True
    with pytest.raises(ConnectionError):
        chain.arm(utc_now())
    assert chain.current() is None


def test_repair_arms_idle_chain(chain: Chain, tasks: RecordingTasks) -> None:
    task_id = chain.repair(utc_now())
    assert task_id is not None
    assert chain.is_current(task_id)


def test_repair_keeps_check_within_grace(chain: Chain) -> None:
    now = utc_now()
    chain.arm(now)
    assert chain.repair(now + timedelta(seconds=LOST_GRACE_S - 1)) is None


def test_repair_replaces_lost_pending_check(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    lost = chain.arm(now)
    replacement = chain.repair(now + timedelta(seconds=LOST_GRACE_S + 1))
    assert replacement is not None
    assert chain.is_current(replacement)
    assert tasks.revoked == [lost]


def test_repair_keeps_running_check(chain: Chain, tasks: RecordingTasks) -> None:
    now = utc_now()
    running = chain.arm(now) or ""
    tasks.states[running] = "STARTED"
    chain.hold_lease(running)
    assert chain.repair(now + timedelta(seconds=LOST_GRACE_S + 1)) is None
    assert chain.is_current(running)


def test_repair_replaces_started_without_lease(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    dead = chain.arm(now) or ""
    tasks.states[dead] = "STARTED"
    replacement = chain.repair(now + timedelta(seconds=LOST_GRACE_S + 1))
    assert replacement is not None
    assert chain.is_current(replacement)


def test_arm_far_post_capped_at_max_interval(
    chain: Chain, tasks: RecordingTasks
) -> None:
    now = utc_now()
    task_id = chain.wake(now + timedelta(days=30), now)
    assert tasks.sent == [(task_id, MAX_INTERVAL_S)]
