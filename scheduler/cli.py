"""The ``postsched`` command line.

Exit codes: 0 success; 1 the command ran but its job failed (a post of ``run``
was not published, or was published twice); 2 invalid input or settings;
3 the store or the broker could not be reached.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import kombu.exceptions
import redis
import typer
from rich.console import Console
from rich.table import Table

from scheduler.config import load_settings
from scheduler.csv_import import CsvFileError
from scheduler.errors import (
    ConfigError,
    ImportFileError,
    InvalidStateError,
    PostNotFoundError,
    PostschedError,
    StoreUnavailableError,
    ValidationError,
)
from scheduler.model import Post, PostStatus, post_to_dict, utc_now

if TYPE_CHECKING:
    from scheduler.service import PostService
    from scheduler.status import StatusReport
    from tasks.app import PostschedCelery, Runtime

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "schedule.csv"

app = typer.Typer(
    help="Publish scheduled posts at the moment they are due.", no_args_is_help=True
)
console = Console()
error_console = Console(stderr=True)


class DateFormat(enum.StrEnum):
    """Order of day, month and year in the bulk CSV format."""

    YMD = "ymd"
    MDY = "mdy"
    DMY = "dmy"


def _fail(message: str, code: int) -> NoReturn:
    error_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


# Apps opened by the running command, closed when its work is done.
_open_apps: list[PostschedCelery] = []


@contextmanager
def _errors_as_exit_codes() -> Iterator[None]:
    try:
        yield
    except (
        ValidationError,
        ImportFileError,
        CsvFileError,
        ConfigError,
        PostNotFoundError,
        InvalidStateError,
    ) as exc:
        _fail(str(exc), EXIT_INVALID)
    except StoreUnavailableError as exc:
        _fail(str(exc), EXIT_UNAVAILABLE)
    except PostschedError as exc:
        _fail(str(exc), EXIT_FAILED)
    except (redis.RedisError, kombu.exceptions.KombuError) as exc:
        _fail(
            f"cannot reach Redis: {exc}; start a worker ('postsched worker') for the embedded "
            "Redis, or set POSTSCHED_BROKER_URL to a running one",
            EXIT_UNAVAILABLE,
        )
    finally:
        while _open_apps:
            opened = _open_apps.pop()
            opened.runtime.close()
            opened.close()


def _warn_if_not_woken(service: PostService) -> None:
    if service.wake_error is not None:
        error_console.print(
            f"[yellow]warning:[/] stored, but the check chain could not be woken ({service.wake_error}); "
            "the posts are published once a worker runs",
            highlight=False,
        )


def _runtime() -> Runtime:
    from tasks.app import create_app

    # Only `worker` and `run` start an embedded Redis: a command that started
    # it would stop it on exit, under any worker that attached meanwhile.
    celery_app = create_app(start_embedded=False)
    _open_apps.append(celery_app)
    return celery_app.runtime


def _service() -> PostService:
    return _runtime().service


def _print_status(report: StatusReport) -> None:
    table = Table("", "", show_header=False, box=None)
    if report.check is None:
        table.add_row("check", "none recorded")
    else:
        lease = "lease live" if report.check_lease_live else "no lease"
        table.add_row(
            "check", f"{report.check.task_id} ({report.check_state}, {lease})"
        )
        table.add_row("check ETA", report.check.eta.isoformat(timespec="milliseconds"))
    if report.next_post is None:
        table.add_row("next due post", "none")
    else:
        table.add_row(
            "next due post",
            f"{report.next_post.id} at {report.next_post.due_at.isoformat(timespec='milliseconds')}",
        )
    table.add_row("oldest overdue", f"{report.oldest_overdue_s:.1f} s")
    for post_status in PostStatus:
        table.add_row(str(post_status), str(report.counts.get(post_status, 0)))
    verdict = (
        "[green]healthy[/]"
        if report.healthy
        else "[bold red]posts are overdue and no live check exists[/]"
    )
    table.add_row("chain", verdict)
    console.print(table)


@app.command()
def schedule(
    content: Annotated[str, typer.Argument(help="Text of the post.")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Due time, ISO 8601, such as 2026-12-24T18:00:00+01:00."
        ),
    ] = None,
    now: Annotated[
        bool, typer.Option("--now", help="Publish at once instead of at a due time.")
    ] = False,
    target: Annotated[
        str, typer.Option(help="PUBLISHER:ACCOUNT, such as outbox:main.")
    ] = "outbox:main",
    tz: Annotated[
        str | None,
        typer.Option(help="IANA time zone of a due time written without offset."),
    ] = None,
    link: Annotated[
        str | None, typer.Option(help="Link published with the post.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the post as JSON.")
    ] = False,
) -> None:
    """Schedule one post, due --at a time or --now."""
    if (at is None) == (not now):
        _fail("give either --at TIME or --now", EXIT_INVALID)
    with _errors_as_exit_codes():
        service = _service()
        post = service.schedule(
            target=target, content=content, due_at=at, timezone=tz, link=link
        )
    _warn_if_not_woken(service)
    _print_post(
        post,
        as_json,
        f"scheduled post {post.id} to {post.target} at {post.due_at.isoformat()}",
    )


@app.command()
def reschedule(
    post_id: Annotated[str, typer.Argument(help="Id of a scheduled post.")],
    at: Annotated[str, typer.Option("--at", help="New due time, ISO 8601.")],
    tz: Annotated[
        str | None,
        typer.Option(help="IANA time zone of a due time written without offset."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the post as JSON.")
    ] = False,
) -> None:
    """Move a scheduled post to another due time."""
    with _errors_as_exit_codes():
        post = _service().reschedule(post_id, at, tz)
    _print_post(
        post, as_json, f"rescheduled post {post.id} to {post.due_at.isoformat()}"
    )


@app.command()
def edit(
    post_id: Annotated[str, typer.Argument(help="Id of a scheduled post.")],
    content: Annotated[str | None, typer.Option(help="New text of the post.")] = None,
    link: Annotated[
        str | None, typer.Option(help="New link; an empty string removes it.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the post as JSON.")
    ] = False,
) -> None:
    """Change the text or link of a scheduled post."""
    if content is None and link is None:
        _fail("give --content, --link or both", EXIT_INVALID)
    with _errors_as_exit_codes():
        post = _service().edit(post_id, content=content, link=link)
    _print_post(post, as_json, f"edited post {post.id}")


@app.command()
def retry(
    post_id: Annotated[
        str, typer.Argument(help="Id of a failed, unconfirmed or missed post.")
    ],
) -> None:
    """Publish a failed, unconfirmed or missed post again, now."""
    with _errors_as_exit_codes():
        post = _service().retry(post_id)
    console.print(f"post {post.id} will be published again now")


@app.command("mark-published")
def mark_published(
    post_id: Annotated[
        str, typer.Argument(help="Id of an unconfirmed or failed post.")
    ],
    url: Annotated[str, typer.Option(help="Where the post is on the platform.")],
) -> None:
    """Record that a post is out, after checking the platform by hand."""
    with _errors_as_exit_codes():
        post = _service().mark_published(post_id, url)
    console.print(f"post {post.id} marked published at {url}")


@app.command()
def reconcile() -> None:
    """Look unconfirmed posts up on their platforms and settle those found or missing."""
    with _errors_as_exit_codes():
        outcomes = _service().reconcile()
    if not outcomes:
        console.print("no unconfirmed posts")
    for outcome, count in sorted(outcomes.items()):
        console.print(f"{count} post(s) {outcome}")


@app.command()
def show(
    post_id: Annotated[str, typer.Argument(help="Id of a post.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tables.")
    ] = False,
) -> None:
    """Show a post and the history of its attempts."""
    with _errors_as_exit_codes():
        post, attempts = _service().show(post_id)
    if as_json:
        payload = post_to_dict(post)
        payload["attempts"] = [
            {**vars(attempt), "started_at": attempt.started_at.isoformat()}
            for attempt in attempts
        ]
        print(json.dumps(payload))
        return
    fields = Table(show_header=False, box=None)
    for name, value in post_to_dict(post).items():
        fields.add_row(name, "" if value is None else str(value))
    console.print(fields)
    history = Table(
        "started (UTC)", "duration", "worker", "outcome", "error", title="attempts"
    )
    for attempt in attempts:
        history.add_row(
            attempt.started_at.isoformat(timespec="milliseconds"),
            f"{attempt.duration_ms:.0f} ms",
            attempt.worker,
            attempt.outcome,
            attempt.error or "",
        )
    console.print(history)


def _print_post(post: Post, as_json: bool, message: str) -> None:
    if as_json:
        print(json.dumps(post_to_dict(post)))
    else:
        console.print(message, highlight=False)


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV file: bulk (date, message, link) or with a header row."
        ),
    ],
    target: Annotated[
        str, typer.Option(help="Target of every row of a bulk file.")
    ] = "outbox:main",
    date_format: Annotated[
        DateFormat, typer.Option(help="Date order of a bulk file.")
    ] = DateFormat.YMD,
    tz: Annotated[
        str | None, typer.Option(help="IANA time zone the times are written in.")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Import the valid rows and report the invalid ones.")
    ] = False,
) -> None:
    """Import a CSV file of posts, all of them or none."""
    with _errors_as_exit_codes():
        service = _service()
        report = service.import_csv(
            path,
            skip_invalid=skip_invalid,
            target=target,
            date_format=date_format.value,
            tz=tz,
        )
    _warn_if_not_woken(service)
    for error in report.errors:
        error_console.print(f"skipped {error}", highlight=False)
    console.print(
        f"imported {len(report.posts)} post(s) from {path}, skipped {len(report.errors)} invalid row(s)"
    )


@app.command("list")
def list_(
    status: Annotated[
        PostStatus | None, typer.Option(help="Only posts in this status.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Only posts to this target.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Maximum number of posts shown.")
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON lines instead of a table.")
    ] = False,
) -> None:
    """List posts, earliest due first."""
    with _errors_as_exit_codes():
        store = load_settings().open_store()
        try:
            posts = store.list_posts(status=status, target=target, limit=limit)
        finally:
            store.close()
    if as_json:
        for post in posts:
            print(json.dumps(post_to_dict(post)))
        return
    table = Table("id", "due (UTC)", "status", "target", "content")
    for post in posts:
        table.add_row(
            post.id,
            post.due_at.isoformat(timespec="milliseconds"),
            post.status,
            post.target,
            _clip(post.content),
        )
    console.print(table)


@app.command()
def cancel(
    post_id: Annotated[str, typer.Argument(help="Id of a scheduled post.")],
) -> None:
    """Cancel a scheduled post."""
    with _errors_as_exit_codes():
        store = load_settings().open_store()
        try:
            store.cancel(post_id, utc_now())
        finally:
            store.close()
    console.print(f"cancelled post {post_id}")


@app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
) -> None:
    """Show the recorded check, the next due post and the counts by status.

    Exits with 1 when posts are overdue and no live check will claim them.
    """
    from scheduler.status import read_status

    with _errors_as_exit_codes():
        runtime = _runtime()
        report = read_status(runtime.store, runtime.chain, utc_now())
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        _print_status(report)
    if not report.healthy:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def metrics() -> None:
    """Print the Prometheus metrics: post counters, lateness and the chain gauge."""
    from prometheus_client import generate_latest

    from scheduler.metrics import create_registry

    with _errors_as_exit_codes():
        runtime = _runtime()
        exposition = generate_latest(
            create_registry(runtime.metrics, runtime.chain)
        ).decode()
    print(exposition, end="")


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Worker processes; default: one per CPU.")
    ] = None,
    loglevel: Annotated[
        str, typer.Option(help="Log level: DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Run a Celery worker with the configured settings."""
    from tasks.app import create_app

    with _errors_as_exit_codes():
        celery_app = create_app()
    argv = ["worker", f"--loglevel={loglevel}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@app.command()
def run(
    sample: Annotated[
        Path, typer.Option(help="Bulk CSV schedule to publish.")
    ] = DEFAULT_SAMPLE,
    window: Annotated[
        float, typer.Option(min=5, help="Seconds over which the due times are spread.")
    ] = 60.0,
) -> None:
    """Publish a sample schedule on a real worker and report each post's lateness."""
    from scheduler.runjob import run_main_job

    with _errors_as_exit_codes():
        code = run_main_job(sample, window_s=window, console=console)
    raise typer.Exit(code)


def _clip(text: str, width: int = 50) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def main() -> None:
    """Run the command line."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app(prog_name="postsched")


if __name__ == "__main__":
    main()
