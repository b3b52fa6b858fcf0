"""The Celery task API, used by name as other services would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.api import (
    CANCEL_POST,
    GET_POST,
    RESCHEDULE_POST,
    SCHEDULE_POST,
    write_schemas,
)
from scheduler.config import Settings
from scheduler.model import PostStatus, utc_now
from scheduler.publishers.outbox import read_outbox
from tasks.app import PostschedCelery

ROOT = Path(__file__).resolve().parent.parent


def call(app: PostschedCelery, name: str, payload: object) -> dict[str, object]:
    reply = app.send_task(name, args=[payload]).get(timeout=15)
    assert isinstance(reply, dict)
    return reply


def future(minutes: int = 30) -> str:
    return (utc_now() + timedelta(minutes=minutes)).isoformat()


def test_schedule_get_reschedule_cancel(
    celery_app: PostschedCelery, worker: object
) -> None:
    scheduled = call(
        celery_app,
        SCHEDULE_POST,
        {"target": "outbox:main", "content": "hi", "due_at": future()},
    )
    assert scheduled["ok"] is True
    post_id = scheduled["post"]["id"]  # type: ignore[index]
    fetched = call(celery_app, GET_POST, {"id": post_id})
    assert fetched["post"]["content"] == "hi"  # type: ignore[index]
    moved = call(celery_app, RESCHEDULE_POST, {"id": post_id, "due_at": future(60)})
    assert moved["ok"] is True
    cancelled = call(celery_app, CANCEL_POST, {"id": post_id})
    assert cancelled["post"]["status"] == "cancelled"  # type: ignore[index]


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (
            {"target": "outbox:main", "content": "hi", "due_at": "2030-01-01 10:00"},
            "due_at",
            "no time zone given",
        ),
        (
            {"target": "nowhere:x", "content": "hi", "publish_now": True},
            "target",
            "unknown publisher 'nowhere'",
        ),
        (
            {"target": "outbox:main", "content": " ", "publish_now": True},
            "content",
            "empty",
        ),
        (
            {
                "target": "outbox:main",
                "content": "hi",
                "publish_now": True,
                "colour": "red",
            },
            "colour",
            "Extra inputs",
        ),
        ({"target": "outbox:main", "publish_now": True}, "content", "Field required"),
        ("not an object", "payload", "valid dictionary"),
        (
            {"target": "outbox:main", "content": "hi"},
            "due_at",
            "exactly one of due_at and publish_now",
        ),
    ],
)
def test_invalid_payload_structured_error(
    celery_app: PostschedCelery,
    worker: object,
    payload: object,
    field: str,
    reason: str,
) -> None:
    reply = call(celery_app, SCHEDULE_POST, payload)
    error = reply["error"]
    assert reply["ok"] is False
    assert error["field"] == field  # type: ignore[index]
    assert reason in error["reason"]  # type: ignore[index]
    assert celery_app.runtime.store.list_posts() == []


def test_cancel_unknown_post_error(celery_app: PostschedCelery, worker: object) -> None:
    reply = call(celery_app, CANCEL_POST, {"id": "missing"})
    assert reply["ok"] is False
    error = reply["error"]
    assert error["value"] == "missing"  # type: ignore[index]
    assert error["reason"] == "no post has this id"  # type: ignore[index]
    assert "postsched.schedule_post" in error["fix"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [([], {}), ([{"id": "x"}, {"id": "y"}], {}), ([], {"id": "x"})],
)
def test_wrong_arguments_structured_error(
    celery_app: PostschedCelery,
    worker: object,
    args: list[object],
    kwargs: dict[str, object],
) -> None:
    reply = celery_app.send_task(GET_POST, args=args, kwargs=kwargs).get(timeout=15)
    assert reply["ok"] is False
    assert reply["error"]["field"] == "payload"
    assert "takes one JSON object" in reply["error"]["reason"]
    assert "args=[payload]" in reply["error"]["fix"]


def test_payload_as_keyword_accepted(
    celery_app: PostschedCelery, worker: object
) -> None:
    reply = celery_app.send_task(GET_POST, kwargs={"payload": {"id": "0" * 32}}).get(
        timeout=15
    )
    assert reply["ok"] is False
    assert reply["error"]["reason"] == "no post has this id"


def test_schemas_in_docs_are_current(tmp_path: Path) -> None:
    for fresh in write_schemas(tmp_path):
        committed = ROOT / "docs" / "schemas" / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"run: python -m scheduler.api docs/schemas ({fresh.name})"
        )


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Python with only celery[redis] installed: no postsched."""
    venv = tmp_path_factory.mktemp("bare-client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "celery[redis]",
        ],
        check=True,
        timeout=300,
    )
    yield venv / "bin" / "python"


def test_send_task_from_bare_client(
    bare_python: Path, settings: Settings, celery_app: PostschedCelery, worker: object
) -> None:
    client = textwrap.dedent(
        """
        import json, sys
        from celery import Celery
        try:
            import scheduler
            sys.exit("postsched is importable here, so this is no bare client")
        except ImportError:
            pass
        app = Celery(broker=sys.argv[1], backend=sys.argv[1])
        payload = {"target": "outbox:main", "content": "from elsewhere", "publish_now": True}
        reply = app.send_task("postsched.schedule_post", args=[payload]).get(timeout=30)
        print(json.dumps(reply))
        """
    )
    completed = subprocess.run(
        [str(bare_python), "-I", "-c", client, settings.broker_url or ""],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    reply = json.loads(completed.stdout)
    assert reply["ok"] is True
    post_id = reply["post"]["id"]
    deadline = time.monotonic() + 15
    while celery_app.runtime.store.get(post_id).status is not PostStatus.PUBLISHED:
        assert time.monotonic() < deadline, "the post was not published within 15 s"
        time.sleep(0.05)
    lines = read_outbox(settings.resolved_outbox_dir / "main.jsonl")
    assert [line["post_id"] for line in lines] == [post_id]
