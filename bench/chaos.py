"""The chaos run: postsched's promise checked as a whole under faults.

It starts a private Redis, a store, ``celery worker`` subprocesses and a
fake platform that sometimes fails. The store is a fresh PostgreSQL schema
behind a TCP proxy when ``POSTGRES_URL`` is reachable on loopback, else a
SQLite file. It schedules posts due over a window. While they come due, it
SIGKILLs workers and starts new ones, restarts Redis empty once, cuts the
store off for 10 s once, and edits and cancels posts, at moments drawn from
``--seed``.

At the end it prints a table and exits with 1 when a post was lost or
published twice::

    .venv/bin/python bench/chaos.py --posts 300 --seconds 30 --seed 1
    .venv/bin/python bench/chaos.py --posts 5000 --minutes 10 --seed 1
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from celery import states
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_services import (  # noqa: E402
    LOOPBACK,
    FakePlatform,
    PlatformFaults,
    PlatformLog,
    RedisServer,
    StoreProxy,
    WorkerProcess,
)

from scheduler.config import Settings, WebhookSettings  # noqa: E402
from scheduler.errors import InvalidStateError, StoreUnavailableError  # noqa: E402
from scheduler.model import Post, PostStatus, new_post, utc_now  # noqa: E402
from scheduler.store.sql import SqlStore  # noqa: E402
from tasks.app import PostschedCelery, create_app  # noqa: E402

logger = logging.getLogger("chaos")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ACCOUNT = "chaos"
TARGET = f"webhook:{ACCOUNT}"
LEAD_S = 5.0
STORE_CUT_S = 10.0
SAMPLE_INTERVAL_S = 0.1
# A post this close to its due time is no longer edited or cancelled: the
# check may claim it any moment, and the edit would race the claim.
TOUCH_MARGIN_S = 2.0
EDIT_SHARE = 0.03
CANCEL_SHARE = 0.03
# Seconds to wait after the last due time for every post to settle.
MIN_DRAIN_S = 60.0
WORKER_WATCH_INTERVAL_S = 0.5
RECONCILE_ROUNDS = 3
WORKER_CONCURRENCY = 2
WEBHOOK_TIMEOUT_S = 3.0
FINAL_STATUSES = frozenset(
    {
        PostStatus.PUBLISHED,
        PostStatus.FAILED,
        PostStatus.CANCELLED,
        PostStatus.MISSED,
        PostStatus.UNCONFIRMED,
    }
)
# Task states of a check that is done and can claim nothing more.
DONE_STATES = states.READY_STATES | {states.REVOKED}

# Settings of the workers, chosen so that faults heal within the run: short
# leases and graces, fast retries, and a late-post grace far above the
# lateness the faults cause, so that no post is missed unless the product is.
WORKER_SETTINGS = {
    "POSTSCHED_MAX_CHECK_INTERVAL": "5",
    "POSTSCHED_VISIBILITY_TIMEOUT": "30",
    "POSTSCHED_WATCHDOG_INTERVAL": "1",
    "POSTSCHED_LOST_CHECK_GRACE": "2",
    "POSTSCHED_CHECK_LEASE": "3",
    "POSTSCHED_PUBLISH_BATCH_SIZE": "5",
    "POSTSCHED_PUBLISH_LEASE": "20",
    "POSTSCHED_MAX_ATTEMPTS": "20",
    "POSTSCHED_RETRY_BACKOFF": "1",
    "POSTSCHED_RETRY_BACKOFF_MAX": "4",
    "POSTSCHED_MISSED_GRACE": "120",
    "POSTSCHED_STORE_CONNECT_TIMEOUT": "2",
}

CLIENT_SETTINGS = {
    "max_check_interval_s": "POSTSCHED_MAX_CHECK_INTERVAL",
    "visibility_timeout_s": "POSTSCHED_VISIBILITY_TIMEOUT",
    "lost_check_grace_s": "POSTSCHED_LOST_CHECK_GRACE",
    "check_lease_s": "POSTSCHED_CHECK_LEASE",
    "store_connect_timeout_s": "POSTSCHED_STORE_CONNECT_TIMEOUT",
}


@dataclass(frozen=True)
class StoreSetup:
    """Store URLs: the workers' one, through the proxy, and the direct one for the final read."""

    kind: str
    worker_url: str
    direct_url: str
    schema: str | None = None
    proxy: StoreProxy | None = None
    cut_skipped: str | None = None


@dataclass(frozen=True)
class Event:
    """One fault or change at ``at_s`` seconds after the first due time."""

    at_s: float
    kind: str


@dataclass
class RunLog:
    """Faults injected and changes made during the run, for the report."""

    worker_kills: int = 0
    # Workers that exited without being killed, such as on a lost broker.
    workers_exited: list[str] = field(default_factory=list)
    workers_started: int = 0
    redis_restarts: int = 0
    store_cuts: int = 0
    store_cut_skipped: str | None = None
    edited: dict[str, str] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    rejected_changes: Counter[str] = field(default_factory=Counter)
    reconciled: Counter[str] = field(default_factory=Counter)
    drain_s: float = 0.0


class CheckSampler:
    """Samples the chain's record every SAMPLE_INTERVAL_S and keeps the longest gap.

    A live check is a recorded check that holds a live lease (running), or
    that has not finished and whose ETA is in the future or at most the lost
    check grace ago. The gap is the time from one live sample to the next.
    """

    def __init__(self, app: PostschedCelery, lost_grace_s: float) -> None:
        self._chain = app.runtime.chain
        self._lost_grace_s = lost_grace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.samples = 0
        self.live_samples = 0
        self.longest_gap_s = 0.0
        self.longest_gap_at: float | None = None
        self._last_live: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            now = time.time()
            live = self._is_live()
            self.samples += 1
            if not live:
                continue
            self.live_samples += 1
            if (
                self._last_live is not None
                and now - self._last_live > self.longest_gap_s
            ):
                self.longest_gap_s = now - self._last_live
                self.longest_gap_at = self._last_live
            self._last_live = now

    def _is_live(self) -> bool:
        try:
            record = self._chain.current()
            if record is None:
                return False
            if self._chain.is_running(record.task_id):
                return True
            state = self._chain.check_state(record.task_id)
        except Exception:  # noqa: BLE001 - any failure to read the chain counts as no live check
            return False
        overdue_s = (utc_now() - record.eta).total_seconds()
        return state not in DONE_STATES and overdue_s <= self._lost_grace_s


class ChaosRun:
    """One chaos run: its servers, workers, posts and timeline."""

    def __init__(
        self,
        *,
        posts: int,
        window_s: float,
        seed: int,
        workers: int,
        run_dir: Path,
        console: Console,
    ) -> None:
        self.post_count = posts
        self.window_s = window_s
        self.seed = seed
        self.worker_count = workers
        self.run_dir = run_dir
        self.console = console
        self.random = random.Random(seed)
        self.log = RunLog()
        self.workers: list[WorkerProcess] = []
        self.posts: dict[str, Post] = {}

    def execute(self) -> dict[str, Any]:
        """Run everything and return the figures of the report."""
        with ExitStack() as stack:
            redis_server = RedisServer(self.run_dir)
            redis_server.start()
            stack.callback(redis_server.stop)
            self.redis_server = redis_server

            platform = FakePlatform(PlatformFaults(), self.seed)
            platform.start()
            stack.callback(platform.close)

            store = self._open_store(stack)
            self.store_setup = store
            self.log.store_cut_skipped = store.cut_skipped
            settings = self._settings(store.worker_url, platform.url)
            self.env = self._worker_env(settings)

            app = create_app(settings)
            stack.callback(app.close)
            stack.callback(app.runtime.close)
            self.app = app

            stack.callback(self._stop_workers)
            for _ in range(self.worker_count):
                self._start_worker()
            for worker in self.workers:
                worker.wait_ready()
            self.console.print(
                f"{self.worker_count} workers ready; store: {store.kind}; "
                f"Redis: {redis_server.binary} on port {redis_server.port}",
                highlight=False,
            )

            sampler = CheckSampler(
                app, float(WORKER_SETTINGS["POSTSCHED_LOST_CHECK_GRACE"])
            )
            sampler.start()
            stack.callback(sampler.stop)

            first_due = self._schedule_posts(app)
            self._play(self._timeline(store.proxy is not None), first_due, store.proxy)
            self._drain(app, first_due)
            self._note_exited_workers()
            self._stop_workers()
            sampler.stop()

            direct = SqlStore(store.direct_url, schema=store.schema)
            stack.callback(direct.close)
            final = {post.id: post for post in direct.list_posts(limit=None)}
            return evaluate(
                self.posts, final, platform.snapshot(), self.log, sampler, self.window_s
            ) | {"store": store.kind, "seed": self.seed}

    def _open_store(self, stack: ExitStack) -> StoreSetup:
        url = os.environ.get("POSTGRES_URL", DEFAULT_POSTGRES_URL)
        reason = _postgres_unusable(url)
        if reason is None:
            return self._open_postgres(url, stack)
        path = self.run_dir / "posts.db"
        skipped = (
            f"store cut skipped: the store is a SQLite file, which a TCP proxy cannot cut ({reason}); "
            "set POSTGRES_URL to a PostgreSQL server on loopback to run it"
        )
        self.console.print(skipped, highlight=False)
        return StoreSetup(
            "sqlite", f"sqlite:///{path}", f"sqlite:///{path}", cut_skipped=skipped
        )

    def _open_postgres(self, url: str, stack: ExitStack) -> StoreSetup:
        parsed = make_url(url).set(drivername="postgresql+psycopg")
        schema = f"postsched_chaos_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(parsed, connect_args={"connect_timeout": 3})
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

        def drop_schema() -> None:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

        stack.callback(drop_schema)
        proxy = StoreProxy(parsed.host or LOOPBACK, parsed.port or 5432)
        proxy.start()
        stack.callback(proxy.close)
        through_proxy = parsed.set(
            host=LOOPBACK, port=proxy.port, query={"options": f"-csearch_path={schema}"}
        )
        return StoreSetup(
            "postgresql",
            through_proxy.render_as_string(hide_password=False),
            parsed.render_as_string(hide_password=False),
            schema=schema,
            proxy=proxy,
        )

    def _settings(self, store_url: str, platform_url: str) -> Settings:
        webhook = WebhookSettings(
            url=f"{platform_url}/statuses",
            lookup_url=f"{platform_url}/lookup",
            timeout_s=WEBHOOK_TIMEOUT_S,
        )
        overrides: dict[str, Any] = {
            "broker_url": self.redis_server.url,
            "result_backend": self.redis_server.url,
            "store_url": store_url,
            "data_dir": self.run_dir,
            "key_prefix": "chaos",
            "webhooks": {ACCOUNT: webhook},
        }
        # The client's chain must judge checks as the workers do.
        for name, variable in CLIENT_SETTINGS.items():
            overrides[name] = float(WORKER_SETTINGS[variable])
        return Settings(**overrides)

    def _worker_env(self, settings: Settings) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("POSTSCHED_")
        }
        env.update(WORKER_SETTINGS)
        env.update(
            POSTSCHED_BROKER_URL=settings.broker_url or "",
            POSTSCHED_RESULT_BACKEND=settings.result_backend or "",
            POSTSCHED_STORE_URL=settings.resolved_store_url,
            POSTSCHED_DATA_DIR=str(settings.data_dir),
            POSTSCHED_KEY_PREFIX=settings.key_prefix,
            POSTSCHED_WEBHOOKS=json.dumps(
                {name: hook.model_dump() for name, hook in settings.webhooks.items()}
            ),
        )
        return env

    def _start_worker(self) -> WorkerProcess:
        self.log.workers_started += 1
        name = f"chaos-{self.log.workers_started}"
        worker = WorkerProcess(
            name, self.env, self.run_dir / f"{name}.log", WORKER_CONCURRENCY
        )
        self.workers.append(worker)
        return worker

    def _note_exited_workers(self) -> None:
        """Record, and replace, each worker that exited without being killed."""
        for worker in self.workers:
            if worker.alive or worker.killed or worker.name in self.log.workers_exited:
                continue
            self.log.workers_exited.append(worker.name)
            started = self._start_worker()
            self.console.print(
                f"{_clock()} {worker.name} exited on its own (code {worker.process.returncode}), "
                f"started {started.name}; see {worker.log_path.name}",
                highlight=False,
            )

    def _stop_workers(self) -> None:
        # SIGKILL: the run is over, and a warm shutdown would only let
        # deliveries happen after the counts are read.
        for worker in self.workers:
            worker.kill()

    def _schedule_posts(self, app: PostschedCelery) -> datetime:
        """Store every post at once, due over the window, and wake the chain once."""
        now = utc_now()
        first_due = now + timedelta(seconds=LEAD_S)
        offsets = sorted(
            self.random.uniform(0, self.window_s) for _ in range(self.post_count)
        )
        rules = app.runtime.publishers
        posts = [
            new_post(
                target=TARGET,
                content=f"chaos post {index}",
                due_at=first_due + timedelta(seconds=offset),
                rules=rules,
                now=now,
            )
            for index, offset in enumerate(offsets)
        ]
        app.runtime.store.add(posts)
        app.runtime.chain.wake(first_due, utc_now())
        self.posts = {post.id: post for post in posts}
        self.console.print(
            f"scheduled {len(posts)} posts due over {self.window_s:g} s from {first_due.isoformat()}",
            highlight=False,
        )
        return first_due

    def _timeline(self, can_cut_store: bool) -> list[Event]:
        """Draw the moments of every fault and change from the seeded generator."""
        window = self.window_s
        events = [
            Event(self.random.uniform(0.1, 0.9) * window, "kill worker")
            for _ in range(max(1, round(window / 60)))
        ]
        events.append(Event(self.random.uniform(0.2, 0.45) * window, "restart Redis"))
        if can_cut_store:
            events.append(Event(self.random.uniform(0.55, 0.8) * window, "cut store"))
        for kind, share in (("edit", EDIT_SHARE), ("cancel", CANCEL_SHARE)):
            count = max(1, round(self.post_count * share))
            # In the first 80 % of the window, while posts due later remain.
            events += [
                Event(self.random.uniform(0, 0.8 * window), kind) for _ in range(count)
            ]
        return sorted(events, key=lambda event: event.at_s)

    def _play(
        self, events: list[Event], first_due: datetime, proxy: StoreProxy | None
    ) -> None:
        restore_at: float | None = None
        start = first_due.timestamp()
        pending = list(events)
        while pending or restore_at is not None:
            next_at = start + pending[0].at_s if pending else math.inf
            if restore_at is not None and restore_at <= next_at:
                self._wait_until(restore_at)
                assert proxy is not None
                proxy.restore()
                self.console.print(f"{_clock()} store restored", highlight=False)
                restore_at = None
                continue
            self._wait_until(next_at)
            event = pending.pop(0)
            if event.kind == "cut store":
                assert proxy is not None
                proxy.cut()
                self.log.store_cuts += 1
                restore_at = time.time() + STORE_CUT_S
                self.console.print(
                    f"{_clock()} store cut for {STORE_CUT_S:g} s", highlight=False
                )
            else:
                self._apply(event)

    def _apply(self, event: Event) -> None:
        if event.kind == "kill worker":
            live = [worker for worker in self.workers if worker.alive]
            victim = self.random.choice(live)
            victim.kill()
            self.log.worker_kills += 1
            started = self._start_worker()
            self.console.print(
                f"{_clock()} killed {victim.name} with SIGKILL, started {started.name}",
                highlight=False,
            )
        elif event.kind == "restart Redis":
            self.redis_server.restart_empty()
            self.log.redis_restarts += 1
            self.console.print(f"{_clock()} restarted Redis empty", highlight=False)
        else:
            self._change_post(event.kind)

    def _change_post(self, kind: str) -> None:
        """Edit or cancel a random post that is not due within TOUCH_MARGIN_S."""
        soon = utc_now() + timedelta(seconds=TOUCH_MARGIN_S)
        touched = self.log.cancelled | set(self.log.edited)
        candidates = [
            post_id
            for post_id, post in self.posts.items()
            if post.due_at > soon and post_id not in touched
        ]
        if not candidates:
            self.log.rejected_changes["no post left to change"] += 1
            return
        post_id = self.random.choice(candidates)
        service = self.app.runtime.service
        try:
            if kind == "cancel":
                service.cancel(post_id)
                self.log.cancelled.add(post_id)
            else:
                content = f"edited chaos post {post_id[:8]}"
                service.edit(post_id, content=content)
                self.log.edited[post_id] = content
        except (StoreUnavailableError, InvalidStateError) as exc:
            self.log.rejected_changes[f"{kind}: {type(exc).__name__}"] += 1

    def _drain(self, app: PostschedCelery, first_due: datetime) -> None:
        """Wait until no post is scheduled or publishing, then reconcile unconfirmed ones."""
        last_due = first_due + timedelta(seconds=self.window_s)
        deadline = last_due.timestamp() + max(MIN_DRAIN_S, self.window_s / 5)
        self._wait_settled(app, deadline)
        for _ in range(RECONCILE_ROUNDS):
            counts = _counts(app)
            if not counts.get(PostStatus.UNCONFIRMED):
                break
            outcomes = app.runtime.service.reconcile()
            self.log.reconciled.update(outcomes)
            self.console.print(f"{_clock()} reconcile: {outcomes}", highlight=False)
            self._wait_settled(app, time.time() + MIN_DRAIN_S)
        self.log.drain_s = max(time.time() - last_due.timestamp(), 0.0)

    def _wait_until(self, moment: float) -> None:
        """Sleep until ``moment`` (epoch seconds), replacing workers that exit meanwhile."""
        while (delay_s := moment - time.time()) > 0:
            self._note_exited_workers()
            time.sleep(min(delay_s, WORKER_WATCH_INTERVAL_S))

    def _wait_settled(self, app: PostschedCelery, deadline: float) -> None:
        while time.time() < deadline:
            self._note_exited_workers()
            counts = _counts(app)
            if (
                counts
                and not counts.get(PostStatus.SCHEDULED)
                and not counts.get(PostStatus.PUBLISHING)
            ):
                return
            time.sleep(0.5)


def _counts(app: PostschedCelery) -> dict[PostStatus, int]:
    try:
        return app.runtime.store.count_by_status()
    except StoreUnavailableError:
        return {}


def _postgres_unusable(url: str) -> str | None:
    """Return why the PostgreSQL server at ``url`` cannot be used, or None when it can."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        return f"POSTGRES_URL is invalid: {exc}"
    if parsed.host not in (LOOPBACK, "localhost", "::1"):
        return f"POSTGRES_URL names {parsed.host!r}, not a loopback address"
    engine = sa.create_engine(
        parsed.set(drivername="postgresql+psycopg"), connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return f"PostgreSQL is unreachable: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def evaluate(
    scheduled: dict[str, Post],
    final: dict[str, Post],
    platform: PlatformLog,
    log: RunLog,
    sampler: CheckSampler,
    window_s: float,
) -> dict[str, Any]:
    """Compare the store's final state with what the platform received."""
    statuses = Counter(str(post.status) for post in final.values())
    missed_grace_s = float(WORKER_SETTINGS["POSTSCHED_MISSED_GRACE"])
    problems: dict[str, list[str]] = {
        "lost": [],
        "duplicated": [],
        "delivered though cancelled": [],
        "delivered though not published": [],
        "missed within the grace": [],
        "edit not delivered": [],
        # Not a post: a worker that exited on its own is a fault the run found.
        "worker exited on its own": list(log.workers_exited),
    }
    lateness_ms: list[float] = []
    for post_id, original in scheduled.items():
        post = final.get(post_id)
        accepted = len(platform.accepted.get(post.idempotency_key if post else "", []))
        if post is None:
            problems["lost"].append(post_id)
            continue
        if accepted > 1:
            problems["duplicated"].append(post_id)
        if post.status is PostStatus.CANCELLED:
            if accepted:
                problems["delivered though cancelled"].append(post_id)
            continue
        if post.status is PostStatus.MISSED:
            late_s = (post.updated_at - original.due_at).total_seconds()
            if accepted:
                problems["delivered though not published"].append(post_id)
            elif late_s <= missed_grace_s:
                problems["missed within the grace"].append(post_id)
            continue
        if post.status is not PostStatus.PUBLISHED or not accepted:
            if accepted:
                problems["delivered though not published"].append(post_id)
            problems["lost"].append(post_id)
            continue
        first_request = platform.requests[post.idempotency_key][0]
        lateness_ms.append((first_request - original.due_at.timestamp()) * 1000)
        expected = log.edited.get(post_id, original.content)
        if platform.content.get(post.idempotency_key) != expected:
            problems["edit not delivered"].append(post_id)

    figures: dict[str, Any] = {
        "posts": len(scheduled),
        "window_s": window_s,
        "statuses": dict(statuses),
        "published": statuses.get("published", 0),
        "missed": statuses.get("missed", 0),
        "cancelled": len(log.cancelled),
        "edited": len(log.edited),
        "problems": {name: len(ids) for name, ids in problems.items()},
        "problem_ids": {name: ids[:10] for name, ids in problems.items() if ids},
        "lateness_ms": _percentiles(lateness_ms),
        "longest_gap_without_live_check_s": round(sampler.longest_gap_s, 3),
        "check_samples": sampler.samples,
        "platform_responses": dict(platform.responses),
        "platform_requests": sum(len(times) for times in platform.requests.values()),
        "faults": {
            "worker kills": log.worker_kills,
            "Redis restarts": log.redis_restarts,
            "store cuts": log.store_cuts,
        },
        "store_cut_skipped": log.store_cut_skipped,
        "rejected_changes": dict(log.rejected_changes),
        "reconciled": dict(log.reconciled),
        "drain_s": round(log.drain_s, 1),
    }
    figures["ok"] = not any(problems.values())
    return figures


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(share: float) -> float:
        return round(
            ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)], 1
        )

    return {"p50": rank(0.50), "p99": rank(0.99), "max": round(ordered[-1], 1)}


def print_report(figures: dict[str, Any], console: Console) -> None:
    """Print the checks and the figures as tables."""
    checks = Table(title="chaos run: checks")
    checks.add_column("check")
    checks.add_column("count", justify="right")
    checks.add_column("result")
    for name, count in figures["problems"].items():
        checks.add_row(name, str(count), "ok" if count == 0 else "FAIL")
    console.print(checks)

    numbers = Table(title="chaos run: figures")
    numbers.add_column("figure")
    numbers.add_column("value", justify="right")
    lateness = figures["lateness_ms"]
    rows = [
        ("store", figures["store"]),
        ("seed", str(figures["seed"])),
        ("posts scheduled", str(figures["posts"])),
        ("published", str(figures["published"])),
        ("missed (late-post policy)", str(figures["missed"])),
        ("cancelled", str(figures["cancelled"])),
        ("edited", str(figures["edited"])),
        ("final statuses", _format_counts(figures["statuses"])),
        ("lateness p50", _format_ms(lateness["p50"])),
        ("lateness p99", _format_ms(lateness["p99"])),
        ("lateness max", _format_ms(lateness["max"])),
        (
            "longest time without a live check",
            f"{figures['longest_gap_without_live_check_s']:.1f} s",
        ),
        ("faults", _format_counts(figures["faults"])),
        ("platform responses", _format_counts(figures["platform_responses"])),
        ("changes rejected", _format_counts(figures["rejected_changes"]) or "none"),
        ("reconciled", _format_counts(figures["reconciled"]) or "none"),
        ("drain after the window", f"{figures['drain_s']:.1f} s"),
    ]
    for name, value in rows:
        numbers.add_row(name, value)
    console.print(numbers)
    if figures["store_cut_skipped"]:
        console.print(figures["store_cut_skipped"], highlight=False)
    for name, ids in figures["problem_ids"].items():
        console.print(f"{name}: {', '.join(ids)}", highlight=False)


def _format_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that the cleanup of every process runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(
    posts: Annotated[
        int, typer.Option(min=1, help="Number of posts to schedule.")
    ] = 300,
    seconds: Annotated[
        float | None,
        typer.Option(min=1, help="Window over which the posts come due, in seconds."),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(min=0.1, help="Window over which the posts come due, in minutes."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every random choice of the run.")
    ] = 1,
    workers: Annotated[
        int, typer.Option(min=1, help="Number of worker subprocesses.")
    ] = 3,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the figures to this JSON file."),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            help="Keep the run folder with the worker logs even when the run passes."
        ),
    ] = False,
) -> None:
    """Run postsched under faults; exit with 1 when a post was lost or published twice."""
    if seconds is not None and minutes is not None:
        raise typer.BadParameter("give --seconds or --minutes, not both")
    window_s = minutes * 60 if minutes is not None else seconds or 30.0
    console = Console()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.chdir(REPO_ROOT)
    run_dir = Path(tempfile.mkdtemp(prefix="postsched-chaos-"))
    run = ChaosRun(
        posts=posts,
        window_s=window_s,
        seed=seed,
        workers=workers,
        run_dir=run_dir,
        console=console,
    )
    with _terminate_on_sigterm():
        figures = run.execute()
    print_report(figures, console)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2, default=str))
    if figures["ok"] and not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        console.print(f"worker and Redis logs: {run_dir}", highlight=False)
    raise typer.Exit(0 if figures["ok"] else 1)


if __name__ == "__main__":
    typer.run(main)
