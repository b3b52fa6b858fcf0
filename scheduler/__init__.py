"""postsched: publish scheduled posts at the moment they are due, on Celery."""

__version__ = "0.1.0"
