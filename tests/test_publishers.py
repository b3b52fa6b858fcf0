"""The outbox, no-op and webhook publishers, on real files and a local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from scheduler.config import WebhookSettings
from scheduler.errors import (
    PermanentPublishError,
    RateLimitedError,
    TransientPublishError,
    UnknownOutcomeError,
    ValidationError,
)
from scheduler.model import Post, utc_now
from scheduler.publishers.noop import NoopPublisher
from scheduler.publishers.outbox import OutboxPublisher, read_outbox
from scheduler.publishers.webhook import WebhookPublisher, display_url, retry_after_s

DUE_AT = datetime(2026, 12, 7, 8, 0, 0, 250_000, tzinfo=UTC)
SECRET = "s3cret-for-tests"
PROCESSES = 4
LINES_PER_PROCESS = 200
JOIN_TIMEOUT_S = 60
SLOW_TIMEOUT_S = 0.3
SLOW_DELAY_S = 5.0


def make_post(
    target: str = "outbox:main", content: str = "Doors open at 9.", post_id: str = "p1"
) -> Post:
    return Post(
        id=post_id,
        target=target,
        content=content,
        due_at=DUE_AT,
        timezone="Europe/Berlin",
        link="https://example.org/event",
    )


# Outbox


def test_outbox_line_content(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path / "outbox")
    post = make_post(content='Line one\nline two, "quoted", Grüße')

    result = publisher.publish(post)

    [line] = read_outbox(tmp_path / "outbox" / "main.jsonl")
    assert line["post_id"] == "p1"
    assert line["idempotency_key"] == "postsched-p1"
    assert line["target"] == "outbox:main"
    assert line["content"] == 'Line one\nline two, "quoted", Grüße'
    assert line["link"] == "https://example.org/event"
    assert line["due_at"] == "2026-12-07T08:00:00.250+00:00"
    assert datetime.fromisoformat(line["published_at"]) == result.published_at
    assert result.external_id == "main:0"


def test_outbox_published_at_format(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path)

    publisher.publish(make_post())

    [line] = read_outbox(tmp_path / "main.jsonl")
    assert line["published_at"].endswith("+00:00")
    assert len(line["published_at"]) == len("2026-12-07T08:00:00.250+00:00")


def test_outbox_creates_folder(tmp_path: Path) -> None:
    outbox_dir = tmp_path / "a" / "b" / "outbox"
    publisher = OutboxPublisher(outbox_dir)

    publisher.publish(make_post())

    assert (outbox_dir / "main.jsonl").is_file()


def test_outbox_external_id_is_offset(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path)
    path = tmp_path / "main.jsonl"

    publisher.publish(make_post(post_id="first"))
    size_after_first = path.stat().st_size
    second = publisher.publish(make_post(post_id="second"))

    assert second.external_id == f"main:{size_after_first}"
    with path.open("rb") as file:
        file.seek(size_after_first)
        assert json.loads(file.readline())["post_id"] == "second"


def test_outbox_file_per_account(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path)

    publisher.publish(make_post(target="outbox:news", post_id="n1"))
    publisher.publish(make_post(target="outbox:main", post_id="m1"))

    assert [line["post_id"] for line in read_outbox(tmp_path / "news.jsonl")] == ["n1"]
    assert [line["post_id"] for line in read_outbox(tmp_path / "main.jsonl")] == ["m1"]


@pytest.mark.parametrize(
    "account",
    ["../x", "..", ".hidden", "a/b", "", "a" * 65, "main\n", "-dash", "sp ace", "ü"],
)
def test_outbox_rejects_account(tmp_path: Path, account: str) -> None:
    publisher = OutboxPublisher(tmp_path)

    with pytest.raises(ValidationError) as caught:
        publisher.check_account(account)

    assert caught.value.field == "target"
    assert caught.value.value == f"outbox:{account}"
    assert "letters, digits" in caught.value.fix


def test_outbox_publish_rejects_account(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path / "outbox")

    with pytest.raises(ValidationError):
        publisher.publish(make_post(target="outbox:../escape"))

    assert not (tmp_path / "escape.jsonl").exists()


@pytest.mark.parametrize("account", ["main", "a", "a" * 64, "team.news-2026_b", "0day"])
def test_outbox_accepts_account(tmp_path: Path, account: str) -> None:
    publisher = OutboxPublisher(tmp_path)

    publisher.check_account(account)

    assert publisher.path_for(account) == tmp_path / f"{account}.jsonl"


def test_outbox_max_length(tmp_path: Path) -> None:
    assert OutboxPublisher(tmp_path).max_length("main") == 10_000


def test_outbox_folder_blocked_is_transient(tmp_path: Path) -> None:
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the folder should be")
    publisher = OutboxPublisher(blocked)

    with pytest.raises(TransientPublishError) as caught:
        publisher.publish(make_post())

    assert str(blocked / "main.jsonl") in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


def test_outbox_file_unwritable_is_transient(tmp_path: Path) -> None:
    (tmp_path / "main.jsonl").mkdir()
    publisher = OutboxPublisher(tmp_path)

    with pytest.raises(TransientPublishError) as caught:
        publisher.publish(make_post())

    assert "main.jsonl" in str(caught.value)
    assert isinstance(caught.value.__cause__, IsADirectoryError)


def test_outbox_lone_surrogate_is_permanent(tmp_path: Path) -> None:
    publisher = OutboxPublisher(tmp_path)

    with pytest.raises(PermanentPublishError) as caught:
        publisher.publish(make_post(content="broken \ud800 text"))

    assert "'\\ud800'" in str(caught.value)
    assert read_outbox(tmp_path / "main.jsonl") == []


def test_read_outbox_missing_file(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "nothing.jsonl") == []


def append_many(outbox_dir: str, worker: int, barrier: Barrier) -> None:
    """Publish LINES_PER_PROCESS posts and record their external ids."""
    publisher = OutboxPublisher(Path(outbox_dir))
    barrier.wait()
    ids = {}
    for index in range(LINES_PER_PROCESS):
        post = make_post(
            post_id=f"w{worker}-{index}", content=f"worker {worker} line {index} " * 5
        )
        ids[post.id] = publisher.publish(post).external_id
    (Path(outbox_dir) / f"ids-{worker}.json").write_text(json.dumps(ids))


def test_outbox_concurrent_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    processes = [
        context.Process(target=append_many, args=(str(tmp_path), worker, barrier))
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=JOIN_TIMEOUT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    assert [process.exitcode for process in processes] == [0] * PROCESSES
    path = tmp_path / "main.jsonl"
    lines = read_outbox(path)
    assert len(lines) == PROCESSES * LINES_PER_PROCESS
    assert len({line["post_id"] for line in lines}) == PROCESSES * LINES_PER_PROCESS
    data = path.read_bytes()
    for worker in range(PROCESSES):
        ids = json.loads((tmp_path / f"ids-{worker}.json").read_text())
        for post_id, external_id in ids.items():
            offset = int(external_id.removeprefix("main:"))
            line_end = data.index(b"\n", offset)
            assert json.loads(data[offset:line_end])["post_id"] == post_id


# No-op


def test_noop_publish_returns_at_once() -> None:
    publisher = NoopPublisher()
    before = utc_now()

    result = publisher.publish(make_post(target="noop:dry-run"))

    assert before <= result.published_at <= utc_now()
    assert result.external_id == "noop:p1"


def test_noop_rejects_account() -> None:
    with pytest.raises(ValidationError) as caught:
        NoopPublisher().check_account("a/b")

    assert caught.value.value == "noop:a/b"
    assert "noop:dry-run" in caught.value.fix


def test_noop_find_has_nothing() -> None:
    assert NoopPublisher().find(make_post(target="noop:dry-run")) is None


# Webhook


@dataclass
class Received:
    """One request that reached the test receiver."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Response the test sets for the local HTTP server, and the requests received."""

    url: str
    status: int = 200
    body: bytes = b'{"id": "ext-42"}'
    content_type: str = "application/json"
    delay_s: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def make_handler(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    """Return a handler class that serves the receiver put in ``receiver_box``.

    The box is filled after the server starts, because the URL needs its port.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_box[0]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.requests.append(Received(self.path, headers, body))
            if receiver.delay_s and receiver.release.wait(receiver.delay_s):
                return
            self.send_response(receiver.status)
            self.send_header("Content-Type", receiver.content_type)
            self.send_header("Content-Length", str(len(receiver.body)))
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(receiver.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(box))
    box.append(
        Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts")
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield box[0]
    box[0].release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def make_webhook(
    url: str, secret: str | None = SECRET, timeout_s: float = 5.0
) -> WebhookPublisher:
    settings = WebhookSettings(
        url=url, secret=secret, timeout_s=timeout_s, max_length=500
    )
    return WebhookPublisher({"alerts": settings})


@pytest.fixture
def webhook(receiver: Receiver) -> Iterator[WebhookPublisher]:
    publisher = make_webhook(receiver.url)
    yield publisher
    publisher.close()


def test_webhook_sends_json(receiver: Receiver, webhook: WebhookPublisher) -> None:
    webhook.publish(make_post(target="webhook:alerts"))

    [request] = receiver.requests
    payload = json.loads(request.body)
    assert request.path == "/hooks/alerts"
    assert payload == {
        "post_id": "p1",
        "target": "webhook:alerts",
        "content": "Doors open at 9.",
        "link": "https://example.org/event",
        "due_at": "2026-12-07T08:00:00.250+00:00",
    }
    assert request.headers["content-type"] == "application/json"


def test_webhook_idempotency_key(receiver: Receiver, webhook: WebhookPublisher) -> None:
    webhook.publish(make_post(target="webhook:alerts"))

    assert receiver.requests[0].headers["idempotency-key"] == "postsched-p1"


def test_webhook_signature_verifies(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    webhook.publish(
        make_post(target="webhook:alerts", content='Grüße, "quoted" and \n')
    )

    [request] = receiver.requests
    expected = (
        "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(expected, request.headers["x-postsched-signature"])


def test_webhook_body_is_compact(receiver: Receiver, webhook: WebhookPublisher) -> None:
    webhook.publish(make_post(target="webhook:alerts"))

    body = receiver.requests[0].body
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()


def test_webhook_without_secret_unsigned(receiver: Receiver) -> None:
    publisher = make_webhook(receiver.url, secret=None)
    try:
        publisher.publish(make_post(target="webhook:alerts"))
    finally:
        publisher.close()

    assert "x-postsched-signature" not in receiver.requests[0].headers


def test_webhook_external_id(receiver: Receiver, webhook: WebhookPublisher) -> None:
    result = webhook.publish(make_post(target="webhook:alerts"))

    assert result.external_id == "ext-42"


def test_webhook_numeric_external_id(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    receiver.body = b'{"id": 1234}'

    result = webhook.publish(make_post(target="webhook:alerts"))

    assert result.external_id == "1234"


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b"ok", "text/plain"),
        (201, b'{"status": "queued"}', "application/json"),
        (200, b"[1, 2]", "application/json"),
        (204, b"", "text/plain"),
    ],
)
def test_webhook_without_external_id(
    receiver: Receiver,
    webhook: WebhookPublisher,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    receiver.status, receiver.body, receiver.content_type = status, body, content_type

    result = webhook.publish(make_post(target="webhook:alerts"))

    assert result.external_id is None


def test_webhook_published_at_is_utc(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    before = utc_now()

    result = webhook.publish(make_post(target="webhook:alerts"))

    assert result.published_at.tzinfo is UTC
    assert result.published_at >= before


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_webhook_retryable_status_is_transient(
    receiver: Receiver, webhook: WebhookPublisher, status: int
) -> None:
    receiver.status, receiver.body = status, b"try later"

    with pytest.raises(TransientPublishError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert str(status) in str(caught.value)
    assert "'alerts'" in str(caught.value)
    assert receiver.url in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_webhook_client_error_is_permanent(
    receiver: Receiver, webhook: WebhookPublisher, status: int
) -> None:
    receiver.status = status
    receiver.body = b'{"error": "content rejected: contains a banned word"}'

    with pytest.raises(PermanentPublishError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert str(status) in str(caught.value)
    assert "content rejected" in str(caught.value)
    assert "'alerts'" in str(caught.value)
    assert receiver.url in str(caught.value)


def test_webhook_long_error_body_shortened(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    receiver.status, receiver.body = 400, b"x" * 5000

    with pytest.raises(PermanentPublishError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert "x" * 201 not in str(caught.value)
    assert "5000 chars" in str(caught.value)


def test_webhook_redirect_is_permanent(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    receiver.status = 301
    receiver.extra_headers = {"Location": "https://example.org/new-hook"}

    with pytest.raises(PermanentPublishError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert "https://example.org/new-hook" in str(caught.value)
    assert len(receiver.requests) == 1


def test_webhook_message_hides_secret(
    receiver: Receiver, webhook: WebhookPublisher
) -> None:
    receiver.status, receiver.body = 401, b"bad signature"

    with pytest.raises(PermanentPublishError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert SECRET not in str(caught.value)


def test_webhook_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    publisher = make_webhook(f"http://127.0.0.1:{port}/hook")

    try:
        with pytest.raises(TransientPublishError) as caught:
            publisher.publish(make_post(target="webhook:alerts"))
    finally:
        publisher.close()

    assert f"127.0.0.1:{port}" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_webhook_slow_response_is_unknown_outcome(receiver: Receiver) -> None:
    receiver.delay_s = SLOW_DELAY_S
    publisher = make_webhook(receiver.url, timeout_s=SLOW_TIMEOUT_S)

    try:
        with pytest.raises(UnknownOutcomeError) as caught:
            publisher.publish(make_post(target="webhook:alerts"))
    finally:
        publisher.close()

    assert "got no answer within 0.3 s" in str(caught.value)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("header", "expected_s"), [("2", 2.0), ("0", 0.0), (None, None), ("soon", None)]
)
def test_webhook_429_carries_retry_after(
    receiver: Receiver,
    webhook: WebhookPublisher,
    header: str | None,
    expected_s: float | None,
) -> None:
    receiver.status = 429
    if header is not None:
        receiver.extra_headers = {"Retry-After": header}

    with pytest.raises(RateLimitedError) as caught:
        webhook.publish(make_post(target="webhook:alerts"))

    assert caught.value.retry_after_s == expected_s


def test_retry_after_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    header = format_datetime(later, usegmt=True)
    seconds = retry_after_s(header)
    assert seconds is not None
    assert 28 <= seconds <= 30


def test_webhook_invalid_url_is_permanent() -> None:
    publisher = make_webhook("ftp://example.invalid/hook")

    try:
        with pytest.raises(PermanentPublishError) as caught:
            publisher.publish(make_post(target="webhook:alerts"))
    finally:
        publisher.close()

    assert "invalid URL" in str(caught.value)


def test_webhook_unconfigured_account(webhook: WebhookPublisher) -> None:
    with pytest.raises(ValidationError) as caught:
        webhook.publish(make_post(target="webhook:sales"))

    assert caught.value.value == "webhook:sales"
    assert "configured accounts: alerts" in caught.value.reason
    assert "POSTSCHED_WEBHOOKS" in caught.value.fix


def test_webhook_no_accounts_configured() -> None:
    publisher = WebhookPublisher({})

    with pytest.raises(ValidationError) as caught:
        publisher.check_account("alerts")
    publisher.close()

    assert "configured accounts: none" in caught.value.reason


def test_webhook_max_length(webhook: WebhookPublisher) -> None:
    assert webhook.max_length("alerts") == 500


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.org/hooks/a", "https://example.org/hooks/a"),
        ("https://user:pw@example.org/hooks/a", "https://example.org/hooks/a"),
        ("https://example.org/hooks/a?token=abc", "https://example.org/hooks/a?..."),
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("http://[::1]:8080/hook", "http://[::1]:8080/hook"),
    ],
)
def test_display_url(url: str, shown: str) -> None:
    assert display_url(url) == shown
