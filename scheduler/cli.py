"""The ``postsched`` command line.

Exit codes are listed in EXIT_CODES_HELP, shown by ``postsched --help``.
With ``--json``, standard output contains only JSON: one object, or for
``list`` one object per line. Messages and errors go to standard error.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import kombu.exceptions
import redis
import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from scheduler.config import load_settings
from scheduler.csv_import import CsvFileError, ImportReport
from scheduler.errors import (
    ConfigError,
    ImportFileError,
    InvalidStateError,
    PostNotFoundError,
    PostschedError,
    StoreUnavailableError,
    ValidationError,
)
from scheduler.model import (
    Attempt,
    Post,
    PostStatus,
    check_encodable,
    post_to_dict,
    utc_now,
)

if TYPE_CHECKING:
    from scheduler.service import PostService
    from scheduler.status import StatusReport
    from tasks.app import PostschedCelery, Runtime

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
# As a shell reports a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = (
    "Exit codes: 0 success; "
    f"{EXIT_FAILED} the job failed (a post of 'run' was not published, or was "
    "published twice; for 'status', posts are overdue and no live check exists); "
    f"{EXIT_INVALID} invalid input or settings, and nothing was changed; "
    f"{EXIT_UNAVAILABLE} the store or Redis could not be reached; "
    f"{EXIT_INTERRUPTED} 'import' was interrupted before it stored anything."
)

DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "schedule.csv"
# Below this width, the table of `list` leaves out the content column, so
# that the full ids stay on one line.
MIN_WIDTH_FOR_CONTENT = 100
# Files smaller than this import without a progress bar.
PROGRESS_MIN_BYTES = 1_000_000
JSON_HELP = "Print JSON to standard output instead of text."
# Outcomes of `reconcile` for an unconfirmed post, named as PostService.reconcile names them.
RECONCILE_OUTCOMES = ("published", "sent again", "left unconfirmed")

app = typer.Typer(
    help="Publish scheduled posts at the moment they are due.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)
# soft_wrap keeps a long message or path on one line, also when the output
# is a file or pipe (80 columns). Markup is off because post content, file
# names and values in messages must print as they are: text such as "[/]"
# would otherwise be read as styling or raise an error. Styled text is
# built with Text.
console = Console(soft_wrap=True, markup=False)
error_console = Console(stderr=True, soft_wrap=True, markup=False)


class DateFormat(enum.StrEnum):
    """Order of day, month and year in the bulk CSV format."""

    YMD = "ymd"
    MDY = "mdy"
    DMY = "dmy"


def _fail(message: str, code: int) -> NoReturn:
    error_console.print(Text("error:", style="bold red"), message, highlight=False)
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
        _fail(f"cannot reach Redis: {exc}; {_redis_fix()}", EXIT_UNAVAILABLE)
    finally:
        while _open_apps:
            opened = _open_apps.pop()
            opened.runtime.close()
            opened.close()


def _redis_fix() -> str:
    """Say how to make Redis reachable, for the URLs this process was given."""
    given = [
        name
        for name in ("POSTSCHED_BROKER_URL", "POSTSCHED_RESULT_BACKEND")
        if os.environ.get(name)
    ]
    if given:
        return f"check that the Redis server at {' and '.join(given)} is running and the URL is right"
    return (
        "start a worker ('postsched worker') for the embedded Redis, "
        "or set POSTSCHED_BROKER_URL to a running one"
    )


def _warn_if_not_woken(service: PostService) -> None:
    if service.wake_error is not None:
        error_console.print(
            Text("warning:", style="yellow"),
            f"stored, but the check chain could not be woken ({service.wake_error}); "
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
    if report.redis_error is not None:
        table.add_row("check", "unknown: Redis is unreachable")
    elif report.check is None:
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
    if report.redis_error is not None:
        verdict = Text("unknown: Redis is unreachable", style="bold red")
    elif report.healthy:
        verdict = Text("healthy", style="green")
    else:
        verdict = Text("posts are overdue and no live check exists", style="bold red")
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
            target=target,
            content=content,
            due_at=at,
            timezone=tz,
            link=link,
            publish_now=now,
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
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Publish a failed, unconfirmed or missed post again, now."""
    with _errors_as_exit_codes():
        post = _service().retry(post_id)
    _print_post(post, as_json, f"post {post.id} will be published again now")


@app.command("mark-published")
def mark_published(
    post_id: Annotated[
        str, typer.Argument(help="Id of an unconfirmed or failed post.")
    ],
    url: Annotated[str, typer.Option(help="Where the post is on the platform.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Record that a post is out, after checking the platform by hand."""
    with _errors_as_exit_codes():
        post = _service().mark_published(post_id, url)
    _print_post(post, as_json, f"post {post.id} marked published at {url}")


@app.command()
def reconcile(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Look unconfirmed posts up on their platforms and settle those found or missing."""
    with _errors_as_exit_codes():
        outcomes = _service().reconcile()
    if as_json:
        # Snake-case keys, every one present, so scripts need no default.
        counts = {
            outcome.replace(" ", "_"): outcomes.get(outcome, 0)
            for outcome in RECONCILE_OUTCOMES
        }
        print(json.dumps(counts))
        return
    if not outcomes:
        console.print("no unconfirmed posts")
    for outcome, count in sorted(outcomes.items()):
        console.print(f"{count} post(s) {outcome}")


@app.command()
def show(
    post_id: Annotated[str, typer.Argument(help="Id of a post.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show a post and the history of its attempts."""
    with _errors_as_exit_codes():
        post, attempts = _service().show(post_id)
    if as_json:
        payload = post_to_dict(post)
        # "attempts" is the count, as in `list --json` and the HTTP API.
        payload["history"] = [
            {**vars(attempt), "started_at": attempt.started_at.isoformat()}
            for attempt in attempts
        ]
        print(json.dumps(payload))
        return
    fields = Table(show_header=False, box=None)
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    for name, value in post_to_dict(post).items():
        fields.add_row(name, "" if value is None else str(value))
    console.print(fields)
    if attempts:
        console.print(_attempts_table(attempts))
    else:
        console.print("no attempts yet")


def _attempts_table(attempts: list[Attempt]) -> Table:
    history = Table(title="attempts", box=box.SIMPLE_HEAD, pad_edge=False)
    history.add_column("started (UTC)", no_wrap=True)
    history.add_column("duration", no_wrap=True, justify="right")
    history.add_column("worker", overflow="fold")
    history.add_column("outcome", no_wrap=True)
    history.add_column("error", overflow="fold")
    for attempt in attempts:
        history.add_row(
            _short_time(attempt.started_at, seconds=True),
            f"{attempt.duration_ms:.0f} ms",
            attempt.worker,
            attempt.outcome,
            attempt.error or "",
        )
    return history


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
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Import a CSV file of posts, all of them or none.

    A progress bar is shown on standard error for files of 1 MB or more
    when standard error is a terminal, and never with --json.
    """
    show_progress = not as_json and error_console.is_terminal
    guard = _ImportInterruptGuard()
    try:
        with _errors_as_exit_codes(), _import_progress(path, show_progress) as bar:
            service = _service()
            guard.bar = bar
            report = service.import_csv(
                path,
                skip_invalid=skip_invalid,
                target=target,
                date_format=date_format.value,
                tz=tz,
                progress=guard,
            )
        _warn_if_not_woken(service)
        _print_import_report(report, path, as_json)
    except KeyboardInterrupt:
        _fail(
            "interrupted before the posts were stored; nothing was imported",
            EXIT_INTERRUPTED,
        )
    finally:
        guard.release()
    if guard.interrupted:
        error_console.print(
            "interrupted after the posts were stored: the import is complete, "
            "so do not run it again",
            highlight=False,
        )


def _print_import_report(report: ImportReport, path: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_import_report_to_dict(report)))
        return
    for error in report.errors:
        error_console.print(f"skipped {error}", highlight=False)
    console.print(
        f"imported {len(report.posts)} post(s) from {path}, skipped {len(report.errors)} invalid row(s)",
        highlight=False,
    )


class _ImportInterruptGuard:
    """Import progress receiver that holds back Ctrl-C once the store write starts.

    Before the write, Ctrl-C stops the import with nothing stored. From the
    write on, it is noted and the import finishes and prints its report,
    because the posts are stored or about to be in one transaction, and a
    user who saw no report would import them a second time.
    """

    def __init__(self) -> None:
        self.bar: _ImportProgressBar | None = None
        self.interrupted = False
        self._previous: Any = None

    def lines_read(self, lines: int, bytes_read: int) -> None:
        """Pass the lines read on to the progress bar, when one is shown."""
        if self.bar is not None:
            self.bar.lines_read(lines, bytes_read)

    def storing(self, posts: int) -> None:
        """Hold back SIGINT from now on, then tell the progress bar."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note_interrupt)
        if self.bar is not None:
            self.bar.storing(posts)

    def release(self) -> None:
        """Restore the SIGINT handler that ``storing`` replaced."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _note_interrupt(self, signum: int, frame: object) -> None:
        self.interrupted = True


def _import_report_to_dict(report: ImportReport) -> dict[str, object]:
    return {
        "path": report.path,
        "imported": len(report.posts),
        "ids": [post.id for post in report.posts],
        "skipped": [
            {"line": error.line, "reason": error.reason} for error in report.errors
        ],
    }


class _ImportProgressBar:
    """Rich progress bar of an import: bytes parsed, then the store write."""

    def __init__(self, progress: Progress, file_size: int) -> None:
        self._progress = progress
        self._file_size = file_size
        self._parse_task: TaskID = progress.add_task(
            "validating", total=file_size, lines=0
        )
        self._store_task: TaskID | None = None

    def lines_read(self, lines: int, bytes_read: int) -> None:
        """Advance the bar to ``bytes_read``."""
        self._progress.update(self._parse_task, completed=bytes_read, lines=lines)

    def storing(self, posts: int) -> None:
        """Show a pulsing bar while the store writes ``posts`` posts in one transaction."""
        self._progress.update(self._parse_task, completed=self._progress.tasks[0].total)
        self._store_task = self._progress.add_task(
            f"storing {posts:,} posts", total=None, lines=posts
        )


@contextmanager
def _import_progress(path: Path, enabled: bool) -> Iterator[_ImportProgressBar | None]:
    try:
        file_size = path.stat().st_size
    except OSError:
        # The import itself reports the unreadable file.
        file_size = 0
    if not enabled or file_size < PROGRESS_MIN_BYTES:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[lines]:,} lines"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=error_console, transient=True) as progress:
        yield _ImportProgressBar(progress, file_size)


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
        bool,
        typer.Option("--json", help="Print one JSON object per post and line."),
    ] = False,
) -> None:
    """List posts, earliest due first."""
    with _errors_as_exit_codes():
        if target is not None:
            check_encodable("target", target)
        store = load_settings().open_store()
        try:
            posts = store.list_posts(status=status, target=target, limit=limit)
        finally:
            store.close()
    if as_json:
        for post in posts:
            print(json.dumps(post_to_dict(post)))
        return
    console.print(
        _posts_table(posts, with_content=console.width >= MIN_WIDTH_FOR_CONTENT)
    )


def _posts_table(posts: list[Post], with_content: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("due (UTC)", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("target", overflow="fold")
    if with_content:
        # Wraps before the target does, because Rich narrows the widest wrapping column first.
        table.add_column("content")
    else:
        table.caption = "content: 'postsched show ID', or a wider terminal"
    for post in posts:
        row = [post.id, _short_time(post.due_at), str(post.status), post.target]
        if with_content:
            row.append(_clip(post.content))
        table.add_row(*row)
    return table


def _short_time(moment: datetime, seconds: bool = False) -> str:
    """Format a UTC time for a table: date and minutes, or seconds too."""
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


@app.command()
def cancel(
    post_id: Annotated[str, typer.Argument(help="Id of a scheduled post.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Cancel a scheduled post."""
    with _errors_as_exit_codes():
        check_encodable("id", post_id)
        store = load_settings().open_store()
        try:
            post = store.cancel(post_id, utc_now())
        finally:
            store.close()
    _print_post(post, as_json, f"cancelled post {post_id}")


@app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.")
    ] = False,
) -> None:
    """Show the recorded check, the next due post and the counts by status.

    Exits with 1 when posts are overdue and no live check will claim them,
    and with 3 when Redis is unreachable, after showing the store's part.
    """
    from scheduler.status import read_status

    with _errors_as_exit_codes():
        runtime = _runtime()
        report = read_status(runtime.store, runtime.chain, utc_now())
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        _print_status(report)
    if report.redis_error is not None:
        _fail(
            f"cannot reach Redis: {report.redis_error}; {_redis_fix()}",
            EXIT_UNAVAILABLE,
        )
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
    # The commands print a failed wake-up as a warning of their own.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_wake_errors)
    app(prog_name="postsched")


def _drop_wake_errors(record: logging.LogRecord) -> bool:
    from scheduler.service import WAKE_ERROR_RECORD

    return not getattr(record, WAKE_ERROR_RECORD, False)


if __name__ == "__main__":
    main()
