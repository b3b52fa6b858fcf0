"""The postsched command line, on the test Redis and a SQLite store."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli import EXIT_FAILED, EXIT_INVALID, app
from scheduler.config import Settings
from scheduler.model import Post, PostStatus, truncate_to_ms, utc_now
from scheduler.store.sql import SqlStore


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the command line at the test settings through the environment."""
    monkeypatch.setenv("POSTSCHED_BROKER_URL", settings.broker_url or "")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", settings.result_backend or "")
    monkeypatch.setenv("POSTSCHED_STORE_URL", settings.resolved_store_url)
    monkeypatch.setenv("POSTSCHED_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POSTSCHED_KEY_PREFIX", settings.key_prefix)
    return settings


@pytest.fixture
def store(cli_env: Settings) -> Iterator[SqlStore]:
    sql = SqlStore(cli_env.resolved_store_url)
    yield sql
    sql.close()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def future(minutes: int = 10) -> str:
    return (utc_now() + timedelta(minutes=minutes)).isoformat()


def schedule_json(*args: str) -> dict[str, object]:
    code, output = invoke("schedule", *args, "--json")
    assert code == 0, output
    return json.loads(output)


def test_schedule_then_list(store: SqlStore) -> None:
    post = schedule_json("Doors open", "--at", future())
    code, output = invoke("list", "--json")
    listed = [json.loads(line) for line in output.splitlines()]
    assert code == 0
    assert [item["id"] for item in listed] == [post["id"]]
    assert listed[0]["status"] == "scheduled"


def test_schedule_naive_time_rejected(store: SqlStore) -> None:
    code, output = invoke("schedule", "hi", "--at", "2030-01-01 10:00")
    assert code == EXIT_INVALID
    assert "no time zone given" in output
    assert "--tz" in output
    assert store.list_posts() == []


def test_schedule_needs_at_or_now(store: SqlStore) -> None:
    code, output = invoke("schedule", "hi", "--at", future(), "--now")
    assert code == EXIT_INVALID
    assert "either --at TIME or --now" in output


def test_schedule_past_needs_now(store: SqlStore) -> None:
    code, output = invoke(
        "schedule", "hi", "--at", (utc_now() - timedelta(hours=1)).isoformat()
    )
    assert code == EXIT_INVALID
    assert "in the past" in output
    post = schedule_json("hi", "--now")
    assert post["status"] == "scheduled"


def test_import_bad_row_changes_nothing(store: SqlStore, tmp_path: Path) -> None:
    existing = schedule_json("already here", "--at", future())
    csv_file = tmp_path / "posts.csv"
    csv_file.write_text("2030-01-01 10:00,good\n2030-02-30 10:00,impossible date\n")
    code, output = invoke("import", str(csv_file), "--tz", "Europe/Berlin")
    assert code == EXIT_INVALID
    assert "line 2" in output
    assert [post.id for post in store.list_posts()] == [existing["id"]]


def test_reschedule_and_edit(store: SqlStore) -> None:
    post = schedule_json("first text", "--at", future(10))
    later = future(60)
    code, output = invoke("reschedule", str(post["id"]), "--at", later)
    assert code == 0, output
    code, output = invoke("edit", str(post["id"]), "--content", "second text")
    assert code == 0, output
    stored = store.get(str(post["id"]))
    assert stored.content == "second text"
    assert stored.due_at == truncate_to_ms(datetime.fromisoformat(later))


def test_edit_publishing_post_rejected(store: SqlStore) -> None:
    now = utc_now()
    store.add(
        [
            Post(
                id="busy",
                target="outbox:main",
                content="x",
                due_at=now,
                timezone="UTC",
                status=PostStatus.PUBLISHING,
            )
        ]
    )
    code, output = invoke("edit", "busy", "--content", "changed")
    assert code == EXIT_INVALID
    assert "it is publishing" in output
    assert store.get("busy").content == "x"


def test_cancel_unknown_post(store: SqlStore) -> None:
    code, output = invoke("cancel", "no-such-id")
    assert code == EXIT_INVALID
    assert "post no-such-id not found" in output


def test_retry_and_mark_published(store: SqlStore) -> None:
    now = utc_now()
    store.add(
        [
            Post(
                id="lost",
                target="outbox:main",
                content="x",
                due_at=now,
                timezone="UTC",
                status=PostStatus.UNCONFIRMED,
            ),
            Post(
                id="gone",
                target="outbox:main",
                content="y",
                due_at=now,
                timezone="UTC",
                status=PostStatus.FAILED,
            ),
        ]
    )
    code, output = invoke(
        "mark-published", "lost", "--url", "https://social.example.org/@me/1"
    )
    assert code == 0, output
    code, output = invoke("retry", "gone")
    assert code == 0, output
    assert store.get("lost").status is PostStatus.PUBLISHED
    assert store.get("lost").external_id == "https://social.example.org/@me/1"
    assert store.get("gone").status is PostStatus.SCHEDULED


def test_show_json_has_attempts(store: SqlStore) -> None:
    post = schedule_json("shown", "--at", future())
    code, output = invoke("show", str(post["id"]), "--json")
    shown = json.loads(output)
    assert code == 0
    assert shown["id"] == post["id"]
    assert shown["attempts"] == []


def test_status_unhealthy_when_overdue_and_idle(store: SqlStore) -> None:
    overdue = utc_now() - timedelta(minutes=5)
    store.add(
        [
            Post(
                id="late",
                target="outbox:main",
                content="x",
                due_at=overdue,
                timezone="UTC",
            )
        ]
    )
    code, output = invoke("status", "--json")
    report = json.loads(output)
    assert code == EXIT_FAILED
    assert report["healthy"] is False
    assert report["oldest_overdue_s"] >= 300


def test_schedule_with_broker_down_stores_once(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    code, output = invoke("schedule", "stored anyway", "--at", future())
    assert code == 0, output
    assert "could not be woken" in output
    assert len(store.list_posts()) == 1


def test_schedule_starts_no_embedded_redis(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("POSTSCHED_BROKER_URL")
    monkeypatch.delenv("POSTSCHED_RESULT_BACKEND")
    data_dir = Path(tempfile.mkdtemp(prefix="postsched-cli-"))
    monkeypatch.setenv("POSTSCHED_DATA_DIR", str(data_dir))
    code, output = invoke("schedule", "no worker yet", "--at", future())
    assert code == 0, output
    assert not (data_dir / "redis.sock").exists()
    assert len(store.list_posts()) == 1
