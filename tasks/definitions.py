"""The Celery tasks: the check that claims due posts, and publishing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import redis
from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from scheduler.api import PAYLOADS, handle, wrong_arguments_reply
from scheduler.check import run_check
from scheduler.errors import StoreUnavailableError
from scheduler.keys import CHECK_TASK_NAME, PUBLISH_QUEUE, PUBLISH_TASK_NAME
from scheduler.model import Post, utc_now
from scheduler.publishing import RetryPolicy, publish_claimed
from tasks.reprs import ApiRequest, publish_argsrepr

if TYPE_CHECKING:
    from tasks.app import PostschedCelery

logger = logging.getLogger(__name__)

# Errors that pass when the store or the broker comes back.
TRANSIENT_ERRORS = (
    StoreUnavailableError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)
RETRY_BACKOFF_S = 1
RETRY_BACKOFF_MAX_S = 4


class CheckTask(Task):  # type: ignore[misc]
    """Base of the check task: logs retries and clears the chain when they run out."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        delay_s = get_exponential_backoff_interval(
            factor=RETRY_BACKOFF_S,
            retries=self.request.retries,
            maximum=RETRY_BACKOFF_MAX_S,
            full_jitter=False,
        )
        logger.info(
            "check %s failed (%s); retrying in %s s, attempt %d of %d",
            task_id,
            exc,
            delay_s,
            self.request.retries + 1,
            self.max_retries,
        )

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        app: PostschedCelery = self.app
        try:
            cleared = app.runtime.chain.clear(task_id)
        except redis.RedisError as clear_exc:
            logger.error(
                "check %s failed (%r) and the chain record could not be cleared: %s",
                task_id,
                exc,
                clear_exc,
            )
            return
        logger.error(
            "check %s failed after %d retries: %r; %s",
            task_id,
            self.request.retries,
            exc,
            "cleared the chain, so the next scheduled post or worker start re-arms it"
            if cleared
            else "another check is recorded, so the chain goes on",
        )


def register_tasks(app: PostschedCelery) -> None:
    """Register the postsched tasks on ``app``."""
    settings = app.settings

    @app.task(
        bind=True,
        base=CheckTask,
        name=CHECK_TASK_NAME,
        shared=False,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=RETRY_BACKOFF_S,
        retry_backoff_max=RETRY_BACKOFF_MAX_S,
        retry_jitter=False,
        max_retries=settings.check_max_retries,
    )
    def check_due_posts(self: Task) -> dict[str, object]:
        runtime = app.runtime

        def dispatch(attempt_id: str, posts: Sequence[Post]) -> None:
            app.send_task(
                PUBLISH_TASK_NAME,
                args=[attempt_id, [post.id for post in posts]],
                queue=PUBLISH_QUEUE,
                argsrepr=publish_argsrepr(posts),
                kwargsrepr="{}",
            )

        result = run_check(
            self.request.id,
            store=runtime.store,
            chain=runtime.chain,
            dispatch=dispatch,
            claim_batch_size=settings.claim_batch_size,
            publish_batch_size=settings.publish_batch_size,
            publish_lease_s=settings.publish_lease_s,
            max_attempts=settings.max_attempts,
            missed_grace_s=settings.missed_grace_s,
            metrics=runtime.metrics,
            publish_spread=app.pool_size,
        )
        return result.as_dict()

    # acks_late with reject_on_worker_lost: a message whose worker died is
    # delivered again, and the delivery count in the store tells the next
    # delivery to look the post up before sending it.
    @app.task(
        name=PUBLISH_TASK_NAME,
        shared=False,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def publish_posts(attempt_id: str, post_ids: list[str]) -> dict[str, int]:
        runtime = app.runtime
        return publish_claimed(
            runtime.store,
            runtime.publishers,
            attempt_id,
            post_ids,
            policy=RetryPolicy(
                settings.max_attempts,
                settings.retry_backoff_s,
                settings.retry_backoff_max_s,
                settings.max_deliveries,
            ),
            wake=lambda due_at: runtime.chain.wake(due_at, utc_now()),
            metrics=runtime.metrics,
        )

    for name in PAYLOADS:
        _register_api_task(app, name)


def _register_api_task(app: PostschedCelery, name: str) -> None:
    def api_task(*args: object, **kwargs: object) -> dict[str, object]:
        # Any arguments are taken, so that a client that sends the wrong
        # ones gets the structured error reply instead of a TypeError.
        if len(args) == 1 and not kwargs:
            return handle(name, args[0], app.runtime.service)
        if not args and set(kwargs) == {"payload"}:
            return handle(name, kwargs["payload"], app.runtime.service)
        return wrong_arguments_reply(name, args, kwargs)

    api_task.__name__ = name.rpartition(".")[2]
    # ApiRequest keeps the post's content out of the task-received event.
    app.task(name=name, shared=False, Request=ApiRequest)(api_task)
