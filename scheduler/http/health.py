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
    report = read_health(request.app.state.celery_app)
    if report.status != "ok":
        response.status_code = 503
    return report


def read_health(celery_app: PostschedCelery) -> Health:
    """Probe the store, the broker and Redis, and return the health report."""
    runtime = celery_app.runtime
    now = utc_now()
    overdue: int | None = None
    try:
        overdue = runtime.store.count_due(now - timedelta(seconds=OVERDUE_TOLERANCE_S))
    except StoreUnavailableError as exc:
        logger.warning("health: the store is unreachable: %s", exc)

    broker_reachable = _broker_reachable(celery_app)
    chain_alive: bool | None = None
    healthy = False
    if overdue is not None:
        try:
            status = read_status(runtime.store, runtime.chain, now)
            chain_alive = status.check_alive
            healthy = status.healthy
        except (redis.RedisError, StoreUnavailableError) as exc:
            logger.warning("health: cannot read the check chain: %s", exc)
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


def _broker_reachable(celery_app: PostschedCelery) -> bool:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S
            )
    except (kombu.exceptions.KombuError, OSError) as exc:
        logger.warning("health: the broker is unreachable: %s", exc)
        return False
    return True
