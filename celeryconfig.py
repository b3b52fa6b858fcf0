"""Celery settings of postsched.

The broker URL, result backend, store URL and maximum check interval come
from the POSTSCHED_* environment variables (see the README), which override
``broker_url`` and ``result_backend`` when set here. With neither set, the
embedded Redis is both broker and result backend.
"""

from kombu import Queue

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# A check that is running reports STARTED, so a newer post never revokes it.
task_track_started = True
result_expires = 3600

# Redis pops the queues in this order, so a waiting check goes before a
# backlog of publishing messages.
# NOTE: this orders the queues only. While every pool process is busy
# publishing (slow receivers, big batches), a due check waits for a free
# one; run a worker with `-Q postsched.check` to keep checks on time then.
# The API tasks use Celery's default queue, "celery", so that a client
# that sets no routing reaches them.
task_queues = [Queue("postsched.check"), Queue("postsched.publish"), Queue("celery")]
task_default_queue = "postsched.publish"
task_routes = {
    "postsched.check_due_posts": {"queue": "postsched.check"},
    "postsched.publish_posts": {"queue": "postsched.publish"},
    "postsched.schedule_post": {"queue": "celery"},
    "postsched.cancel_post": {"queue": "celery"},
    "postsched.reschedule_post": {"queue": "celery"},
    "postsched.get_post": {"queue": "celery"},
}

worker_prefetch_multiplier = 4
worker_send_task_events = True
task_send_sent_event = True
broker_connection_retry_on_startup = True
