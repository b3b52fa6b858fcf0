"""Names of every Redis key postsched writes, in one place.

Each key starts with the configured prefix (``POSTSCHED_KEY_PREFIX``), so
several deployments, or test runs, can share one Redis database.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECK_TASK_NAME = "postsched.check_due_posts"
PUBLISH_TASK_NAME = "postsched.publish_posts"

CHECK_QUEUE = "postsched.check"
PUBLISH_QUEUE = "postsched.publish"
# Celery's default queue, so a client that knows only the task names reaches the API.
API_QUEUE = "celery"


@dataclass(frozen=True)
class RedisKeys:
    """Redis keys under one prefix."""

    prefix: str = "postsched"

    @property
    def chain(self) -> str:
        """Hash of the recorded check: ``task_id``, ``eta_ms`` and ``wake_ms``."""
        return f"{self.prefix}:chain"

    def check_lease(self, task_id: str) -> str:
        """String key that exists, with an expiry, while check ``task_id`` runs."""
        return f"{self.prefix}:lease:{task_id}"

    @property
    def metrics_posts(self) -> str:
        """Hash of post counts for the metrics: field ``OUTCOME|TARGET``, no expiry."""
        return f"{self.prefix}:metrics:posts"

    @property
    def metrics_lateness(self) -> str:
        """Hash of the lateness histogram: one field per bucket bound and ``sum``, no expiry."""
        return f"{self.prefix}:metrics:lateness"
