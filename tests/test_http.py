"""The HTTP API through FastAPI's test client, on the test Redis, SQLite and a real worker."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from faults import free_port
from httpx import Response
from pydantic import SecretStr
from typer.testing import CliRunner

from scheduler.config import Settings
from scheduler.http import HttpSettings, create_http_app
from scheduler.http.docs import write_docs
from scheduler.http.server import EXIT_INVALID, cli
from scheduler.model import Post, utc_now
from scheduler.publishers.outbox import read_outbox
from scheduler.store.sql import SqlStore
from tasks.app import PostschedCelery

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
PUBLISH_TIMEOUT_S = 15.0


def open_client(
    settings: Settings, http_settings: HttpSettings | None = None
) -> TestClient:
    app = create_http_app(settings, http_settings or HttpSettings(token=None))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with open_client(settings) as opened:
        yield opened


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlStore]:
    sql = SqlStore(settings.resolved_store_url)
    yield sql
    sql.close()


def future(minutes: int = 30) -> str:
    return (utc_now() + timedelta(minutes=minutes)).isoformat()


def new_post(client: TestClient, **fields: Any) -> dict[str, Any]:
    payload = {"target": "outbox:main", "content": "Doors open", "due_at": future()}
    payload.update(fields)
    response = client.post("/posts", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is problem details with ``status`` and ``code``; return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == "about:blank"
    assert problem["title"]
    assert problem["detail"]
    assert problem["instance"] == response.request.url.path
    return problem


def stored(store: SqlStore) -> list[Post]:
    return store.list_posts(limit=None)


def test_created_post_is_published(
    client: TestClient,
    settings: Settings,
    celery_app: PostschedCelery,
    worker: object,
) -> None:
    response = client.post(
        "/posts",
        json={"target": "outbox:main", "content": "over HTTP", "publish_now": True},
    )
    assert response.status_code == 201, response.text
    post_id = response.json()["id"]
    assert response.headers["location"].endswith(f"/posts/{post_id}")
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    while (detail := client.get(f"/posts/{post_id}").json())["status"] != "published":
        assert time.monotonic() < deadline, f"post still {detail['status']}"
        time.sleep(0.05)
    assert [attempt["outcome"] for attempt in detail["history"]] == ["published"]
    lines = read_outbox(settings.resolved_outbox_dir / "main.jsonl")
    assert [line["post_id"] for line in lines] == [post_id]


def test_create_returns_post(client: TestClient) -> None:
    due_at = "2099-12-24T18:00:00+01:00"
    post = new_post(client, due_at=due_at, link="https://example.org/a")
    assert post["status"] == "scheduled"
    assert post["content"] == "Doors open"
    assert post["link"] == "https://example.org/a"
    assert datetime.fromisoformat(post["due_at"]) == datetime.fromisoformat(due_at)
    assert post["timezone"] == "UTC+01:00"


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"content": "hi", "due_at": "2030-01-01 10:00"}, "due_at", "no time zone"),
        ({"content": "hi", "due_at": "2001-01-01T10:00:00Z"}, "due_at", "in the past"),
        ({"content": " ", "publish_now": True}, "content", "empty"),
        ({"content": "hi"}, "due_at", "exactly one of due_at and publish_now"),
        ({"content": "hi", "publish_now": True, "colour": "red"}, "colour", "Extra"),
        ({"publish_now": True}, "content", "Field required"),
        ({"content": 5, "publish_now": True}, "content", "valid string"),
    ],
)
def test_create_invalid_stores_nothing(
    client: TestClient,
    store: SqlStore,
    payload: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    response = client.post("/posts", json={"target": "outbox:main", **payload})
    problem = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == [field]
    assert reason in problem["errors"][0]["reason"]
    assert problem["errors"][0]["fix"]
    assert stored(store) == []


def test_create_unknown_target_rejected(client: TestClient, store: SqlStore) -> None:
    response = client.post(
        "/posts", json={"target": "nowhere:x", "content": "hi", "publish_now": True}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["value"] == "nowhere:x"
    assert stored(store) == []


def test_malformed_json_rejected(client: TestClient, store: SqlStore) -> None:
    response = client.post(
        "/posts", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert "JSON" in problem["detail"]
    assert stored(store) == []


def test_oversized_json_rejected(client: TestClient, store: SqlStore) -> None:
    content = "x" * (1024 * 1024 + 1)
    response = client.post(
        "/posts",
        json={"target": "outbox:main", "content": content, "publish_now": True},
    )
    assert_problem(response, 413, "content_too_large")
    assert stored(store) == []


def test_get_unknown_post_not_found(client: TestClient) -> None:
    response = client.get(f"/posts/{'0' * 32}")
    problem = assert_problem(response, 404, "not_found")
    assert "0" * 32 in problem["detail"]


def test_get_malformed_id_rejected(client: TestClient) -> None:
    problem = assert_problem(client.get("/posts/abc"), 422, "validation_error")
    assert problem["errors"][0]["field"] == "post_id"


def test_unknown_route_and_method(client: TestClient) -> None:
    problem = assert_problem(client.get("/nowhere"), 404, "http_error")
    assert "no endpoint at /nowhere" in problem["detail"]
    response = client.delete("/posts")
    problem = assert_problem(response, 405, "http_error")
    assert response.headers["allow"]
    assert "DELETE is not allowed on /posts" in problem["detail"]


def test_list_filters(client: TestClient) -> None:
    posts = [
        new_post(client, target=target, due_at=future(minutes))
        for minutes, target in [(10, "outbox:a"), (20, "outbox:b"), (30, "outbox:a")]
    ]
    client.post(f"/posts/{posts[2]['id']}/cancel")

    def listed(**params: str) -> list[str]:
        response = client.get("/posts", params=params)
        assert response.status_code == 200, response.text
        return [post["id"] for post in response.json()["posts"]]

    ids = [post["id"] for post in posts]
    assert listed() == ids
    assert listed(status="scheduled") == ids[:2]
    assert listed(status="cancelled") == ids[2:]
    assert listed(target="outbox:a") == [ids[0], ids[2]]
    assert listed(due_after=posts[1]["due_at"]) == ids[1:]
    assert listed(due_before=posts[1]["due_at"]) == ids[:1]


def test_list_pages_by_cursor(client: TestClient) -> None:
    ids = [new_post(client, due_at=future(minutes))["id"] for minutes in range(1, 6)]
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    pages = 0
    while True:
        page = client.get("/posts", params=params).json()
        seen += [post["id"] for post in page["posts"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"status": "done"}, "status"),
        ({"due_after": "2030-01-01T10:00:00"}, "due_after"),
        ({"due_after": "0.0"}, "due_after"),
        ({"due_before": "2030-13-01T10:00:00Z"}, "due_before"),
        ({"due_before": "9999-12-31T23:59:59-14:00"}, "due_before"),
        ({"due_after": "0001-01-01T00:00:00+14:00"}, "due_after"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"target": "outbox:\x00"}, "target"),
    ],
)
def test_list_invalid_query_rejected(
    client: TestClient, params: dict[str, str], field: str
) -> None:
    problem = assert_problem(
        client.get("/posts", params=params), 422, "validation_error"
    )
    assert [error["field"] for error in problem["errors"]] == [field]


def test_date_without_offset_gets_an_example(client: TestClient) -> None:
    problem = assert_problem(
        client.get("/posts", params={"due_after": "2026-12-07"}),
        422,
        "validation_error",
    )
    [error] = problem["errors"]
    assert error["value"] == "2026-12-07"
    assert error["reason"] == "not a date and time with a UTC offset"
    assert "'2026-12-07T09:00:00Z'" in error["fix"]
    assert "\\d{4}" not in problem["detail"]


@pytest.mark.parametrize("field", ["content", "link", "due_at", "timezone"])
def test_lone_surrogate_rejected_not_500(client: TestClient, field: str) -> None:
    payload = {"target": "outbox:main", "content": "Doors open", "due_at": future()}
    payload[field] = "a\ud800b"
    body = json.dumps(payload)  # escapes the surrogate as \ud800
    response = client.post(
        "/posts", content=body, headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == field
    assert problem["errors"][0]["value"] == "a\\ud800b"
    assert client.get("/posts").json()["posts"] == []


def test_cursor_with_surrogate_rejected(client: TestClient) -> None:
    raw = json.dumps(["2030-01-01T00:00:00+00:00", "\ud800"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    problem = assert_problem(
        client.get("/posts", params={"cursor": cursor}), 422, "validation_error"
    )
    assert problem["errors"][0]["field"] == "cursor"


def test_truncated_json_named(client: TestClient) -> None:
    response = client.post(
        "/posts",
        content=b'{"target":"outbox:main","content":"hi",',
        headers={"Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "validation_error")
    [error] = problem["errors"]
    assert error["field"] == "body"
    assert error["reason"].startswith("not valid JSON at character 39")
    assert error["fix"] == "send one complete JSON object"


def test_malformed_post_id_named(client: TestClient) -> None:
    problem = assert_problem(client.get("/posts/not-an-id"), 422, "validation_error")
    [error] = problem["errors"]
    assert error["field"] == "post_id"
    assert error["reason"] == "not a post id"
    assert "32 hex digit" in error["fix"]


def test_patch_content_and_due_at(client: TestClient) -> None:
    post = new_post(client)
    later = future(90)
    response = client.patch(
        f"/posts/{post['id']}", json={"content": "Doors open at 7", "due_at": later}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["content"] == "Doors open at 7"
    assert datetime.fromisoformat(updated["due_at"]) == datetime.fromisoformat(later)
    assert client.get(f"/posts/{post['id']}").json()["content"] == "Doors open at 7"


def test_patch_invalid_changes_nothing(client: TestClient, store: SqlStore) -> None:
    post = new_post(client)
    before = stored(store)
    response = client.patch(
        f"/posts/{post['id']}", json={"content": "new text", "due_at": "tomorrow"}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == "due_at"
    assert stored(store) == before


def test_patch_null_link_removes_it(client: TestClient) -> None:
    post = new_post(client, link="https://example.org/a")
    response = client.patch(f"/posts/{post['id']}", json={"link": None})
    assert response.status_code == 200, response.text
    assert response.json()["link"] is None


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"content": None}, "content", "null is not allowed"),
        ({}, "changes", "no change given"),
        ({"timezone": "Europe/Berlin", "content": "x"}, "timezone", "without due_at"),
        ({"status": "published"}, "status", "Extra"),
    ],
)
def test_patch_invalid_body_rejected(
    client: TestClient,
    store: SqlStore,
    payload: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    post = new_post(client)
    before = stored(store)
    response = client.patch(f"/posts/{post['id']}", json=payload)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == field
    assert reason in problem["errors"][0]["reason"]
    assert stored(store) == before


def test_cancel_then_change_conflicts(client: TestClient) -> None:
    post = new_post(client)
    response = client.post(f"/posts/{post['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    problem = assert_problem(
        client.post(f"/posts/{post['id']}/cancel"), 409, "invalid_state"
    )
    assert "it is cancelled" in problem["detail"]
    assert_problem(
        client.patch(f"/posts/{post['id']}", json={"content": "x"}),
        409,
        "invalid_state",
    )


def upload(client: TestClient, text: bytes, **fields: str) -> Response:
    return client.post(
        "/posts/import", files={"file": ("posts.csv", text, "text/csv")}, data=fields
    )


def test_import_header_csv(client: TestClient, store: SqlStore) -> None:
    csv = f"due_at,target,content\n{future(10)},outbox:main,one\n{future(20)},outbox:main,two\n"
    response = upload(client, csv.encode())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imported"] == 2
    assert result["skipped"] == []
    assert result["ids"] == [post.id for post in stored(store)]


def test_import_bulk_with_options(client: TestClient, store: SqlStore) -> None:
    csv = b"12/24/2040 6:00 PM,Doors open\n"
    response = upload(
        client, csv, target="outbox:news", date_format="mdy", tz="America/New_York"
    )
    assert response.status_code == 200, response.text
    [post] = stored(store)
    assert post.target == "outbox:news"
    assert post.due_at.isoformat() == "2040-12-24T23:00:00+00:00"


def test_import_invalid_row_stores_nothing(client: TestClient, store: SqlStore) -> None:
    csv = f"due_at,target,content\n{future(10)},outbox:main,one\nsoon,outbox:main,two\n"
    problem = assert_problem(upload(client, csv.encode()), 422, "import_rejected")
    assert [row["line"] for row in problem["invalid_rows"]] == [3]
    assert "posts.csv" in problem["detail"]
    assert stored(store) == []


def test_import_skip_invalid(client: TestClient, store: SqlStore) -> None:
    csv = f"due_at,target,content\n{future(10)},outbox:main,one\nsoon,outbox:main,two\n"
    response = upload(client, csv.encode(), skip_invalid="true")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["imported"] == 1
    assert [row["line"] for row in result["skipped"]] == [3]
    assert [post.content for post in stored(store)] == ["one"]


def test_import_invalid_utf8_names_line(client: TestClient, store: SqlStore) -> None:
    csv = f"due_at,target,content\n{future(10)},outbox:main,caf\xe9\n".encode("latin-1")
    problem = assert_problem(upload(client, csv), 422, "import_rejected")
    assert [row["line"] for row in problem["invalid_rows"]] == [2]
    assert stored(store) == []


def test_import_oversized_rejected(settings: Settings, store: SqlStore) -> None:
    limits = HttpSettings(token=None, max_upload_bytes=2000)
    row = f"{future(10)},outbox:main,{'x' * 50}\n"
    csv = ("due_at,target,content\n" + row * 100).encode()
    with open_client(settings, limits) as client:
        problem = assert_problem(upload(client, csv), 413, "content_too_large")
    assert problem["detail"]
    assert stored(store) == []


def test_import_chunked_oversized_rejected(settings: Settings, store: SqlStore) -> None:
    limits = HttpSettings(token=None, max_upload_bytes=2000)
    body = b"x" * 5000

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    with open_client(settings, limits) as client:
        response = client.post(
            "/posts/import",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=abc"},
        )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "content_too_large")
    assert stored(store) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"date_format": "ydm"}, "date_format"),
        ({"skip_invalid": "maybe"}, "skip_invalid"),
        ({"target": ["outbox:a", "outbox:b"]}, "target"),
    ],
)
def test_import_invalid_form_rejected(
    client: TestClient, store: SqlStore, fields: dict[str, Any], field: str
) -> None:
    csv = f"due_at,target,content\n{future(10)},outbox:main,one\n".encode()
    response = client.post(
        "/posts/import", files={"file": ("posts.csv", csv, "text/csv")}, data=fields
    )
    problem = assert_problem(response, 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == [field]
    assert stored(store) == []


def test_non_utf8_json_rejected(client: TestClient, store: SqlStore) -> None:
    response = client.post(
        "/posts", content=b"\xff\x1b", headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 400, "invalid_body")
    assert "openapi.json" in problem["detail"]
    assert stored(store) == []


def test_import_without_file_rejected(client: TestClient) -> None:
    response = client.post("/posts/import", data={"target": "outbox:main"})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == "file"


@pytest.fixture
def token_client(settings: Settings) -> Iterator[TestClient]:
    with open_client(settings, HttpSettings(token=SecretStr(TOKEN))) as opened:
        yield opened


def test_token_required(token_client: TestClient, store: SqlStore) -> None:
    payload = {"target": "outbox:main", "content": "hi", "publish_now": True}
    response = token_client.post("/posts", json=payload)
    problem = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in problem["detail"]
    assert stored(store) == []


def test_wrong_token_rejected(token_client: TestClient, store: SqlStore) -> None:
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}"):
        response = token_client.get("/posts", headers={"Authorization": header})
        assert_problem(response, 401, "unauthorized")
    assert stored(store) == []


def test_other_scheme_named(token_client: TestClient) -> None:
    response = token_client.get("/posts", headers={"Authorization": f"Basic {TOKEN}"})
    problem = assert_problem(response, 401, "unauthorized")
    assert "uses the 'Basic' scheme, not Bearer" in problem["detail"]
    assert TOKEN not in problem["detail"]


def test_right_token_accepted(token_client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    payload = {"target": "outbox:main", "content": "hi", "due_at": future()}
    response = token_client.post("/posts", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    assert token_client.get("/posts", headers=headers).status_code == 200


def test_health_needs_no_token(token_client: TestClient) -> None:
    response = token_client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "store_reachable": True,
        "broker_reachable": True,
        "chain_alive": False,
        "overdue": 0,
    }


def test_health_overdue_without_chain(client: TestClient, store: SqlStore) -> None:
    late = utc_now() - timedelta(minutes=1)
    store.add(
        [
            Post(
                id="a" * 32,
                target="outbox:main",
                content="late",
                due_at=late,
                timezone="UTC",
            )
        ]
    )
    response = client.get("/health")
    assert response.status_code == 503
    health = response.json()
    assert health["status"] == "unavailable"
    assert health["overdue"] == 1
    assert health["chain_alive"] is False


def test_health_chain_alive_with_worker(
    client: TestClient, celery_app: PostschedCelery, worker: object
) -> None:
    new_post(client)
    health = client.get("/health").json()
    assert health["chain_alive"] is True
    assert health["status"] == "ok"


def test_health_broker_unreachable(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    offline = settings.model_copy(
        update={"broker_url": closed, "result_backend": closed}
    )
    with open_client(offline) as client:
        response = client.get("/health")
        client.get("/health")
    assert response.status_code == 503
    health = response.json()
    assert health["broker_reachable"] is False
    assert health["store_reachable"] is True
    assert health["chain_alive"] is None
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name == "scheduler.http.health"
    ]
    # The second probe repeats the same failures, so only the first one warns.
    assert len(warnings) == 2
    assert "cannot reach the broker" in warnings[0]
    assert "cannot reach the result backend" in warnings[1]


def test_unreachable_broker_still_stores(settings: Settings, store: SqlStore) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    offline = settings.model_copy(
        update={"broker_url": closed, "result_backend": closed}
    )
    with open_client(offline) as client:
        post = new_post(client)
    assert [p.id for p in stored(store)] == [post["id"]]


def test_store_gone_is_unavailable(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "store"
    moved = settings.model_copy(
        update={"store_url": f"sqlite:///{folder / 'posts.db'}"}
    )
    with open_client(moved) as client:
        client.app.state.celery_app.runtime.store.close()  # type: ignore[attr-defined]
        shutil.rmtree(folder)
        problem = assert_problem(client.get("/posts"), 503, "store_unavailable")
        health = client.get("/health")
    assert "retry in" in problem["detail"]
    assert health.status_code == 503
    assert health.json()["store_reachable"] is False


def test_server_rejects_open_host_without_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POSTSCHED_HTTP_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["--host", "0.0.0.0"])
    assert result.exit_code == EXIT_INVALID
    assert "POSTSCHED_HTTP_TOKEN" in result.output
    assert "not a loopback address" in result.output


def test_server_rejects_short_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTSCHED_HTTP_TOKEN", "short")
    result = CliRunner().invoke(cli, ["--host", "127.0.0.1"])
    assert result.exit_code == EXIT_INVALID
    assert "shorter than the minimum of 16" in result.output


def test_docs_match_spec(tmp_path: Path) -> None:
    for fresh in write_docs(tmp_path):
        committed = ROOT / "docs" / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"docs/{fresh.name} is out of date: run python -m scheduler.http.docs docs"
        )
