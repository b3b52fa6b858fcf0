"""The beat-polling baseline: a celery beat entry that scans the store every second.

This is the conventional way to publish scheduled posts with Celery, and the
one postsched replaces: celery beat sends ``scan_due_posts`` every second, the
scan claims the due posts with the store's own claim API and sends one
``publish_post`` task per post, which publishes it with postsched's
exactly-once publishing code. It reads the same POSTSCHED_* settings:

    celery -A bench.beat_baseline worker
    celery -A bench.beat_baseline beat
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from functools import cache

from celery import Celery

from scheduler.config import load_settings
from scheduler.model import utc_now
from scheduler.publishers import Publishers
from scheduler.publishing import RetryPolicy, publish_claimed
from scheduler.store.base import Store

SCAN_TASK_NAME = "bench.beat.scan_due_posts"
PUBLISH_TASK_NAME = "bench.beat.publish_post"
SCAN_INTERVAL_S = 1.0

settings = load_settings()
app = Celery("beat_baseline", broker=settings.broker_url)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    beat_schedule={
        "scan-due-posts": {"task": SCAN_TASK_NAME, "schedule": SCAN_INTERVAL_S}
    },
)


@cache
def _store(pid: int) -> Store:
    # Keyed on the process id, so a forked pool process opens its own connections.
    return settings.open_store()


@cache
def _publishers(pid: int) -> Publishers:
    return Publishers(settings)


@app.task(name=SCAN_TASK_NAME)
def scan_due_posts() -> int:
    """Claim every due post and send one publishing task per post."""
    store = _store(os.getpid())
    claimed = 0
    while True:
        now = utc_now()
        attempt_id = uuid.uuid4().hex
        lease_until = now + timedelta(seconds=settings.publish_lease_s)
        posts = store.claim_due(now, settings.claim_batch_size, attempt_id, lease_until)
        for post in posts:
            publish_post.delay(attempt_id, post.id)
        claimed += len(posts)
        if len(posts) < settings.claim_batch_size:
            return claimed


@app.task(name=PUBLISH_TASK_NAME, acks_late=True, reject_on_worker_lost=True)
def publish_post(attempt_id: str, post_id: str) -> dict[str, int]:
    """Publish one claimed post."""
    return publish_claimed(
        _store(os.getpid()),
        _publishers(os.getpid()),
        attempt_id,
        [post_id],
        policy=RetryPolicy(settings.max_attempts),
    )
