"""The webhook publisher: POSTs each post as JSON to the URL of its account.

A receiver can discard repeated deliveries by their ``Idempotency-Key``
header, which stays the same for every attempt to publish a post. When the
account has a secret, the ``X-Postsched-Signature`` header carries an
HMAC-SHA256 of the body bytes, so the receiver can check the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

import httpx

from scheduler.config import WebhookSettings
from scheduler.errors import (
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.model import Post, utc_now
from scheduler.publishers.base import Publisher, PublishResult
from scheduler.publishers.outbox import format_timestamp

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Postsched-Signature"
SIGNATURE_PREFIX = "sha256="
MAX_BODY_EXCERPT = 200
# A receiver responds with these 4xx statuses when it may accept the same
# request later: 408 Request Timeout and 429 Too Many Requests.
# 429 is retried too, after its Retry-After (RateLimitedError).
RETRYABLE_CLIENT_STATUSES = frozenset({408})
CONFIG_EXAMPLE = (
    '{"alerts": {"url": "https://example.org/hooks/alerts", "secret": "..."}}'
)


class WebhookPublisher(Publisher):
    """Publisher that POSTs posts to the webhooks set in ``POSTSCHED_WEBHOOKS``.

    ``webhooks`` maps each account to its URL, secret, timeout and content
    limit. One HTTP client serves every account, and ``close()`` closes it.
    """

    name = "webhook"

    def __init__(self, webhooks: dict[str, WebhookSettings]) -> None:
        self._webhooks = dict(webhooks)
        self._client = httpx.Client(follow_redirects=False)

    def check_account(self, account: str) -> None:
        """Raise ValidationError unless ``account`` is configured."""
        self._settings_for(account)

    def max_attempts(self, account: str) -> int | None:
        """Return the attempts configured for ``account``, or None for the global setting."""
        return self._settings_for(account).max_attempts

    def max_length(self, account: str) -> int:
        """Return the content limit configured for ``account``."""
        return self._settings_for(account).max_length

    def publish(self, post: Post) -> PublishResult:
        """POST ``post`` to its account's URL and return the receiver's id.

        ``published_at`` is taken right before the request is sent. Raises
        TransientPublishError on connection errors, timeouts and the statuses
        5xx, 408 and 429, and PermanentPublishError on any other non-2xx status.
        """
        account = post.account
        settings = self._settings_for(account)
        where = f"webhook {account!r} at {display_url(settings.url)}"
        body = encode_body(post)
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: post.idempotency_key,
        }
        if settings.secret:
            headers[SIGNATURE_HEADER] = sign(body, settings.secret)

        published_at = utc_now()
        response = self._send(where, settings, body, headers)

        _raise_for_status(where, response)
        logger.debug(
            "post %s delivered to %s: %s", post.id, where, response.status_code
        )
        return PublishResult(published_at, external_id=_response_id(response))

    def can_find(self, account: str) -> bool:
        """Return whether ``account`` has a ``lookup_url``."""
        settings = self._webhooks.get(account)
        return settings is not None and settings.lookup_url is not None

    def find(self, post: Post) -> PublishResult | None:
        """Ask the receiver's ``lookup_url`` whether it has ``post``, by idempotency key.

        Raises NotImplementedError when the account has no ``lookup_url``, and
        TransientPublishError when the receiver cannot answer.
        """
        settings = self._settings_for(post.account)
        if settings.lookup_url is None:
            raise NotImplementedError(f"webhook {post.account!r} has no lookup_url")
        where = f"webhook {post.account!r} lookup at {display_url(settings.lookup_url)}"
        try:
            response = self._client.get(
                settings.lookup_url,
                headers={IDEMPOTENCY_HEADER: post.idempotency_key},
                timeout=settings.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise TransientPublishError(
                f"GET {where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code == HTTPStatus.NOT_FOUND:
            return None
        if response.status_code != HTTPStatus.OK:
            raise TransientPublishError(
                f"{where} responded with {response.status_code}: {_body_excerpt(response)}"
            )
        return PublishResult(utc_now(), external_id=_response_id(response))

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._client.close()

    def _settings_for(self, account: str) -> WebhookSettings:
        settings = self._webhooks.get(account)
        if settings is None:
            configured = ", ".join(sorted(self._webhooks)) or "none"
            raise ValidationError(
                "target",
                f"{self.name}:{account}",
                f"webhook account {account!r} is not configured "
                f"(configured accounts: {configured})",
                f"add it to POSTSCHED_WEBHOOKS, a JSON object such as {CONFIG_EXAMPLE}",
            )
        return settings

    def _send(
        self,
        where: str,
        settings: WebhookSettings,
        body: bytes,
        headers: dict[str, str],
    ) -> httpx.Response:
        try:
            return self._client.post(
                settings.url, content=body, headers=headers, timeout=settings.timeout_s
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentPublishError(
                f"cannot POST to {where}: invalid URL ({exc}); "
                "set an http(s) URL for it in POSTSCHED_WEBHOOKS"
            ) from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent yet, so sending again cannot publish twice.
            raise TransientPublishError(
                f"POST to {where} timed out connecting after {settings.timeout_s:g} s"
            ) from exc
        except httpx.TimeoutException as exc:
            # The receiver may have accepted the post before the timeout.
            raise UnknownOutcomeError(
                f"POST to {where} was sent but got no answer within {settings.timeout_s:g} s; "
                "the receiver may have it, so it is not sent again: check with the receiver"
            ) from exc
        except httpx.ConnectError as exc:
            raise TransientPublishError(
                f"POST to {where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            # Connected, so the request may have reached the receiver.
            raise UnknownOutcomeError(
                f"POST to {where} was sent but the connection failed ({type(exc).__name__}: {exc}); "
                "the receiver may have it, so it is not sent again: check with the receiver"
            ) from exc


def encode_body(post: Post) -> bytes:
    """Serialize the JSON body of ``post``, the exact bytes that are signed and sent."""
    payload = {
        "post_id": post.id,
        "target": post.target,
        "content": post.content,
        "link": post.link,
        "due_at": format_timestamp(post.due_at),
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """Return the signature header value: ``sha256=`` and the hex HMAC of ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def display_url(url: str) -> str:
    """Return ``url`` without user info and query, which may carry credentials."""
    parts = urlsplit(url)
    host_and_port = parts.netloc.rpartition("@")[2]
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, host_and_port, parts.path, query, ""))


def _raise_for_status(where: str, response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    excerpt = _body_excerpt(response)
    message = f"{where} responded with {status} {response.reason_phrase}: {excerpt}"
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        raise RateLimitedError(
            message, retry_after_s(response.headers.get("Retry-After"))
        )
    if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
        raise TransientPublishError(message)
    if 300 <= status < 400:
        location = display_url(response.headers.get("Location", ""))
        raise PermanentPublishError(
            f"{message}; redirects are not followed, so set the final URL "
            f"({location or 'see the Location header'}) in POSTSCHED_WEBHOOKS"
        )
    raise PermanentPublishError(message)


def retry_after_s(header: str | None) -> float | None:
    """Return the seconds of a Retry-After header (delay or HTTP date), or None."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def _body_excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    if len(text) <= MAX_BODY_EXCERPT:
        return repr(text)
    return f"{text[:MAX_BODY_EXCERPT]!r}... ({len(text)} chars)"


def _response_id(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    external_id = payload.get("id")
    if isinstance(external_id, str | int) and not isinstance(external_id, bool):
        return str(external_id)
    return None
