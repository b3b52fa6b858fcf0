"""A worker bootstep that serves the Prometheus metrics when POSTSCHED_METRICS_PORT is set.

It runs in the worker's main process. The pool's child processes count into
Redis, and each scrape reads Redis, so the endpoint needs no shared memory
with them (see ``scheduler.metrics``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from scheduler.metrics import MetricsServer, create_registry

logger = logging.getLogger(__name__)


class MetricsEndpoint(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep that starts and stops the metrics HTTP server."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._server: MetricsServer | None = None

    def start(self, parent: Any) -> None:
        """Serve the metrics, or log why not; the worker runs on either way."""
        settings = parent.app.settings
        if settings.metrics_port is None:
            return
        runtime = parent.app.runtime
        registry = create_registry(runtime.metrics, runtime.chain)
        try:
            self._server = MetricsServer(
                registry, settings.metrics_host, settings.metrics_port
            )
        except OSError as exc:
            logger.error(
                "could not serve metrics on %s:%d: %s; set POSTSCHED_METRICS_PORT to a free port, "
                "or leave it unset on all but one worker of this host",
                settings.metrics_host,
                settings.metrics_port,
                exc,
            )

    def stop(self, parent: Any) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    # A cold shutdown of the worker calls terminate instead of stop.
    terminate = stop
