"""The health endpoint: store and broker reachable, check chain alive, overdue posts."""

from __future__ import annotations

import logging
from datetime import timedelta

import kombu.exceptions
import redis
from fastapi import APIRouter, Request, Response

from scheduler.errors import StoreUnavailableError
from scheduler.http.models import Health
from scheduler.model import utc_now
from scheduler.status import OVERDUE_TOLERANCE_S, read_status
from tasks.app import PostschedCelery

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not healthy"}},
    summary="Report whether posts will be published",
)
def health(request: Request, response: Response) -> Health:
    """Check the store, the broker and the check chain, and return 200 when all is well, else 503.

    Needs no token even when the API has one, so that load balancers and
    orchestrators can call it. The body contains no error text: the reasons
    go to the server's log.
    """
    report = read_health(request.app.state.celery_app, request.app.state.probe_log)
    if report.status != "ok":
        response.status_code = 503
    return report


def read_health(celery_app: PostschedCelery, probes: ProbeLog) -> Health:
    """Probe the store, the broker and Redis, and return the health report."""
    runtime = celery_app.runtime
    now = utc_now()
    overdue: int | None = None
    try:
        overdue = runtime.store.count_due(now - timedelta(seconds=OVERDUE_TOLERANCE_S))
    except StoreUnavailableError as exc:
        probes.failed("store", exc)
    else:
        probes.succeeded("store")

    broker_reachable = _broker_reachable(celery_app, probes)
    chain_alive: bool | None = None
    healthy = False
    if overdue is not None:
        try:
            status = read_status(runtime.store, runtime.chain, now)
        except (redis.RedisError, StoreUnavailableError) as exc:
            probes.failed("result backend", exc)
        else:
            if status.redis_error is not None:
                probes.failed("result backend", status.redis_error)
            else:
                chain_alive = status.check_alive
                healthy = status.healthy
                probes.succeeded("result backend")
    if overdue and chain_alive is False:
        logger.warning(
            "health: %d post(s) overdue and no live check will claim them", overdue
        )

    ok = (
        overdue is not None and broker_reachable and chain_alive is not None and healthy
    )
    return Health(
        status="ok" if ok else "unavailable",
        store_reachable=overdue is not None,
        broker_reachable=broker_reachable,
        chain_alive=chain_alive,
        overdue=overdue,
    )


def _broker_reachable(celery_app: PostschedCelery, probes: ProbeLog) -> bool:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S
            )
    except (kombu.exceptions.KombuError, OSError) as exc:
        probes.failed("broker", exc)
        return False
    probes.succeeded("broker")
    return True


class ProbeLog:
    """Logs of the health probes: a warning when a part fails, info when it recovers.

    A failure that goes on is logged at debug, so a load balancer polling
    the endpoint does not flood the log.
    """

    def __init__(self) -> None:
        self._failing: set[str] = set()

    def failed(self, part: str, error: Exception | str) -> None:
        """Log that the probe of ``part`` failed with ``error``."""
        level = logging.DEBUG if part in self._failing else logging.WARNING
        self._failing.add(part)
        logger.log(level, "health: cannot reach the %s: %s", part, error)

    def succeeded(self, part: str) -> None:
        """Log that the probe of ``part`` succeeded, when it had failed before."""
        if part in self._failing:
            self._failing.discard(part)
            logger.info("health: the %s is reachable again", part)
