"""The Celery app of postsched: ``celery -A tasks worker`` runs a worker.

The app is created on first access, so that importing ``tasks.app`` (in
tests, say) starts no embedded Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.app import PostschedCelery

__all__ = ["app"]

_app: PostschedCelery | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name != "app":
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    if _app is None:
        from tasks.app import create_app

        _app = create_app()
    return _app
