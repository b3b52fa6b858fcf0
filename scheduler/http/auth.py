"""Bearer-token authentication of the HTTP API, and the loopback rule for listening without it."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from scheduler.errors import ConfigError

logger = logging.getLogger(__name__)

# A shorter token is cheap to guess over the network.
MIN_TOKEN_LENGTH = 16
TOKEN_FIX = (
    "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="Required on every endpoint except GET /health when the server "
    "was started with POSTSCHED_HTTP_TOKEN set.",
)


def check_token(token: SecretStr | None) -> None:
    """Raise ConfigError when ``token`` is set but too short to be safe."""
    if token is None:
        return
    length = len(token.get_secret_value())
    if length < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"POSTSCHED_HTTP_TOKEN is {length} characters long, shorter than the minimum of "
            f"{MIN_TOKEN_LENGTH}; {TOKEN_FIX}"
        )


def is_loopback(host: str) -> bool:
    """Return whether ``host`` (an IP address or ``localhost``) is a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, token: SecretStr | None) -> None:
    """Raise ConfigError when the server would listen beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is not a loopback address, so the API would be open to the network "
            f"without authentication; set POSTSCHED_HTTP_TOKEN ({TOKEN_FIX}), "
            "or listen on 127.0.0.1"
        )


def token_dependency(token: SecretStr | None) -> Callable[..., None]:
    """Return a FastAPI dependency that rejects requests without ``token``, or accepts all when it is None."""
    expected = token.get_secret_value().encode() if token is not None else None

    def require_token(
        request: Request,
        credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer_scheme)
        ],
    ) -> None:
        if expected is None:
            return
        if credentials is None:
            scheme = request.headers.get("Authorization", "").partition(" ")[0]
            problem = (
                f"the Authorization header uses the {scheme[:20]!r} scheme, not Bearer"
                if scheme
                else "missing bearer token"
            )
            raise HTTPException(
                401,
                f"{problem}; send the header 'Authorization: Bearer TOKEN' "
                "with the server's POSTSCHED_HTTP_TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # compare_digest's run time does not reveal how many leading bytes match.
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            client = request.client.host if request.client else "unknown"
            logger.warning("rejected a wrong bearer token from %s", client)
            raise HTTPException(
                401,
                "invalid bearer token; send the server's POSTSCHED_HTTP_TOKEN",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return require_token
