"""The postsched command line, on the test Redis and a SQLite store."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_UNAVAILABLE,
    app,
)
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
    assert shown["history"] == []
    assert shown["attempts"] == 0


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


def test_broker_down_warns_once(store: SqlStore, cli_env: Settings) -> None:
    env = {
        **os.environ,
        "POSTSCHED_BROKER_URL": "redis://127.0.0.1:1/0",
        "POSTSCHED_RESULT_BACKEND": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "schedule", "hello", "--at", future()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("could not wake") == 0
    assert result.stderr.count("could not be woken") == 1
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


# Rows of about 90 bytes, so the file passes the 1 MB above which a progress bar is shown.
PROGRESS_ROWS = 15_000

POST_KEYS = {
    "id",
    "target",
    "content",
    "link",
    "due_at",
    "timezone",
    "status",
    "attempts",
    "deliveries",
    "last_error",
    "published_at",
    "external_id",
    "attempt_id",
    "lease_until",
    "created_at",
    "updated_at",
}


def write_bulk_csv(path: Path, rows: int) -> None:
    start = utc_now() + timedelta(days=1)
    lines = [
        f"{(start + timedelta(minutes=index)).strftime('%Y-%m-%d %H:%M')},"
        f"Post number {index}: doors open at six and talks start at seven\n"
        for index in range(rows)
    ]
    path.write_text("".join(lines))


def test_help_lists_exit_codes() -> None:
    code, output = invoke("--help")
    flat = " ".join(output.split())
    assert code == 0
    assert "Exit codes: 0 success; 1 the job failed" in flat
    assert "2 invalid input or settings" in flat
    assert "3 the store or Redis could not be reached" in flat


def test_list_json_has_stable_keys(store: SqlStore) -> None:
    first = schedule_json("first", "--at", future(10))
    second = schedule_json("second", "--at", future(20), "--target", "outbox:other")
    code, output = invoke("list", "--json")
    listed = [json.loads(line) for line in output.splitlines()]
    assert code == 0
    assert [item["id"] for item in listed] == [first["id"], second["id"]]
    for item in listed:
        assert set(item) == POST_KEYS
        assert datetime.fromisoformat(item["due_at"]).utcoffset() == timedelta(0)
        assert datetime.fromisoformat(item["created_at"]).utcoffset() == timedelta(0)


def test_list_json_empty_prints_nothing(store: SqlStore) -> None:
    code, output = invoke("list", "--json")
    assert code == 0
    assert output == ""


def test_list_table_fits_80_columns(store: SqlStore) -> None:
    posts = [
        schedule_json("a long text " * 10, "--at", future(), "--target", target)
        for target in ("outbox:main", "outbox:main-announcements")
    ]
    code, output = invoke("list")
    assert code == 0
    assert max(len(line) for line in output.splitlines()) <= 80
    for post in posts:
        assert str(post["id"]) in output
    assert "a long text" not in output
    assert "postsched show ID" in output


def test_list_table_wide_shows_content(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler import cli

    monkeypatch.setattr(cli.console, "width", 140)
    post = schedule_json("Doors open at six", "--at", future())
    code, output = invoke("list")
    assert code == 0
    assert max(len(line) for line in output.splitlines()) <= 140
    assert str(post["id"]) in output
    assert "Doors open at six" in output


@pytest.mark.parametrize("content", ["[/]", "[bold]not bold[/bold]", "[red"])
def test_brackets_printed_as_written(
    store: SqlStore, tmp_path: Path, content: str
) -> None:
    csv_file = tmp_path / "brackets.csv"
    csv_file.write_text(f"{content},hello\n")
    code, output = invoke("import", str(csv_file), "--tz", "UTC", "--skip-invalid")
    assert code == 0, output
    assert f"invalid due_at '{content}'" in output

    post = schedule_json(content, "--at", future())
    code, output = invoke("show", str(post["id"]))
    assert code == 0, output
    assert content in output


def test_status_json_keys(store: SqlStore) -> None:
    schedule_json("soon", "--at", future())
    code, output = invoke("status", "--json")
    report = json.loads(output)
    assert code == 0
    assert set(report) == {
        "healthy",
        "check",
        "check_alive",
        "next_post",
        "oldest_overdue_s",
        "redis_error",
        "counts",
    }
    assert report["counts"] == {
        "scheduled": 1,
        "publishing": 0,
        "published": 0,
        "failed": 0,
        "missed": 0,
        "unconfirmed": 0,
        "cancelled": 0,
    }
    assert set(report["next_post"]) == {"id", "due_at"}
    assert set(report["check"]) == {"task_id", "eta", "state", "lease_live"}
    assert datetime.fromisoformat(report["check"]["eta"]).utcoffset() == timedelta(0)


def test_import_json_report(store: SqlStore, tmp_path: Path) -> None:
    csv_file = tmp_path / "posts.csv"
    csv_file.write_text(
        "2030-01-01 10:00,good\n2030-02-30 10:00,impossible date\n2030-01-02 10:00,fine\n"
    )
    code, output = invoke(
        "import", str(csv_file), "--tz", "UTC", "--skip-invalid", "--json"
    )
    report = json.loads(output)
    assert code == 0
    assert set(report) == {"path", "imported", "ids", "skipped"}
    assert report["imported"] == 2
    assert sorted(report["ids"]) == sorted(post.id for post in store.list_posts())
    assert len(report["skipped"]) == 1
    assert report["skipped"][0]["line"] == 2
    assert "2030-02-30" in report["skipped"][0]["reason"]


def test_interrupt_after_store_reports_import(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_file = tmp_path / "posts.csv"
    csv_file.write_text("2030-01-01 10:00,one\n2030-01-02 10:00,two\n")
    real_add = SqlStore.add

    def add_then_interrupt(self: SqlStore, posts: list[Post]) -> None:
        real_add(self, posts)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SqlStore, "add", add_then_interrupt)
    result = CliRunner().invoke(app, ["import", str(csv_file), "--tz", "UTC", "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["imported"] == 2
    assert len(store.list_posts()) == 2
    assert "the import is complete" in result.stderr
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_while_parsing_imports_nothing(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler import csv_import

    csv_file = tmp_path / "posts.csv"
    csv_file.write_text("2030-01-01 10:00,one\n")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(csv_import, "parse_csv", interrupted)
    result = CliRunner().invoke(app, ["import", str(csv_file), "--tz", "UTC"])

    assert result.exit_code == 130
    assert "nothing was imported" in result.stderr
    assert result.stdout == ""
    assert store.list_posts() == []


@pytest.mark.parametrize(
    "args",
    [["show", "\udcff"], ["cancel", "\udcff"], ["list", "--target", "outbox:\udcff"]],
)
def test_undecodable_argument_exits_2(store: SqlStore, args: list[str]) -> None:
    code, output = invoke(*args)
    assert code == EXIT_INVALID, output
    assert "lone surrogate" in output
    assert "Traceback" not in output


def test_reconcile_json_counts_all_outcomes(store: SqlStore) -> None:
    code, output = invoke("reconcile", "--json")
    assert code == 0
    assert json.loads(output) == {
        "published": 0,
        "sent_again": 0,
        "left_unconfirmed": 0,
    }


def test_cancel_json_prints_post(store: SqlStore) -> None:
    post = schedule_json("to cancel", "--at", future())
    code, output = invoke("cancel", str(post["id"]), "--json")
    cancelled = json.loads(output)
    assert code == 0
    assert set(cancelled) == POST_KEYS
    assert cancelled["status"] == "cancelled"


def test_retry_and_mark_published_json(store: SqlStore) -> None:
    now = utc_now()
    for post_id, status in (
        ("lost", PostStatus.UNCONFIRMED),
        ("gone", PostStatus.FAILED),
    ):
        store.add(
            [
                Post(
                    id=post_id,
                    target="outbox:main",
                    content="x",
                    due_at=now,
                    timezone="UTC",
                    status=status,
                )
            ]
        )
    code, output = invoke(
        "mark-published", "lost", "--url", "https://social.example.org/@me/1", "--json"
    )
    assert code == 0, output
    assert json.loads(output)["status"] == "published"
    code, output = invoke("retry", "gone", "--json")
    assert code == 0, output
    assert json.loads(output)["status"] == "scheduled"


def test_unreachable_store_exits_3(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_STORE_URL", "postgresql://postgres@127.0.0.1:1/test")
    monkeypatch.setenv("POSTSCHED_STORE_CONNECT_TIMEOUT", "1")
    code, output = invoke("list", "--json")
    assert code == EXIT_UNAVAILABLE
    assert "127.0.0.1:1" in output


def test_unreachable_redis_exits_3(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("POSTSCHED_RESULT_BACKEND", "redis://127.0.0.1:1/0")
    store.add(
        [
            Post(
                id="0" * 32,
                target="outbox:main",
                content="stored while Redis is down",
                due_at=utc_now() + timedelta(minutes=10),
                timezone="UTC",
            )
        ]
    )
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == EXIT_UNAVAILABLE
    report = json.loads(result.stdout)
    assert report["counts"]["scheduled"] == 1
    assert report["check"] is None
    assert report["healthy"] is False
    assert "127.0.0.1:1" in report["redis_error"]
    assert "cannot reach Redis" in result.stderr
    assert (
        "POSTSCHED_BROKER_URL and POSTSCHED_RESULT_BACKEND is running" in result.stderr
    )
    assert "embedded" not in result.stderr


def test_invalid_setting_exits_2(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSCHED_MAX_ATTEMPTS", "zero")
    code, output = invoke("list")
    assert code == EXIT_INVALID
    assert "POSTSCHED_MAX_ATTEMPTS" in output


def test_import_without_tty_has_no_progress(store: SqlStore, tmp_path: Path) -> None:
    csv_file = tmp_path / "big.csv"
    write_bulk_csv(csv_file, PROGRESS_ROWS)
    code, output = invoke("import", str(csv_file), "--tz", "UTC")
    assert code == 0, output
    assert "validating" not in output
    assert f"imported {PROGRESS_ROWS} post(s)" in output


def tty_env(settings: Settings) -> dict[str, str]:
    """Return the environment of a subprocess on the test settings and a terminal."""
    return dict(
        os.environ,
        POSTSCHED_BROKER_URL=settings.broker_url or "",
        POSTSCHED_RESULT_BACKEND=settings.result_backend or "",
        POSTSCHED_STORE_URL=settings.resolved_store_url,
        POSTSCHED_KEY_PREFIX=settings.key_prefix,
        TERM="xterm",
    )


def run_with_tty_stderr(
    args: list[str], env: dict[str, str], stdout_path: Path
) -> tuple[int, str, str]:
    """Run the command line with standard error on a pseudo-terminal.

    Standard output goes to a file, because a large output would fill a
    pipe that is not read while the terminal is drained.
    """
    primary, secondary = pty.openpty()
    with stdout_path.open("wb") as stdout_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", *args],
            stdout=stdout_file,
            stderr=secondary,
            env=env,
        )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([primary], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                # Linux raises EIO once the child closed the terminal.
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(primary)
    code = process.wait(timeout=60)
    return code, stdout_path.read_text(), b"".join(chunks).decode(errors="replace")


def test_import_on_tty_shows_progress(cli_env: Settings, tmp_path: Path) -> None:
    csv_file = tmp_path / "big.csv"
    write_bulk_csv(csv_file, PROGRESS_ROWS)
    env = tty_env(cli_env)

    code, stdout, stderr = run_with_tty_stderr(
        ["import", str(csv_file), "--tz", "UTC"], env, tmp_path / "stdout"
    )

    assert code == 0, stderr
    assert "validating" in stderr
    assert f"storing {PROGRESS_ROWS:,} posts" in stderr
    assert f"imported {PROGRESS_ROWS} post(s)" in stdout


def test_import_json_on_tty_has_no_progress(cli_env: Settings, tmp_path: Path) -> None:
    csv_file = tmp_path / "big.csv"
    write_bulk_csv(csv_file, PROGRESS_ROWS)
    env = tty_env(cli_env)

    code, stdout, stderr = run_with_tty_stderr(
        ["import", str(csv_file), "--tz", "UTC", "--json"], env, tmp_path / "stdout"
    )

    assert code == 0, stderr
    assert "validating" not in stderr
    assert json.loads(stdout)["imported"] == PROGRESS_ROWS
