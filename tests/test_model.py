"""Validation of new posts and time zone handling of due times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import timezone as fixed_offset
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler.config import Settings, WebhookSettings
from scheduler.errors import ValidationError
from scheduler.model import PostStatus, new_post, resolve_due_at, validate_link
from scheduler.publishers import Publishers

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
WEBHOOK_LIMIT = 280


@pytest.fixture
def rules(tmp_path: Path) -> Iterator[Publishers]:
    """Publishers with the outbox and one webhook account, ``alerts``."""
    webhooks = {
        "alerts": WebhookSettings(
            url="https://example.org/hooks/alerts", max_length=WEBHOOK_LIMIT
        )
    }
    publishers = Publishers(Settings(data_dir=tmp_path, webhooks=webhooks))
    yield publishers
    publishers.close()


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "timezone", "expected_utc", "expected_zone"),
    [
        ("2026-12-24T18:00:00+01:00", None, utc(2026, 12, 24, 17, 0), "UTC+01:00"),
        ("2026-12-24T18:00:00Z", None, utc(2026, 12, 24, 18, 0), "UTC"),
        ("2026-12-24T18:00:00-05:00", None, utc(2026, 12, 24, 23, 0), "UTC-05:00"),
        (
            "2026-12-24 18:00",
            "Europe/Berlin",
            utc(2026, 12, 24, 17, 0),
            "Europe/Berlin",
        ),
        ("2026-07-01 12:00", "Europe/Berlin", utc(2026, 7, 1, 10, 0), "Europe/Berlin"),
        (
            "2026-07-01 12:00",
            "America/New_York",
            utc(2026, 7, 1, 16, 0),
            "America/New_York",
        ),
        ("2026-12-24 18:00", "UTC", utc(2026, 12, 24, 18, 0), "UTC"),
        # The offset sets the instant, and the time zone is kept as written.
        (
            "2026-12-24T18:00:00+01:00",
            "Europe/Berlin",
            utc(2026, 12, 24, 17, 0),
            "Europe/Berlin",
        ),
        # Right after the DST gap and right around the fold, made unambiguous.
        ("2026-03-29 03:30", "Europe/Berlin", utc(2026, 3, 29, 1, 30), "Europe/Berlin"),
        ("2026-03-29 01:59", "Europe/Berlin", utc(2026, 3, 29, 0, 59), "Europe/Berlin"),
        ("2026-10-25T02:30:00+02:00", None, utc(2026, 10, 25, 0, 30), "UTC+02:00"),
        ("2026-10-25T02:30:00+01:00", None, utc(2026, 10, 25, 1, 30), "UTC+01:00"),
        (
            "2026-10-25 03:30",
            "Europe/Berlin",
            utc(2026, 10, 25, 2, 30),
            "Europe/Berlin",
        ),
        (
            datetime(2026, 12, 24, 18, 0, tzinfo=ZoneInfo("Asia/Tokyo")),
            None,
            utc(2026, 12, 24, 9, 0),
            "Asia/Tokyo",
        ),
        (
            datetime(2026, 12, 24, 18, 0),
            "Europe/Berlin",
            utc(2026, 12, 24, 17, 0),
            "Europe/Berlin",
        ),
    ],
)
def test_resolve_due_at_valid(
    value: datetime | str,
    timezone: str | None,
    expected_utc: datetime,
    expected_zone: str,
) -> None:
    due_at, zone = resolve_due_at(value, timezone)

    assert due_at == expected_utc
    assert due_at.tzinfo is UTC
    assert zone == expected_zone


@pytest.mark.parametrize(
    ("zone", "expected_zone"),
    [
        (fixed_offset(timedelta(hours=1), "x" * 100), "UTC+01:00"),
        (fixed_offset(timedelta(hours=-5, minutes=-30), "EST\x00"), "UTC-05:30"),
        (fixed_offset(timedelta(hours=2, seconds=30), "CEST"), "UTC+02:00:30"),
        (fixed_offset(timedelta(0), "Zulu time"), "UTC"),
    ],
)
def test_resolve_due_at_names_fixed_offset(
    zone: fixed_offset, expected_zone: str
) -> None:
    # tzname() of a fixed offset is free text, and a store keeps zone names
    # in 64 characters without NUL, so the offset itself names the zone.
    _, zone_name = resolve_due_at(datetime(2030, 1, 1, 12, 0, tzinfo=zone))

    assert zone_name == expected_zone


@pytest.mark.parametrize(
    ("value", "microsecond"),
    [
        ("2026-12-24T18:00:00.123456+00:00", 123_000),
        ("2026-12-24T18:00:00.999999+00:00", 999_000),
        ("2026-12-24T18:00:00.000999+00:00", 0),
        ("2026-12-24T18:00:00.5+00:00", 500_000),
    ],
)
def test_resolve_due_at_truncates_to_ms(value: str, microsecond: int) -> None:
    due_at, _ = resolve_due_at(value)

    assert due_at.microsecond == microsecond


@pytest.mark.parametrize(
    ("value", "timezone", "field", "in_message", "reason", "fix"),
    [
        (
            "2026-12-24 18:00",
            None,
            "due_at",
            "'2026-12-24 18:00'",
            "no time zone given",
            "--tz",
        ),
        (
            datetime(2026, 12, 24, 18, 0),
            None,
            "due_at",
            "2026-12-24T18:00:00",
            "no time zone",
            "UTC offset",
        ),
        (
            "2026-12-24 18:00",
            "Mars/Olympus",
            "timezone",
            "'Mars/Olympus'",
            "unknown time zone",
            "IANA",
        ),
        (
            "2026-12-24 18:00",
            "Europe/Berlln",
            "timezone",
            "'Europe/Berlln'",
            "unknown time zone",
            "Europe/Berlin",
        ),
        (
            "2026-03-29 02:30",
            "Europe/Berlin",
            "due_at",
            "2026-03-29T02:30:00",
            "does not exist",
            "explicit UTC offset",
        ),
        (
            "2026-03-08 02:30",
            "America/New_York",
            "due_at",
            "2026-03-08T02:30:00",
            "does not exist",
            "skipped hour",
        ),
        (
            "2026-10-25 02:30",
            "Europe/Berlin",
            "due_at",
            "2026-10-25T02:30:00",
            "occurs twice",
            "'+02:00'",
        ),
        (
            "2026-11-01 01:30",
            "America/New_York",
            "due_at",
            "2026-11-01T01:30:00",
            "occurs twice",
            "explicit UTC offset",
        ),
        (
            "24.12.2026 18:00",
            "Europe/Berlin",
            "due_at",
            "'24.12.2026 18:00'",
            "not an ISO 8601",
            "2026-12-24T18:00:00+01:00",
        ),
        (
            "tomorrow",
            None,
            "due_at",
            "'tomorrow'",
            "not an ISO 8601",
            "2026-12-24T18:00:00+01:00",
        ),
    ],
)
def test_resolve_due_at_invalid(
    value: datetime | str,
    timezone: str | None,
    field: str,
    in_message: str,
    reason: str,
    fix: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_due_at(value, timezone)

    assert caught.value.field == field
    assert in_message in str(caught.value)
    assert reason in caught.value.reason
    assert fix in caught.value.fix
    assert caught.value.fix in str(caught.value)


def test_new_post_valid(rules: Publishers) -> None:
    post = new_post(
        target="outbox:main",
        content="Doors open at 9.",
        due_at="2026-12-24 18:00",
        timezone="Europe/Berlin",
        link="https://example.org/event",
        rules=rules,
        now=NOW,
    )

    assert post.target == "outbox:main"
    assert post.content == "Doors open at 9."
    assert post.link == "https://example.org/event"
    assert post.due_at == utc(2026, 12, 24, 17, 0)
    assert post.timezone == "Europe/Berlin"
    assert post.status is PostStatus.SCHEDULED
    assert post.created_at == NOW
    assert len(post.id) == 32
    assert post.idempotency_key == f"postsched-{post.id}"


@pytest.mark.parametrize(
    ("target", "content"),
    [
        ("outbox:main", "x" * 10_000),
        ("outbox:a", "hello"),
        ("outbox:" + "a" * 64, "hello"),
        ("outbox:team.news-2026_b", "hello"),
        ("webhook:alerts", "x" * WEBHOOK_LIMIT),
    ],
)
def test_new_post_accepts_target(rules: Publishers, target: str, content: str) -> None:
    post = new_post(
        target=target, content=content, due_at="2026-12-24T18:00:00Z", rules=rules
    )

    assert post.target == target


def test_new_post_empty_link_is_none(rules: Publishers) -> None:
    post = new_post(
        target="outbox:main",
        content="hello",
        due_at="2026-12-24T18:00:00Z",
        link="",
        rules=rules,
    )

    assert post.link is None


@pytest.mark.parametrize(
    ("fields", "field", "in_message", "reason", "fix"),
    [
        ({"content": ""}, "content", "''", "empty", "write the text"),
        ({"content": "  \n\t "}, "content", "'  \\n\\t '", "empty", "write the text"),
        ({"content": "a\x00b"}, "content", "'a\\x00b'", "NUL", "remove the NUL"),
        ({"content": 42}, "content", "42", "not a string", "as a string"),
        (
            {"content": "x" * 10_001},
            "content",
            "10003 chars",
            "over the limit of 10000",
            "10000 characters or fewer",
        ),
        (
            {"target": "webhook:alerts", "content": "x" * (WEBHOOK_LIMIT + 1)},
            "content",
            "xxxx",
            f"over the limit of {WEBHOOK_LIMIT} for webhook:alerts",
            f"shorten it to {WEBHOOK_LIMIT}",
        ),
        (
            {"target": "twitter:main"},
            "target",
            "'twitter:main'",
            "unknown publisher 'twitter'",
            "outbox, webhook",
        ),
        (
            {"target": "outbox"},
            "target",
            "'outbox'",
            "not of the form PUBLISHER:ACCOUNT",
            "'outbox:main'",
        ),
        (
            {"target": None},
            "target",
            "None",
            "not of the form PUBLISHER:ACCOUNT",
            "'outbox:main'",
        ),
        (
            {"target": "outbox:../x"},
            "target",
            "'outbox:../x'",
            "invalid outbox account",
            "letters, digits",
        ),
        (
            {"target": "outbox:.hidden"},
            "target",
            "'outbox:.hidden'",
            "invalid outbox account",
            "starting with a",
        ),
        (
            {"target": "outbox:a/b"},
            "target",
            "'outbox:a/b'",
            "invalid outbox account",
            "such as 'outbox:main'",
        ),
        (
            {"target": "outbox:"},
            "target",
            "'outbox:'",
            "invalid outbox account",
            "1 to 64",
        ),
        (
            {"target": "outbox:main\n"},
            "target",
            "'outbox:main\\n'",
            "invalid outbox account",
            "1 to 64",
        ),
        (
            {"target": "outbox:" + "a" * 65},
            "target",
            "aaaa",
            "invalid outbox account",
            "1 to 64",
        ),
        (
            {"target": "webhook:sales"},
            "target",
            "'webhook:sales'",
            "'sales' is not configured",
            "POSTSCHED_WEBHOOKS",
        ),
        (
            {"target": "webhook:sales"},
            "target",
            "'webhook:sales'",
            "configured accounts: alerts",
            '{"alerts"',
        ),
        (
            {"link": "ftp://example.org/file"},
            "link",
            "'ftp://example.org/file'",
            "not an absolute http(s) URL",
            "https://",
        ),
        (
            {"link": "example.org/page"},
            "link",
            "'example.org/page'",
            "not an absolute http(s) URL",
            "https://",
        ),
        (
            {"link": "https://"},
            "link",
            "'https://'",
            "not an absolute http(s) URL",
            "https://",
        ),
        (
            {"link": "https://example.org/a b"},
            "link",
            "'https://example.org/a b'",
            "not an absolute",
            "https://",
        ),
        (
            {"link": "https://example.org/" + "a" * 2100},
            "link",
            "2122 chars",
            "2120 characters long",
            "2048",
        ),
        ({"link": 7}, "link", "7", "not a string", "as a string"),
    ],
)
def test_new_post_invalid(
    rules: Publishers,
    fields: dict[str, Any],
    field: str,
    in_message: str,
    reason: str,
    fix: str,
) -> None:
    arguments: dict[str, Any] = {
        "target": "outbox:main",
        "content": "hello",
        "due_at": "2026-12-24T18:00:00Z",
    }
    arguments.update(fields)

    with pytest.raises(ValidationError) as caught:
        new_post(rules=rules, **arguments)

    assert caught.value.field == field
    assert in_message in str(caught.value)
    assert reason in caught.value.reason
    assert fix in caught.value.fix
    assert caught.value.fix in str(caught.value)


def test_new_post_naive_without_tz(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as caught:
        new_post(
            target="outbox:main",
            content="hello",
            due_at="2026-12-24 18:00",
            rules=rules,
        )

    assert caught.value.field == "due_at"
    assert "no time zone given" in str(caught.value)


def test_new_post_keeps_given_id(rules: Publishers) -> None:
    post = new_post(
        target="outbox:main",
        content="hello",
        due_at="2026-12-24T18:00:00Z",
        rules=rules,
        post_id="abc",
    )

    assert post.id == "abc"


@pytest.mark.parametrize("seconds_ago", [6, 3600, 86_400 * 400])
def test_new_post_past_due_rejected(rules: Publishers, seconds_ago: int) -> None:
    due = NOW - timedelta(seconds=seconds_ago)
    with pytest.raises(ValidationError) as caught:
        new_post(target="outbox:main", content="late", due_at=due, rules=rules, now=NOW)
    assert caught.value.field == "due_at"
    assert f"{seconds_ago} s in the past" in caught.value.reason
    assert "--now" in caught.value.fix


def test_new_post_clock_skew_accepted(rules: Publishers) -> None:
    due = NOW - timedelta(seconds=4)
    post = new_post(
        target="outbox:main", content="just now", due_at=due, rules=rules, now=NOW
    )
    assert post.due_at == due


def test_new_post_allow_past(rules: Publishers) -> None:
    due = NOW - timedelta(days=1)
    post = new_post(
        target="outbox:main",
        content="now",
        due_at=due,
        rules=rules,
        now=NOW,
        allow_past=True,
    )
    assert post.due_at == due


@pytest.mark.parametrize(
    ("due_at", "timezone"),
    [
        ("9999-12-31T23:59:59-01:00", None),
        ("9999-12-31 23:00:00", "America/New_York"),
        ("0001-01-01T00:30:00+01:00", None),
    ],
)
def test_due_at_out_of_range_rejected(due_at: str, timezone: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_due_at(due_at, timezone)
    assert caught.value.field == "due_at"
    assert "out of the range" in caught.value.reason


@pytest.mark.parametrize("content", ["bad\udcffbyte", "\ud800"])
def test_lone_surrogate_content_rejected(rules: Publishers, content: str) -> None:
    with pytest.raises(ValidationError) as caught:
        new_post(
            target="outbox:main",
            content=content,
            due_at="2030-01-01T10:00:00Z",
            rules=rules,
            now=NOW,
        )
    assert caught.value.field == "content"
    assert "lone surrogate" in caught.value.reason


@pytest.mark.parametrize(
    "link",
    [
        "https://[::1",
        "https://example.org:abc/",
        "https://example.org:99999/",
        "https://example.org/\x00",
        "https://ex\udcff.org/",
    ],
)
def test_malformed_link_rejected(link: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_link(link)
    assert caught.value.field == "link"


def test_fold_fix_names_zone_offsets() -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_due_at("2026-11-01 01:30", "America/New_York")
    assert "'-04:00' for the first occurrence" in caught.value.fix
    assert "'-05:00' for the second" in caught.value.fix


def test_offset_not_of_zone_rejected() -> None:
    with pytest.raises(ValidationError) as raised:
        resolve_due_at("2030-12-24T18:00:00+01:00", "Asia/Tokyo")
    assert raised.value.field == "timezone"
    assert "+01:00 is not the offset of Asia/Tokyo at that time, +09:00" in (
        raised.value.reason
    )


def test_offset_of_zone_accepted() -> None:
    due_at, zone = resolve_due_at("2030-12-24T18:00:00+01:00", "Europe/Berlin")
    assert zone == "Europe/Berlin"
    assert due_at == datetime(2030, 12, 24, 17, 0, tzinfo=UTC)
