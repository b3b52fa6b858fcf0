"""The Mastodon publisher: posts each post as a status with ``POST /api/v1/statuses``.

Each account names a server and the environment variable that contains its
access token. Every request carries the post's ``Idempotency-Key``, and
Mastodon keeps these keys for up to one hour (Mastodon API documentation,
"Post a new status"). A post sent again within that hour therefore returns
the status made the first time instead of a second one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from http import HTTPStatus

import httpx

from scheduler.config import MastodonSettings
from scheduler.errors import (
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.model import Post, utc_now
from scheduler.publishers.base import Publisher, PublishResult
from scheduler.publishers.webhook import display_url, retry_after_s

logger = logging.getLogger(__name__)

STATUSES_PATH = "/api/v1/statuses"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RATE_LIMIT_RESET_HEADER = "X-RateLimit-Reset"
# The default limit of a Mastodon server, in characters.
# NOTE: a server may set another limit, and this one is not read from the server.
MAX_STATUS_LENGTH = 500
# Mastodon counts every http(s) link as 23 characters, whatever its real
# length (Mastodon user guide, "Posting to your profile").
URL_LENGTH = 23
LINK_SEPARATOR = "\n\n"
MAX_ERROR_EXCERPT = 200
# 408 Request Timeout may succeed when sent again; 429 is retried after its delay.
RETRYABLE_CLIENT_STATUSES = frozenset({HTTPStatus.REQUEST_TIMEOUT})
AUTH_STATUSES = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})
CONFIG_EXAMPLE = (
    '{"main": {"base_url": "https://social.example.org", '
    '"token_env": "MASTODON_MAIN_TOKEN", "visibility": "public"}}'
)

# A link starts with http:// or https:// and does not directly follow a letter,
# a digit, "@", "#" or "$".
URL_PATTERN = re.compile(r"(?<![0-9A-Za-z@#$])https?://\S+", re.IGNORECASE)
URL_END_CHARACTERS = frozenset("/=_#-+")


class MastodonPublisher(Publisher):
    """Publisher that posts statuses to the accounts set in ``POSTSCHED_MASTODON``.

    ``accounts`` maps each account to its server, token variable, visibility
    and timeout. The token is read from the environment for every check and
    send and is not kept. Mastodon offers no lookup by idempotency key, so
    ``find`` is not implemented.
    """

    name = "mastodon"

    def __init__(self, accounts: dict[str, MastodonSettings]) -> None:
        self._accounts = dict(accounts)
        self._client = httpx.Client(follow_redirects=False)

    def check_account(self, account: str) -> None:
        """Raise ValidationError unless ``account`` is configured and its token is set."""
        self._token_for(account, self._settings_for(account))

    def max_attempts(self, account: str) -> int | None:
        """Return the attempts configured for ``account``, or None for the global setting."""
        return self._settings_for(account).max_attempts

    def max_length(self, account: str) -> int:
        """Return the default status limit of Mastodon servers, as Mastodon counts it."""
        self._settings_for(account)
        return MAX_STATUS_LENGTH

    def counted_length(self, content: str, link: str | None) -> int:
        """Return the length Mastodon counts for the status made of ``content`` and ``link``."""
        return counted_length(status_text(content, link))

    def publish(self, post: Post) -> PublishResult:
        """Post ``post`` as a status and return the status id and URL.

        ``published_at`` is taken right before the request is sent. Raises
        RateLimitedError on 429, TransientPublishError on connection errors,
        connect timeouts, 408 and 5xx, UnknownOutcomeError when no response came
        back after sending, and PermanentPublishError on any other non-2xx
        status.
        """
        account = post.account
        settings = self._settings_for(account)
        token = self._token_for(account, settings)
        where = f"mastodon {account!r} at {display_url(settings.base_url)}"
        body = encode_body(where, post, settings.visibility)
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: post.idempotency_key,
        }

        published_at = utc_now()
        response = self._send(where, settings, body, headers)

        _raise_for_status(where, settings, response)
        result = _status_result(where, published_at, response)
        logger.debug(
            "post %s published to %s as status %s", post.id, where, result.external_id
        )
        return result

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._client.close()

    def _settings_for(self, account: str) -> MastodonSettings:
        settings = self._accounts.get(account)
        if settings is None:
            configured = ", ".join(sorted(self._accounts)) or "none"
            raise ValidationError(
                "target",
                f"{self.name}:{account}",
                f"mastodon account {account!r} is not configured "
                f"(configured accounts: {configured})",
                f"add it to POSTSCHED_MASTODON, a JSON object such as {CONFIG_EXAMPLE}",
            )
        return settings

    def _token_for(self, account: str, settings: MastodonSettings) -> str:
        token = os.environ.get(settings.token_env, "").strip()
        if not token:
            raise ValidationError(
                "target",
                f"{self.name}:{account}",
                f"the access token of mastodon account {account!r} is missing: "
                f"the environment variable {settings.token_env} is not set or empty",
                f"set {settings.token_env} to an access token of the account "
                "with the write:statuses scope",
            )
        return token

    def _send(
        self,
        where: str,
        settings: MastodonSettings,
        body: bytes,
        headers: dict[str, str],
    ) -> httpx.Response:
        url = f"{settings.base_url}{STATUSES_PATH}"
        try:
            return self._client.post(
                url, content=body, headers=headers, timeout=settings.timeout_s
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentPublishError(
                f"cannot POST to {where}: invalid URL ({exc}); "
                "set the server's http(s) address as base_url in POSTSCHED_MASTODON"
            ) from exc
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent yet, so sending again cannot publish twice.
            raise TransientPublishError(
                f"POST to {where} timed out connecting after {settings.timeout_s:g} s"
            ) from exc
        except httpx.TimeoutException as exc:
            # The server may have made the status before the timeout.
            raise UnknownOutcomeError(
                f"POST to {where} was sent but got no response within {settings.timeout_s:g} s; "
                "the status may exist, so it is not sent again automatically. Check the "
                "account: a retry within one hour reuses the Idempotency-Key, so Mastodon "
                "returns the existing status instead of making a second one"
            ) from exc
        except httpx.ConnectError as exc:
            raise TransientPublishError(
                f"POST to {where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        except httpx.TransportError as exc:
            # Connected, so the request may have reached the server.
            raise UnknownOutcomeError(
                f"POST to {where} was sent but the connection failed ({type(exc).__name__}: {exc}); "
                "the status may exist, so it is not sent again automatically"
            ) from exc


def status_text(content: str, link: str | None) -> str:
    """Return the status text: ``content``, then ``link`` after a blank line.

    The link is left out when ``content`` already contains it as a URL.
    """
    if not link or link in find_urls(content):
        return content
    return f"{content}{LINK_SEPARATOR}{link}"


def counted_length(text: str) -> int:
    """Return the length of ``text`` as Mastodon counts it: each URL as 23 characters.

    NOTE: this approximates Mastodon's count from above, so it may reject a
    status that Mastodon would take. Mastodon counts grapheme clusters where
    this counts code points, and it counts only the user name of a remote
    mention such as ``@alice@example.org``. A URL that Mastodon does not
    recognize, such as one without a valid top-level domain, still counts as
    23 here and may get a 422 from the server.
    """
    urls = find_urls(text)
    return len(text) - sum(len(url) for url in urls) + URL_LENGTH * len(urls)


def find_urls(text: str) -> list[str]:
    """Return the http(s) URLs in ``text``, without trailing punctuation."""
    urls = []
    for match in URL_PATTERN.finditer(text):
        url = _trim_url(match.group())
        if url.partition("://")[2]:
            urls.append(url)
    return urls


def _trim_url(url: str) -> str:
    # A URL ends with a letter, a digit, one of URL_END_CHARACTERS or a ")"
    # that closes a "(" inside it, so a sentence's "." or "," stays outside.
    while url:
        last = url[-1]
        if last.isalnum() or last in URL_END_CHARACTERS:
            break
        if last == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url


def encode_body(where: str, post: Post, visibility: str) -> bytes:
    """Serialize the JSON body of the request for ``post``, as UTF-8."""
    payload = {"status": status_text(post.content, post.link), "visibility": visibility}
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise PermanentPublishError(
            f"cannot post {post.id} to {where}: the text contains {bad!r}, "
            "which is not valid Unicode text; edit the post to remove it"
        ) from exc


def rate_limit_delay_s(headers: httpx.Headers) -> float | None:
    """Return the seconds to wait after a 429, or None when the server gave none.

    ``Retry-After`` comes first. Otherwise the time in ``X-RateLimit-Reset``
    is used: an ISO 8601 timestamp such as ``2020-09-08T13:25:00.019685Z``,
    as Mastodon servers send it, or an HTTP date.
    """
    delay = retry_after_s(headers.get("Retry-After"))
    if delay is not None:
        return delay
    reset = headers.get(RATE_LIMIT_RESET_HEADER, "").strip()
    if not reset or reset.isdigit():
        return None
    try:
        moment = datetime.fromisoformat(reset)
    except ValueError:
        return retry_after_s(reset)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def _raise_for_status(
    where: str, settings: MastodonSettings, response: httpx.Response
) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{where} responded with {status} {response.reason_phrase}: {_error_text(response)}"
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        raise RateLimitedError(message, rate_limit_delay_s(response.headers))
    if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
        raise TransientPublishError(message)
    if status in AUTH_STATUSES:
        raise PermanentPublishError(
            f"{message}; the server rejected the access token in {settings.token_env}, "
            f"so set {settings.token_env} to a valid token of the account "
            "with the write:statuses scope"
        )
    if 300 <= status < 400:
        location = display_url(response.headers.get("Location", ""))
        raise PermanentPublishError(
            f"{message}; redirects are not followed, so set base_url in POSTSCHED_MASTODON "
            f"to the server's final address ({location or 'see the Location header'})"
        )
    raise PermanentPublishError(message)


def _status_result(
    where: str, published_at: datetime, response: httpx.Response
) -> PublishResult:
    payload = _json_object(response)
    status_id = payload.get("id")
    if not isinstance(status_id, str | int) or isinstance(status_id, bool):
        # A proxy in front of the server may have responded, so the status may
        # or may not exist.
        raise UnknownOutcomeError(
            f"{where} responded with {response.status_code} but no status id "
            f"({_error_text(response)}); check the account for the status"
        )
    url = payload.get("url")
    return PublishResult(
        published_at,
        external_id=str(status_id),
        url=url if isinstance(url, str) else None,
    )


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_text(response: httpx.Response) -> str:
    """Return the ``error`` field of a Mastodon error body, else a short excerpt of the body."""
    error = _json_object(response).get("error")
    if isinstance(error, str):
        return repr(error)
    text = " ".join(response.text.split())
    if not text:
        return "(empty body)"
    if len(text) <= MAX_ERROR_EXCERPT:
        return repr(text)
    return f"{text[:MAX_ERROR_EXCERPT]!r}... ({len(text)} chars)"
