"""The check chain: one pending check message at a time, recorded in Redis.

A check claims the posts that are due, then schedules its successor for the
next due time. Redis records the one check that may run: its task id and ETA.
A check whose id is not the recorded one exits without claiming, so a stale or
duplicated message does no harm even when a revoke was lost.

Every change of the record is a compare-and-set in a Lua script, so two
processes that act at once never leave two checks recorded:

- ``arm``: record a first check when none is recorded (a worker starts, or the
  chain was cleared after its retries ran out);
- ``wake``: a post was scheduled; replace the pending check when the post is
  due before it, or leave a wake-up note for a check that is running;
- ``succeed``: a check hands over to its successor, at the earlier of the next
  due time and any wake-up note left while it ran;
- ``clear``: a check whose retries ran out removes itself.

The Celery side (sending, inspecting and revoking check tasks) is behind the
:class:`CheckTasks` protocol, which ``tasks`` implements.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis

from scheduler.keys import RedisKeys

logger = logging.getLogger(__name__)

MAX_WAKE_ROUNDS = 10

_ARM = """
if redis.call('HEXISTS', KEYS[1], 'task_id') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'eta_ms', ARGV[2])
return 1
"""

_WAKE = """
local task_id = redis.call('HGET', KEYS[1], 'task_id')
if not task_id then return {'idle'} end
local eta = tonumber(redis.call('HGET', KEYS[1], 'eta_ms'))
local due = tonumber(ARGV[1])
if eta <= due then
  if eta <= tonumber(ARGV[2]) then
    local note = redis.call('HGET', KEYS[1], 'wake_ms')
    if not note or tonumber(note) > due then redis.call('HSET', KEYS[1], 'wake_ms', ARGV[1]) end
  end
  return {'covered', task_id}
end
return {'later', task_id}
"""

_REPLACE = """
if redis.call('HGET', KEYS[1], 'task_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'task_id', ARGV[2], 'eta_ms', ARGV[3])
redis.call('HDEL', KEYS[1], 'wake_ms')
return 1
"""

_SUCCEED = """
if redis.call('HGET', KEYS[1], 'task_id') ~= ARGV[1] then return false end
local eta = tonumber(ARGV[3])
local note = redis.call('HGET', KEYS[1], 'wake_ms')
if note and tonumber(note) < eta then eta = tonumber(note) end
redis.call('HSET', KEYS[1], 'task_id', ARGV[2], 'eta_ms', tostring(eta))
redis.call('HDEL', KEYS[1], 'wake_ms')
return tostring(eta)
"""

_CLEAR = """
if redis.call('HGET', KEYS[1], 'task_id') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class CheckTasks(Protocol):
    """Interface the chain uses to send, inspect and revoke check tasks."""

    def send_check(
        self, task_id: str, countdown_s: float, due_at: datetime | None
    ) -> None:
        """Send the check task ``task_id`` to run after ``countdown_s`` seconds."""

    def check_state(self, task_id: str) -> str:
        """Return the Celery state of the check task ``task_id``."""

    def revoke_check(self, task_id: str) -> None:
        """Revoke the check task ``task_id``, as a hint: correctness never depends on it."""


@dataclass(frozen=True)
class CheckRecord:
    """The recorded check: the only one allowed to claim posts."""

    task_id: str
    eta: datetime
    wake_at: datetime | None = None


class Chain:
    """The recorded check and the operations that change it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RedisKeys,
        tasks: CheckTasks,
        max_interval_s: float,
        lost_grace_s: float = 30.0,
        lease_s: float = 30.0,
    ) -> None:
        self._client = client
        self._keys = keys
        self._key = keys.chain
        self._tasks = tasks
        self.max_interval_s = max_interval_s
        self.lost_grace_s = lost_grace_s
        self.lease_s = lease_s
        self._arm = client.register_script(_ARM)
        self._wake = client.register_script(_WAKE)
        self._replace = client.register_script(_REPLACE)
        self._succeed = client.register_script(_SUCCEED)
        self._clear = client.register_script(_CLEAR)

    def current(self) -> CheckRecord | None:
        """Return the recorded check, or None when the chain is idle."""
        fields = self._client.hgetall(self._key)
        if not fields or b"task_id" not in fields:
            return None
        wake_ms = fields.get(b"wake_ms")
        return CheckRecord(
            task_id=_text(fields[b"task_id"]),
            eta=_from_ms(int(fields[b"eta_ms"])),
            wake_at=_from_ms(int(wake_ms)) if wake_ms else None,
        )

    def is_current(self, task_id: str) -> bool:
        """Return whether ``task_id`` is the recorded check."""
        recorded = self._client.hget(self._key, "task_id")
        return recorded is not None and _text(recorded) == task_id

    def hold_lease(self, task_id: str) -> None:
        """Take, or renew, the lease that marks check ``task_id`` as running.

        The lease expires ``lease_s`` after the last renewal, so a check whose
        worker died stops counting as running even though Celery still
        reports it STARTED.
        """
        self._client.set(
            self._keys.check_lease(task_id), b"1", px=int(self.lease_s * 1000)
        )

    def release_lease(self, task_id: str) -> None:
        """Drop the lease of check ``task_id`` when it ends."""
        self._client.delete(self._keys.check_lease(task_id))

    def check_state(self, task_id: str) -> str:
        """Return the Celery state of check ``task_id``."""
        return self._tasks.check_state(task_id)

    def is_running(self, task_id: str) -> bool:
        """Return whether check ``task_id`` is STARTED and its lease is live."""
        state = self._tasks.check_state(task_id)
        return state == "STARTED" and bool(
            self._client.exists(self._keys.check_lease(task_id))
        )

    def arm(self, now: datetime, due_at: datetime | None = None) -> str | None:
        """Start a chain with a check at ``due_at`` (now when None) if none is recorded.

        Returns the new check's task id, or None when a check was already recorded.
        """
        # Capped like every check, so a lost message is noticed within one interval.
        latest = now + timedelta(seconds=self.max_interval_s)
        eta = min(max(due_at or now, now), latest)
        task_id = _new_task_id()
        if not self._arm(keys=[self._key], args=[task_id, _to_ms(eta)]):
            return None
        self._send(task_id, eta, now, due_at)
        logger.info("armed the check chain: check %s at %s", task_id, eta.isoformat())
        return task_id

    def wake(self, due_at: datetime, now: datetime) -> str | None:
        """Make sure a check runs by ``due_at``, for a post just scheduled then.

        Returns the task id of a check sent for it, or None when the recorded
        check already runs in time.
        """
        for _ in range(MAX_WAKE_ROUNDS):
            verdict, *rest = self._wake(
                keys=[self._key], args=[_to_ms(due_at), _to_ms(now)]
            )
            if verdict == b"idle":
                task_id = self.arm(now, due_at)
                if task_id is not None:
                    return task_id
                continue
            if verdict == b"covered":
                return None
            replaced = _text(rest[0])
            task_id = self._replace_check(replaced, due_at, now)
            if task_id is not None:
                return task_id
        raise RuntimeError(
            f"the check chain changed {MAX_WAKE_ROUNDS} times while scheduling a wake-up"
        )

    def succeed(
        self, task_id: str, next_due: datetime | None, now: datetime
    ) -> str | None:
        """Record and send the successor of check ``task_id``.

        The successor runs at ``next_due``, at most ``max_interval_s`` from now,
        or earlier when a post was scheduled while the check ran. Returns the
        successor's task id, or None when ``task_id`` is no longer the recorded
        check (another check took over and schedules its own successor).
        """
        latest = now + timedelta(seconds=self.max_interval_s)
        eta = latest if next_due is None else max(min(next_due, latest), now)
        successor_id = _new_task_id()
        recorded_ms = self._succeed(
            keys=[self._key], args=[task_id, successor_id, _to_ms(eta)]
        )
        if recorded_ms is None:
            logger.info("check %s was superseded; not scheduling a successor", task_id)
            return None
        eta = max(_from_ms(int(recorded_ms)), now)
        self._send(successor_id, eta, now, next_due)
        return successor_id

    def repair(self, now: datetime) -> str | None:
        """Arm the chain if it is idle, or replace a recorded check that was lost.

        A check that has not finished ``lost_grace_s`` after its ETA, and
        holds no live lease, is taken as lost: still PENDING (Celery reports
        PENDING for unknown ids too, such as a message that vanished with a
        Redis restart), or STARTED on a worker that died. Returns the task id
        of a check sent, or None when the chain was healthy.
        """
        record = self.current()
        if record is None:
            return self.arm(now)
        overdue_s = (now - record.eta).total_seconds()
        if overdue_s <= self.lost_grace_s or self.is_running(record.task_id):
            return None
        state = self._tasks.check_state(record.task_id)
        logger.warning(
            "check %s is still %s %.1f s after its ETA, with no live lease; taking it as lost and replacing it",
            record.task_id,
            state,
            overdue_s,
        )
        return self._replace_check(record.task_id, now, now)

    def clear(self, task_id: str) -> bool:
        """Remove the record if it is still ``task_id``, so the next event starts a fresh chain."""
        return bool(self._clear(keys=[self._key], args=[task_id]))

    def _replace_check(
        self, replaced_id: str, due_at: datetime, now: datetime
    ) -> str | None:
        running = self.is_running(replaced_id)
        eta = max(due_at, now)
        task_id = _new_task_id()
        if not self._replace(
            keys=[self._key], args=[replaced_id, task_id, _to_ms(eta)]
        ):
            return None
        if running:
            logger.debug(
                "check %s is running; replaced by check %s without revoking it",
                replaced_id,
                task_id,
            )
        else:
            self._tasks.revoke_check(replaced_id)
            logger.debug("revoked check %s, replaced by check %s", replaced_id, task_id)
        self._send(task_id, eta, now, due_at)
        return task_id

    def _send(
        self, task_id: str, eta: datetime, now: datetime, due_at: datetime | None
    ) -> None:
        countdown_s = max((eta - now).total_seconds(), 0.0)
        try:
            self._tasks.send_check(task_id, countdown_s, due_at)
        except Exception:
            # A record whose message never left would block every later
            # wake-up until its ETA passed; drop it so the next event re-arms.
            self.clear(task_id)
            raise


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _new_task_id() -> str:
    return str(uuid.uuid4())


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)
