"""``postsched-http``: serve the HTTP API with uvicorn.

Exit codes: 0 after a clean stop; 2 invalid settings, such as a host beyond
loopback without POSTSCHED_HTTP_TOKEN; 3 the store could not be reached.
"""

from __future__ import annotations

import enum
import logging
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from scheduler.config import load_settings
from scheduler.errors import ConfigError, StoreUnavailableError
from scheduler.http.app import create_http_app, load_http_settings
from scheduler.http.auth import check_listen_address

EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

cli = typer.Typer(add_completion=False)


class LogLevel(enum.StrEnum):
    """Levels of the server's log, as uvicorn names them."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# soft_wrap keeps a long message on one line, so a command in it can be copied.
error_console = Console(stderr=True, soft_wrap=True)


@cli.command()
def serve(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; any other than loopback needs POSTSCHED_HTTP_TOKEN."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port to listen on.")
    ] = DEFAULT_PORT,
    log_level: Annotated[
        LogLevel, typer.Option(help="Level of the server's log.")
    ] = LogLevel.INFO,
) -> None:
    """Serve the postsched HTTP API, with the POSTSCHED_* settings of the environment."""
    logging.basicConfig(
        level=log_level.value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        http_settings = load_http_settings()
        check_listen_address(host, http_settings.token)
        app = create_http_app(load_settings(), http_settings)
    except ConfigError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from exc
    except StoreUnavailableError as exc:
        error_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    uvicorn.run(app, host=host, port=port, log_level=log_level.value)


def main() -> None:
    """Run ``postsched-http``."""
    cli(prog_name="postsched-http")


if __name__ == "__main__":
    main()
