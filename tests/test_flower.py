"""Flower against a real in-process worker: short task arguments and its Prometheus endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from faults import free_port

from scheduler.config import Settings
from scheduler.keys import CHECK_TASK_NAME, PUBLISH_TASK_NAME
from scheduler.model import Post, PostStatus, utc_now
from tasks.app import PostschedCelery
from tasks.reprs import api_argsrepr, publish_argsrepr

FLOWER_USER = "admin"
FLOWER_PASSWORD = "flower-test-password"
FLOWER_START_TIMEOUT_S = 20.0
SECRET_CONTENT = "the content must never reach Flower"

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout_s} s")
        time.sleep(0.1)


@pytest.fixture
def flower(settings: Settings, tmp_path: Path) -> Iterator[httpx.Client]:
    """A ``celery -A tasks flower`` subprocess with basic auth, on a free loopback port."""
    port = free_port()
    env = dict(
        os.environ,
        POSTSCHED_BROKER_URL=settings.broker_url or "",
        POSTSCHED_RESULT_BACKEND=settings.result_backend or "",
        POSTSCHED_STORE_URL=settings.resolved_store_url,
        POSTSCHED_DATA_DIR=str(settings.data_dir),
        POSTSCHED_KEY_PREFIX=settings.key_prefix,
        FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
    )
    celery = Path(sys.executable).parent / "celery"
    log = (tmp_path / "flower.log").open("w")
    process = subprocess.Popen(
        [str(celery), "-A", "tasks", "flower", f"--port={port}", "--address=127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        auth=(FLOWER_USER, FLOWER_PASSWORD),
        timeout=5,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"flower exited with {process.returncode}: {(tmp_path / 'flower.log').read_text()}"
            )
        try:
            return client.get("/healthcheck").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, FLOWER_START_TIMEOUT_S, "flower answering /healthcheck")
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_publish_argsrepr_names_posts() -> None:
    now = utc_now()
    posts = [
        Post(
            id=f"p{index}",
            target="outbox:main",
            content="x",
            due_at=now,
            timezone="UTC",
        )
        for index in range(5)
    ]
    assert publish_argsrepr(posts[:1]) == "post=p0 target=outbox:main"
    assert publish_argsrepr(posts) == (
        "5 posts: post=p0 target=outbox:main, post=p1 target=outbox:main, "
        "post=p2 target=outbox:main, and 2 more"
    )


def test_api_argsrepr_leaves_out_content() -> None:
    payload = {"target": "outbox:main", "content": SECRET_CONTENT, "publish_now": True}
    assert api_argsrepr([payload]) == "target=outbox:main publish_now=True"
    assert api_argsrepr([{"id": "abc"}]) == "post=abc"
    assert api_argsrepr(["not a dict"]) == "<list payload>"


def test_flower_shows_short_arguments(
    celery_app: PostschedCelery, worker: object, flower: httpx.Client
) -> None:
    assert flower.get("/api/tasks").status_code == 200
    assert httpx.get(f"{flower.base_url}/api/tasks", timeout=5).status_code == 401, (
        "the API answered without basic auth"
    )
    wait_until(
        lambda: flower.get("/api/workers", params={"refresh": "1"}).json(),
        FLOWER_START_TIMEOUT_S,
        "flower seeing the worker",
    )

    service = celery_app.runtime.service
    post = service.schedule(
        target="outbox:main",
        content=SECRET_CONTENT,
        due_at=utc_now() + timedelta(seconds=1),
    )
    reply = celery_app.send_task(
        "postsched.get_post", args=[{"id": post.id}], argsrepr="(unset by client)"
    ).get(timeout=10)
    assert reply["ok"] is True
    wait_until(
        lambda: service.store.get(post.id).status is PostStatus.PUBLISHED,
        15,
        "the post published",
    )

    def tasks_by_name() -> dict[str, list[dict[str, object]]]:
        found: dict[str, list[dict[str, object]]] = {}
        for task in flower.get("/api/tasks").json().values():
            found.setdefault(str(task["name"]), []).append(task)
        return found

    def both_listed() -> dict[str, list[dict[str, object]]] | None:
        found = tasks_by_name()
        if PUBLISH_TASK_NAME in found and "postsched.get_post" in found:
            return found
        return None

    tasks = wait_until(both_listed, 15, "flower listing the publishing and API tasks")
    publish_args = [task["args"] for task in tasks[PUBLISH_TASK_NAME]]
    assert publish_args == [f"post={post.id} target=outbox:main"]
    api_args = [task["args"] for task in tasks["postsched.get_post"]]
    assert api_args == [f"post={post.id}"]
    check_args = {str(task["args"]) for task in tasks[CHECK_TASK_NAME]}
    assert f"due_at={post.due_at.isoformat(timespec='milliseconds')}" in check_args
    for task in (task for named in tasks.values() for task in named):
        assert SECRET_CONTENT not in str(task["args"])
        assert SECRET_CONTENT not in str(task["kwargs"])

    metrics = flower.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert f'task="{PUBLISH_TASK_NAME}"' in metrics.text
    assert "flower_events_total" in metrics.text
