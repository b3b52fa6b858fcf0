"""Benchmarks of postsched against celery beat polling and BullMQ; see docs/benchmarks.md."""
