"""Creation of the Celery app, and the per-process objects its tasks use."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_init, worker_process_init

from scheduler.chain import Chain
from scheduler.config import Settings, load_settings
from scheduler.embedded import EmbeddedRedis
from scheduler.errors import PostschedError
from scheduler.keys import CHECK_QUEUE, CHECK_TASK_NAME, RedisKeys
from scheduler.metrics import MetricsRecorder
from scheduler.publishers import Publishers
from scheduler.service import PostService
from scheduler.store.base import Store
from scheduler.urls import is_redis_url, redis_py_url
from tasks.definitions import register_tasks
from tasks.metrics_endpoint import MetricsEndpoint
from tasks.reprs import check_argsrepr
from tasks.watchdog import ChainWatchdog

logger = logging.getLogger(__name__)


class PostschedCelery(Celery):
    """A Celery app that carries postsched's settings and per-process runtime."""

    def __init__(
        self, settings: Settings, embedded: EmbeddedRedis | None, **kwargs: Any
    ) -> None:
        super().__init__("postsched", **kwargs)
        self.settings = settings
        self.embedded = embedded
        # Pool processes (or threads) of the worker running this app, set at
        # worker start; the check splits each claim over this many tasks.
        self.pool_size = 1
        self._runtime: Runtime | None = None

    def close(self) -> None:
        """Close the result backend's connections, then clean up as Celery does."""
        # The backend of this thread, or the shared one when it is thread-safe.
        backend = self._backend
        consumer = getattr(backend, "__dict__", {}).get("result_consumer")
        if consumer is not None:
            consumer.stop()
            # NOTE: relies on Celery's ResultConsumer internals (5.4 to 5.6).
            # AsyncResult.__del__ calls cancel_for, which sends UNSUBSCRIBE
            # on the pub/sub and so opens a new connection once it is
            # closed; without a pub/sub, cancel_for sends nothing.
            consumer._pubsub = None
        client = getattr(backend, "__dict__", {}).get("client")
        if client is not None:
            client.connection_pool.disconnect()
        super().close()

    @property
    def runtime(self) -> Runtime:
        """Store, publishers and chain of this process, created on first use after a fork."""
        if self._runtime is None or self._runtime.pid != os.getpid():
            self._runtime = Runtime(self)
        return self._runtime


class Runtime:
    """Connections of one process: never shared across a fork."""

    def __init__(self, app: PostschedCelery) -> None:
        self.app = app
        self.settings = app.settings
        self.pid = os.getpid()

    @cached_property
    def store(self) -> Store:
        """The post store."""
        return self.settings.open_store()

    @cached_property
    def publishers(self) -> Publishers:
        """The configured publishers."""
        return Publishers(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        """Client of the Redis that records the check chain: the result backend's."""
        return redis.Redis.from_url(redis_py_url(str(self.app.conf.result_backend)))

    @cached_property
    def chain(self) -> Chain:
        """The check chain."""
        return Chain(
            self.redis,
            RedisKeys(self.settings.key_prefix),
            CeleryCheckTasks(self.app),
            self.settings.max_check_interval_s,
            lost_grace_s=self.settings.lost_check_grace_s,
            lease_s=self.settings.check_lease_s,
        )

    @cached_property
    def metrics(self) -> MetricsRecorder:
        """Counts of publishing outcomes, in the Redis of the check chain."""
        return MetricsRecorder(self.redis, RedisKeys(self.settings.key_prefix))

    @cached_property
    def service(self) -> PostService:
        """Scheduling, listing and cancelling posts."""
        return PostService(self.store, self.publishers, self.chain)

    def warm_up(self) -> None:
        """Open the store, Redis and publishers now, so the first due post waits for none of them."""
        self.store.next_due_at()
        self.redis.ping()
        self.publishers  # noqa: B018 - creating the publishers is the point

    def close(self) -> None:
        """Close every connection opened so far."""
        for name in ("store", "publishers", "redis"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()
        self.__dict__.pop("chain", None)
        self.__dict__.pop("service", None)
        self.__dict__.pop("metrics", None)


class CeleryCheckTasks:
    """Sends, inspects and revokes check tasks through a Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send_check(
        self, task_id: str, countdown_s: float, due_at: datetime | None
    ) -> None:
        """Send check ``task_id`` to run in ``countdown_s`` seconds."""
        self.app.send_task(
            CHECK_TASK_NAME,
            task_id=task_id,
            countdown=countdown_s,
            queue=CHECK_QUEUE,
            argsrepr=check_argsrepr(due_at),
            kwargsrepr="{}",
        )
        reason = (
            f"for the post due at {due_at.isoformat()}"
            if due_at
            else "to keep the chain alive"
        )
        logger.info("scheduled check %s in %.3f s %s", task_id, countdown_s, reason)

    def check_state(self, task_id: str) -> str:
        """Return the Celery state of check ``task_id``."""
        return str(self.app.AsyncResult(task_id).state)

    def revoke_check(self, task_id: str) -> None:
        """Ask the workers to drop check ``task_id``."""
        self.app.control.revoke(task_id)


def create_app(
    settings: Settings | None = None, *, start_embedded: bool = True
) -> PostschedCelery:
    """Create the Celery app from ``celeryconfig`` and the POSTSCHED_* settings.

    Starts, or attaches to, the embedded Redis when no broker URL is set;
    with ``start_embedded`` False it only attaches to a running one.
    """
    settings = settings or load_settings()
    settings.check_intervals()
    embedded = None
    broker_url = settings.broker_url
    result_backend = settings.result_backend
    if broker_url is None or (result_backend is None and not is_redis_url(broker_url)):
        embedded = EmbeddedRedis(settings.data_dir)
        embedded.ensure_running(start=start_embedded)
    broker_url = broker_url or (embedded.url if embedded else None)
    if result_backend is None:
        result_backend = broker_url if broker_url and is_redis_url(broker_url) else None
        result_backend = result_backend or (embedded.url if embedded else None)

    app = PostschedCelery(settings, embedded)
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=broker_url,
        result_backend=result_backend,
        # One result backend, and so one Redis pool, for all threads of a
        # process: redis-py clients are thread-safe, and one pool can be closed.
        result_backend_thread_safe=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout_s
        },
    )
    redis_py_url(result_backend or "")

    register_tasks(app)
    app.steps["consumer"].add(ChainWatchdog)
    app.steps["worker"].add(MetricsEndpoint)
    worker_process_init.connect(_warm_up_handler(app), weak=False)
    worker_init.connect(_pool_size_handler(app), weak=False)
    return app


def _pool_size_handler(app: PostschedCelery) -> Callable[..., None]:
    app_ref = weakref.ref(app)

    def record_pool_size(sender: Any = None, **kwargs: Any) -> None:
        current = app_ref()
        if current is None or sender is None or sender.app is not current:
            return
        # "auto" and autoscaling resolve later; the CPU count is the usual outcome.
        concurrency = sender.concurrency
        current.pool_size = (
            concurrency
            if isinstance(concurrency, int) and concurrency > 0
            else os.cpu_count() or 1
        )

    return record_pool_size


def _warm_up_handler(app: PostschedCelery) -> Callable[..., None]:
    app_ref = weakref.ref(app)

    def warm_up(**kwargs: Any) -> None:
        current = app_ref()
        if current is None:
            return
        try:
            current.runtime.warm_up()
        except (PostschedError, redis.RedisError) as exc:
            # The first task retries the connection, so a slow start is only logged.
            logger.warning(
                "could not open connections at worker process start: %s", exc
            )

    return warm_up
