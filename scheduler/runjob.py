"""The main job: publish a sample schedule on a real worker and report lateness.

It starts (or uses the configured) Redis, a ``celery worker`` subprocess and a
store, imports the sample with its due times moved into the next minute,
waits until every post is settled and prints one row per post and a summary.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from scheduler.config import Settings, load_settings
from scheduler.csv_import import parse_csv
from scheduler.errors import PostschedError
from scheduler.model import Post, PostStatus
from scheduler.publishers import Publishers
from scheduler.publishers.outbox import read_outbox

RUN_ACCOUNT = "demo"
LEAD_S = 5.0
WORKER_READY_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 20.0
SETTLED = frozenset({PostStatus.PUBLISHED, PostStatus.FAILED, PostStatus.CANCELLED})


class MainJobError(PostschedError):
    """Raised when the main job cannot start its worker."""


@dataclass(frozen=True)
class PostReport:
    """Outcome of one post of the main job."""

    post: Post
    deliveries: int
    published_at: datetime | None

    @property
    def lateness_ms(self) -> float | None:
        """Milliseconds from the due time to the outbox write, or None if unpublished."""
        if self.published_at is None:
            return None
        return (self.published_at - self.post.due_at).total_seconds() * 1000


def run_main_job(sample: Path, *, window_s: float, console: Console) -> int:
    """Run the main job; return 0 when every post was published exactly once."""
    base = load_settings()
    run_dir = Path(tempfile.mkdtemp(prefix="postsched-run-"))
    overrides: dict[str, object] = {"outbox_dir": run_dir / "outbox"}
    if base.broker_url is None:
        overrides["data_dir"] = run_dir
    settings = base.model_copy(update=overrides)

    from tasks.app import create_app

    app = create_app(settings)
    worker = _start_worker(
        app.conf.broker_url, str(app.conf.result_backend), settings, run_dir
    )
    try:
        _wait_for_worker(app, worker, run_dir)
        schedule_file = _shift_schedule(sample, settings, run_dir, window_s)
        service = app.runtime.service
        report = service.import_csv(
            schedule_file, target=f"outbox:{RUN_ACCOUNT}", tz="UTC"
        )
        ids = [post.id for post in report.posts]
        console.print(
            f"imported {len(ids)} posts from {sample}, due over the next {window_s:g} s"
        )
        last_due = max(post.due_at for post in report.posts)
        posts = _wait_until_settled(service.store, ids, last_due, console)
    finally:
        _stop_worker(worker)
        app.runtime.close()
        if app.embedded is not None:
            app.embedded.stop()

    outbox_file = settings.resolved_outbox_dir / f"{RUN_ACCOUNT}.jsonl"
    reports = _collect(posts, outbox_file)
    _print_table(reports, console)
    console.print(
        f"outbox: {outbox_file}; worker log: {run_dir / 'worker.log'}", highlight=False
    )
    return _print_summary(reports, console)


def _start_worker(
    broker_url: str, result_backend: str, settings: Settings, run_dir: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        POSTSCHED_BROKER_URL=broker_url,
        POSTSCHED_RESULT_BACKEND=result_backend,
        POSTSCHED_STORE_URL=settings.resolved_store_url,
        POSTSCHED_DATA_DIR=str(settings.data_dir),
        POSTSCHED_OUTBOX_DIR=str(settings.resolved_outbox_dir),
    )
    log = open(run_dir / "worker.log", "wb")  # noqa: SIM115 - the worker writes to it until it stops
    with log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "--loglevel=INFO",
                "--concurrency=2",
                "--hostname=postsched-run@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_for_worker(app, worker: subprocess.Popen[bytes], run_dir: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise MainJobError(
                f"the worker exited with code {worker.returncode}; see {run_dir / 'worker.log'}"
            )
        if app.control.ping(timeout=0.5):
            return
    raise MainJobError(
        f"the worker did not respond to a ping within {WORKER_READY_TIMEOUT_S:g} s; see {run_dir / 'worker.log'}"
    )


def _shift_schedule(
    sample: Path, settings: Settings, run_dir: Path, window_s: float
) -> Path:
    """Write the sample as a bulk CSV whose due times fall over the next ``window_s`` seconds.

    Due times keep their order and spacing ratios, and posts due at the same
    time stay together. The result is in whole seconds, as the bulk format is.
    """
    publishers = Publishers(settings)
    try:
        parsed = parse_csv(
            sample, rules=publishers, tz="UTC", target=f"outbox:{RUN_ACCOUNT}"
        )
    finally:
        publishers.close()
    if parsed.errors:
        raise MainJobError(
            f"the sample {sample} has invalid rows: {'; '.join(map(str, parsed.errors))}"
        )
    if not parsed.posts:
        raise MainJobError(f"the sample {sample} has no posts")
    first = min(post.due_at for post in parsed.posts)
    span_s = (max(post.due_at for post in parsed.posts) - first).total_seconds() or 1.0
    start = datetime.fromtimestamp(math.ceil(time.time() + LEAD_S), tz=UTC)
    usable_s = max(window_s - LEAD_S, 1.0)
    shifted = run_dir / "schedule.csv"
    with open(shifted, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for post in parsed.posts:
            offset_s = round((post.due_at - first).total_seconds() / span_s * usable_s)
            due = start + timedelta(seconds=offset_s)
            writer.writerow(
                [due.strftime("%Y-%m-%d %H:%M:%S"), post.content, post.link or ""]
            )
    return shifted


def _wait_until_settled(
    store, ids: list[str], last_due: datetime, console: Console
) -> list[Post]:  # type: ignore[no-untyped-def]
    deadline = last_due + timedelta(seconds=SETTLE_TIMEOUT_S)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("publishing", total=len(ids))
        while True:
            posts = store.list_posts(ids=ids, limit=None)
            settled = sum(post.status in SETTLED for post in posts)
            progress.update(bar, completed=settled)
            if settled == len(ids) or datetime.now(UTC) > deadline:
                return posts
            time.sleep(0.1)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _collect(posts: list[Post], outbox_file: Path) -> list[PostReport]:
    lines = read_outbox(outbox_file) if outbox_file.exists() else []
    deliveries = Counter(line["post_id"] for line in lines)
    first_write: dict[str, datetime] = {}
    for line in lines:
        first_write.setdefault(
            line["post_id"], datetime.fromisoformat(line["published_at"])
        )
    return [
        PostReport(
            post=post,
            deliveries=deliveries[post.id],
            published_at=first_write.get(post.id),
        )
        for post in sorted(posts, key=lambda post: (post.due_at, post.id))
    ]


def _print_table(reports: list[PostReport], console: Console) -> None:
    table = Table("due (UTC)", "published (UTC)", "lateness", "status")
    for report in reports:
        published = (
            report.published_at.strftime("%H:%M:%S.%f")[:-3]
            if report.published_at
            else "-"
        )
        lateness = (
            f"{report.lateness_ms:.0f} ms" if report.lateness_ms is not None else "-"
        )
        status = (
            str(report.post.status)
            if report.deliveries <= 1
            else f"published {report.deliveries} times"
        )
        table.add_row(
            report.post.due_at.strftime("%H:%M:%S.%f")[:-3], published, lateness, status
        )
    console.print(table)


def _print_summary(reports: list[PostReport], console: Console) -> int:
    once = [
        report
        for report in reports
        if report.deliveries == 1 and report.post.status is PostStatus.PUBLISHED
    ]
    duplicated = [report for report in reports if report.deliveries > 1]
    lateness = sorted(
        report.lateness_ms for report in once if report.lateness_ms is not None
    )
    if duplicated:
        console.print(
            f"{len(duplicated)} post(s) were published more than once", style="bold red"
        )
    if lateness:
        figures = (
            f"lateness p50 {percentile(lateness, 50):.0f} ms, p99 {percentile(lateness, 99):.0f} ms, "
            f"max {lateness[-1]:.0f} ms"
        )
    else:
        figures = "no lateness measured"
    console.print(
        f"published {len(once)}/{len(reports)} posts, {figures}", highlight=False
    )
    return 0 if len(once) == len(reports) and not duplicated else 1


def percentile(sorted_values: list[float], rank: float) -> float:
    """Return the nearest-rank percentile ``rank`` (0 to 100) of ``sorted_values``."""
    index = max(math.ceil(rank / 100 * len(sorted_values)) - 1, 0)
    return sorted_values[index]
