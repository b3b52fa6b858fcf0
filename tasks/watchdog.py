"""A worker bootstep that keeps the check chain alive.

When the worker's consumer starts, and every ``watchdog_interval_s`` after,
it arms the chain if no check is recorded: the first worker to start, a chain
cleared after its retries ran out, or a Redis that restarted empty.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from celery import bootsteps

from scheduler.errors import PostschedError
from scheduler.model import utc_now

logger = logging.getLogger(__name__)


class ChainWatchdog(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep that arms the check chain when none is recorded."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_entry: Any = None

    def start(self, parent: Any) -> None:
        """Arm the chain now, then check it again on a timer."""
        interval_s = parent.app.settings.watchdog_interval_s
        self.tick(parent)
        self._timer_entry = parent.timer.call_repeatedly(
            interval_s, self.tick, (parent,), priority=10
        )

    def stop(self, parent: Any) -> None:
        """Cancel the timer."""
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    shutdown = stop

    def tick(self, parent: Any) -> None:
        """Arm the chain if it is idle, or replace a check that was lost."""
        try:
            task_id = parent.app.runtime.chain.repair(utc_now())
        except (
            redis.RedisError,
            kombu.exceptions.OperationalError,
            PostschedError,
        ) as exc:
            logger.warning(
                "the chain watchdog could not check the chain: %s; trying again later",
                exc,
            )
            return
        if task_id is not None:
            logger.info("the chain watchdog started check %s", task_id)
