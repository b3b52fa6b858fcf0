"""The Mastodon publisher, against a local server that follows the Mastodon API."""

from __future__ import annotations

import html
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from scheduler.config import MastodonSettings, Settings, load_settings
from scheduler.errors import (
    ConfigError,
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.model import Post, new_post
from scheduler.publishers import Publishers
from scheduler.publishers.mastodon import (
    MastodonPublisher,
    counted_length,
    find_urls,
    status_text,
)

TOKEN = "tok-9f8e7d6c5b4a-for-tests"
TOKEN_ENV = "POSTSCHED_TEST_MASTODON_TOKEN"
DUE_AT = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LINK = "https://example.org/events/2026/winter-market"
SLOW_TIMEOUT_S = 0.3
SLOW_DELAY_S = 5.0
STATUSES_PATH = "/api/v1/statuses"
FIRST_STATUS_ID = 110_000_000_000_000_001
TOO_LONG_ERROR = "Validation failed: Text character limit of 500 exceeded"
# A URL of exactly 60 characters, counted as 23 by Mastodon.
URL_60 = "https://example.org/" + "a" * 40


def make_post(
    content: str = "Doors open at 9.",
    link: str | None = LINK,
    post_id: str = "p1",
    target: str = "mastodon:main",
) -> Post:
    return Post(
        id=post_id,
        target=target,
        content=content,
        due_at=DUE_AT,
        timezone="Europe/Berlin",
        link=link,
    )


@dataclass
class Received:
    """One request that reached the fake server."""

    path: str
    headers: dict[str, str]
    params: dict[str, str]


@dataclass
class FakeMastodon:
    """State of the fake server: statuses, received requests and the failures a test sets.

    Like Mastodon, it checks the bearer token, and a request whose
    Idempotency-Key it has seen returns the status made the first time.
    ``fail_status`` makes it respond to every authorized request with that status,
    ``fail_body`` and ``fail_headers``. ``delay_s`` makes it store the status
    and then wait that long before it responds.
    """

    base_url: str
    token: str = TOKEN
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids_by_key: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    fail_status: int | None = None
    fail_body: dict[str, Any] = field(default_factory=dict)
    fail_headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self, key: str | None, params: dict[str, str]) -> dict[str, Any]:
        """Return the status of ``key`` when it has one, else store a new status."""
        with self.lock:
            if key is not None and key in self.ids_by_key:
                return self.statuses[self.ids_by_key[key]]
            status_id = str(FIRST_STATUS_ID + len(self.statuses))
            status = {
                "id": status_id,
                "url": f"{self.base_url}/@main/{status_id}",
                "content": f"<p>{html.escape(params['status'])}</p>",
                "visibility": params.get("visibility", "public"),
            }
            self.statuses[status_id] = status
            if key is not None:
                self.ids_by_key[key] = status_id
            return status


def make_handler(box: list[FakeMastodon]) -> type[BaseHTTPRequestHandler]:
    """Return a handler class that serves the fake server put in ``box``.

    The box is filled after the server starts, because the base URL needs its port.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server = box[0]
            length = int(self.headers.get("Content-Length", "0"))
            params = parse_params(
                self.headers.get("Content-Type", ""), self.rfile.read(length)
            )
            headers = {name.lower(): value for name, value in self.headers.items()}
            server.requests.append(Received(self.path, headers, params))

            if self.path != STATUSES_PATH:
                self.answer(404, {"error": "Record not found"})
                return
            if headers.get("authorization") != f"Bearer {server.token}":
                self.answer(401, {"error": "The access token is invalid"})
                return
            if server.fail_status is not None:
                self.answer(server.fail_status, server.fail_body, server.fail_headers)
                return
            if not params.get("status", "").strip():
                self.answer(422, {"error": "Validation failed: Text can't be blank"})
                return

            status = server.store(headers.get("idempotency-key"), params)
            if server.delay_s and server.release.wait(server.delay_s):
                return
            self.answer(200, status)

        def answer(
            self,
            status: int,
            payload: dict[str, Any],
            extra_headers: dict[str, str] | None = None,
        ) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def parse_params(content_type: str, body: bytes) -> dict[str, str]:
    """Return the parameters of a JSON or form-encoded request body."""
    if content_type.startswith("application/json"):
        payload = json.loads(body)
        return {name: str(value) for name, value in payload.items()}
    form = parse_qs(body.decode("utf-8"))
    return {name: values[0] for name, values in form.items()}


@pytest.fixture
def server() -> Iterator[FakeMastodon]:
    box: list[FakeMastodon] = []
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(box))
    box.append(
        FakeMastodon(base_url=f"http://127.0.0.1:{http_server.server_address[1]}")
    )
    thread = threading.Thread(
        target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield box[0]
    box[0].release.set()
    http_server.shutdown()
    http_server.server_close()
    thread.join(timeout=5)


def make_publisher(base_url: str, timeout_s: float = 5.0) -> MastodonPublisher:
    settings = MastodonSettings(
        base_url=base_url,
        token_env=TOKEN_ENV,
        visibility="unlisted",
        timeout_s=timeout_s,
    )
    return MastodonPublisher({"main": settings})


@pytest.fixture
def publisher(
    server: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MastodonPublisher]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    mastodon = make_publisher(server.base_url)
    yield mastodon
    mastodon.close()


# Publishing


def test_publish_returns_status_id(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    result = publisher.publish(make_post())

    assert result.external_id == str(FIRST_STATUS_ID)


def test_publish_returns_status_url(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    result = publisher.publish(make_post())

    assert result.url == f"{server.base_url}/@main/{FIRST_STATUS_ID}"


def test_publish_published_at_before_send(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)

    result = publisher.publish(make_post())

    assert result.published_at.tzinfo is UTC
    assert result.published_at >= before


def test_publish_sends_bearer_token(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    publisher.publish(make_post())

    [request] = server.requests
    assert request.path == STATUSES_PATH
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_publish_sends_idempotency_key(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    publisher.publish(make_post(post_id="abc123"))

    assert server.requests[0].headers["idempotency-key"] == "postsched-abc123"


def test_publish_appends_link_after_blank_line(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    publisher.publish(make_post(content="Winter market, Grüße!"))

    params = server.requests[0].params
    assert params["status"] == f"Winter market, Grüße!\n\n{LINK}"
    assert params["visibility"] == "unlisted"


def test_publish_without_link_sends_content(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    publisher.publish(make_post(content="No link today.", link=None))

    assert server.requests[0].params["status"] == "No link today."


def test_publish_link_in_text_not_repeated(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    content = f"Details: {LINK}."

    publisher.publish(make_post(content=content))

    assert server.requests[0].params["status"] == content


def test_replay_returns_same_status(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    first = publisher.publish(make_post())
    second = publisher.publish(make_post())

    assert second.external_id == first.external_id
    assert len(server.requests) == 2
    assert len(server.statuses) == 1


def test_other_post_makes_new_status(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    first = publisher.publish(make_post(post_id="p1"))
    second = publisher.publish(make_post(post_id="p2"))

    assert second.external_id != first.external_id
    assert len(server.statuses) == 2


def test_slow_response_is_unknown_outcome(
    server: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server.delay_s = SLOW_DELAY_S
    publisher = make_publisher(server.base_url, timeout_s=SLOW_TIMEOUT_S)

    try:
        with pytest.raises(UnknownOutcomeError) as caught:
            publisher.publish(make_post())
    finally:
        publisher.close()

    assert "got no response within 0.3 s" in str(caught.value)
    assert "Idempotency-Key" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(server.requests) == 1


def test_replay_after_slow_response_keeps_one_status(
    server: FakeMastodon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server.delay_s = SLOW_DELAY_S
    publisher = make_publisher(server.base_url, timeout_s=SLOW_TIMEOUT_S)

    try:
        with pytest.raises(UnknownOutcomeError):
            publisher.publish(make_post())
        server.delay_s = 0.0
        result = publisher.publish(make_post())
    finally:
        publisher.close()

    assert result.external_id == str(FIRST_STATUS_ID)
    assert len(server.statuses) == 1


def test_422_is_permanent_with_reason(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 422
    server.fail_body = {"error": TOO_LONG_ERROR}

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert "422" in str(caught.value)
    assert TOO_LONG_ERROR in str(caught.value)
    assert "'main'" in str(caught.value)
    assert server.base_url in str(caught.value)


@pytest.mark.parametrize("status", [400, 404, 409, 410])
def test_client_error_is_permanent(
    server: FakeMastodon, publisher: MastodonPublisher, status: int
) -> None:
    server.fail_status = status
    server.fail_body = {"error": "This action is not allowed"}

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert str(status) in str(caught.value)
    assert "This action is not allowed" in str(caught.value)


def test_error_without_json_shows_body(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 400
    server.fail_body = {"message": "x" * 500}

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert "x" * 201 not in str(caught.value)
    assert "chars)" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_error_is_transient(
    server: FakeMastodon, publisher: MastodonPublisher, status: int
) -> None:
    server.fail_status = status
    server.fail_body = {"error": "Service temporarily unavailable"}

    with pytest.raises(TransientPublishError) as caught:
        publisher.publish(make_post())

    assert not isinstance(caught.value, RateLimitedError)
    assert str(status) in str(caught.value)
    assert "Service temporarily unavailable" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_429_uses_retry_after(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 429
    server.fail_body = {"error": "Too many requests"}
    server.fail_headers = {"Retry-After": "7"}

    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(make_post())

    assert caught.value.retry_after_s == 7.0
    assert "Too many requests" in str(caught.value)


def test_429_prefers_retry_after_to_reset(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    reset = datetime.now(UTC) + timedelta(minutes=5)
    server.fail_status = 429
    server.fail_headers = {
        "Retry-After": "7",
        "X-RateLimit-Reset": reset.isoformat().replace("+00:00", "Z"),
    }

    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(make_post())

    assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize(
    "format_reset",
    [
        lambda moment: moment.isoformat().replace("+00:00", "Z"),
        lambda moment: format_datetime(moment, usegmt=True),
    ],
    ids=["iso8601", "http-date"],
)
def test_429_uses_rate_limit_reset(
    server: FakeMastodon,
    publisher: MastodonPublisher,
    format_reset: Callable[[datetime], str],
) -> None:
    reset = datetime.now(UTC) + timedelta(seconds=30)
    server.fail_status = 429
    server.fail_headers = {"X-RateLimit-Reset": format_reset(reset)}

    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(make_post())

    assert caught.value.retry_after_s is not None
    assert 28 <= caught.value.retry_after_s <= 30


def test_429_past_reset_waits_zero(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 429
    server.fail_headers = {"X-RateLimit-Reset": "2020-09-08T13:25:00.019685Z"}

    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(make_post())

    assert caught.value.retry_after_s == 0.0


@pytest.mark.parametrize("headers", [{}, {"X-RateLimit-Reset": "soon"}])
def test_429_without_delay(
    server: FakeMastodon, publisher: MastodonPublisher, headers: dict[str, str]
) -> None:
    server.fail_status = 429
    server.fail_headers = headers

    with pytest.raises(RateLimitedError) as caught:
        publisher.publish(make_post())

    assert caught.value.retry_after_s is None


def test_bad_token_is_permanent(
    server: FakeMastodon, publisher: MastodonPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_token = "wrong-token-0a1b2c3d"
    monkeypatch.setenv(TOKEN_ENV, wrong_token)

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert "401" in str(caught.value)
    assert TOKEN_ENV in str(caught.value)
    assert "The access token is invalid" in str(caught.value)
    assert wrong_token not in str(caught.value)
    assert len(server.statuses) == 0


def test_forbidden_is_permanent(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 403
    server.fail_body = {"error": "This action is outside the authorized scopes"}

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert "403" in str(caught.value)
    assert f"the access token in {TOKEN_ENV}" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_redirect_is_permanent(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 301
    server.fail_headers = {"Location": "https://social.example.org/api/v1/statuses"}

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post())

    assert "https://social.example.org/api/v1/statuses" in str(caught.value)
    assert len(server.requests) == 1


def test_success_without_id_is_unknown_outcome(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    server.fail_status = 200
    server.fail_body = {"ok": True}

    with pytest.raises(UnknownOutcomeError) as caught:
        publisher.publish(make_post())

    assert "no status id" in str(caught.value)


def test_connection_refused_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    publisher = make_publisher(f"http://127.0.0.1:{port}")

    try:
        with pytest.raises(TransientPublishError) as caught:
            publisher.publish(make_post())
    finally:
        publisher.close()

    assert f"127.0.0.1:{port}" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_lone_surrogate_is_permanent(
    server: FakeMastodon, publisher: MastodonPublisher
) -> None:
    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post(content="broken \ud800 text"))

    assert "'\\ud800'" in str(caught.value)
    assert server.requests == []


# Accounts and tokens


def test_unconfigured_account_rejected(publisher: MastodonPublisher) -> None:
    with pytest.raises(ValidationError) as caught:
        publisher.check_account("news")

    assert caught.value.field == "target"
    assert caught.value.value == "mastodon:news"
    assert "configured accounts: main" in caught.value.reason
    assert "POSTSCHED_MASTODON" in caught.value.fix


def test_no_accounts_configured() -> None:
    publisher = MastodonPublisher({})

    with pytest.raises(ValidationError) as caught:
        publisher.check_account("main")
    publisher.close()

    assert "configured accounts: none" in caught.value.reason


@pytest.mark.parametrize("value", [None, "", "  \n"])
def test_missing_token_rejected(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(TOKEN_ENV, raising=False)
    else:
        monkeypatch.setenv(TOKEN_ENV, value)
    publisher = make_publisher("https://social.example.org")

    with pytest.raises(ValidationError) as caught:
        publisher.check_account("main")
    publisher.close()

    assert caught.value.value == "mastodon:main"
    assert TOKEN_ENV in caught.value.reason
    assert caught.value.fix.startswith(f"set {TOKEN_ENV} ")


def test_missing_token_stops_publish(
    server: FakeMastodon, publisher: MastodonPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)

    with pytest.raises(ValidationError):
        publisher.publish(make_post())

    assert server.requests == []


def test_token_set_passes_check(publisher: MastodonPublisher) -> None:
    publisher.check_account("main")


def test_max_length_is_500(publisher: MastodonPublisher) -> None:
    assert publisher.max_length("main") == 500


# Settings


def test_settings_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "POSTSCHED_MASTODON",
        json.dumps(
            {
                "main": {
                    "base_url": "https://social.example.org/",
                    "token_env": "MASTODON_MAIN_TOKEN",
                    "visibility": "private",
                }
            }
        ),
    )

    account = Settings(data_dir=tmp_path).mastodon["main"]

    assert account.base_url == "https://social.example.org"
    assert account.token_env == "MASTODON_MAIN_TOKEN"
    assert account.visibility == "private"
    assert account.timeout_s == 10.0


def test_settings_default_visibility() -> None:
    account = MastodonSettings(
        base_url="https://social.example.org", token_env="MASTODON_MAIN_TOKEN"
    )

    assert account.visibility == "public"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"visibility": "everyone"}, "'public', 'unlisted', 'private' or 'direct'"),
        ({"base_url": "social.example.org"}, "http(s) address"),
        ({"base_url": "ftp://social.example.org"}, "http(s) address"),
        ({"token_env": "tok-9f8e7d6c5b4a"}, "not the token itself"),
        ({"token_env": ""}, "not the token itself"),
        ({"timeout_s": 0}, "greater than 0"),
    ],
)
def test_settings_reject_invalid(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, object],
    problem: str,
) -> None:
    account = {
        "base_url": "https://social.example.org",
        "token_env": "MASTODON_MAIN_TOKEN",
        **fields,
    }
    monkeypatch.setenv("POSTSCHED_MASTODON", json.dumps({"main": account}))

    with pytest.raises(ConfigError) as caught:
        load_settings(data_dir=tmp_path)

    assert "POSTSCHED_MASTODON_MAIN" in str(caught.value)
    assert problem in str(caught.value)


# Length as Mastodon counts it


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", 10),
        (URL_60, 23),
        ("http://example.org", 23),
        (f"see {URL_60}", 27),
        (f"see {URL_60}.", 28),
        (f"({URL_60})", 25),
        ("https://en.example.org/wiki/Bar_(place)", 23),
        (f"{URL_60} and {URL_60}", 51),
        (f"HTTPS://{URL_60.removeprefix('https://')}", 23),
        (f"x{URL_60}", 61),
        ("https:// alone", 14),
    ],
)
def test_counted_length(text: str, expected: int) -> None:
    assert counted_length(text) == expected


def test_find_urls_drops_trailing_punctuation() -> None:
    assert find_urls(f"Read {LINK}, then {URL_60}!") == [LINK, URL_60]


def test_status_text_with_link() -> None:
    assert status_text("Hello", LINK) == f"Hello\n\n{LINK}"


def test_counted_length_with_link(publisher: MastodonPublisher) -> None:
    # The text, the blank line before the link and the link as 23.
    assert publisher.counted_length("a" * 470, URL_60) == 470 + 2 + 23


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Publishers]:
    """Publishers with the Mastodon account ``main``, its token set."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    account = MastodonSettings(
        base_url="https://social.example.org", token_env=TOKEN_ENV
    )
    publishers = Publishers(Settings(data_dir=tmp_path, mastodon={"main": account}))
    yield publishers
    publishers.close()


def schedule(
    rules: Publishers,
    content: str,
    link: str | None = None,
    target: str = "mastodon:main",
) -> Post:
    return new_post(
        target=target,
        content=content,
        link=link,
        due_at="2026-12-24T18:00:00Z",
        rules=rules,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("content", "link"),
    [
        ("a" * 470, URL_60),
        ("a" * 475, URL_60),
        ("a" * 476 + " " + URL_60, None),
        ("a" * 300 + " " + "https://example.org/" + "b" * 300, None),
        ("a" * 500, None),
    ],
    ids=["470-and-link", "475-and-link", "476-and-url", "long-url", "500"],
)
def test_new_post_within_counted_limit(
    rules: Publishers, content: str, link: str | None
) -> None:
    post = schedule(rules, content, link)

    assert post.content == content


@pytest.mark.parametrize(
    ("content", "link", "counted"),
    [
        ("a" * 480, URL_60, 505),
        ("a" * 476, URL_60, 501),
        ("a" * 477 + " " + URL_60, None, 501),
    ],
    ids=["480-and-link", "476-and-link", "477-and-url"],
)
def test_new_post_over_counted_limit(
    rules: Publishers, content: str, link: str | None, counted: int
) -> None:
    with pytest.raises(ValidationError) as caught:
        schedule(rules, content, link)

    assert caught.value.field == "content"
    assert f"{counted} characters as mastodon:main counts them" in caught.value.reason
    assert "over the limit of 500" in caught.value.reason
    assert caught.value.fix == f"shorten it by {counted - 500} or more characters"


def test_new_post_over_limit_without_urls(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as caught:
        schedule(rules, "a" * 501)

    assert (
        caught.value.reason == "501 characters, over the limit of 500 for mastodon:main"
    )


def test_new_post_unconfigured_account(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as caught:
        schedule(rules, "Hello", target="mastodon:news")

    assert caught.value.field == "target"
    assert "'news' is not configured" in caught.value.reason
    assert "POSTSCHED_MASTODON" in caught.value.fix


def test_new_post_missing_token(
    rules: Publishers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)

    with pytest.raises(ValidationError) as caught:
        schedule(rules, "Hello")

    assert caught.value.field == "target"
    assert TOKEN_ENV in caught.value.fix


def test_outbox_length_ignores_link(rules: Publishers) -> None:
    content = f"see {URL_60}"

    assert rules.content_length("outbox:main", content, LINK) == len(content)


def test_mastodon_length_counts_link(rules: Publishers) -> None:
    assert rules.content_length("mastodon:main", "Hello", LINK) == 5 + 2 + 23


def test_registry_lists_mastodon(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as caught:
        rules.check_target("bluesky:main")

    assert "mastodon" in caught.value.fix
