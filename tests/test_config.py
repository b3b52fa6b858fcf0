"""Settings from the environment, and the checks made at start-up."""

from __future__ import annotations

import pytest

from scheduler.config import load_settings
from scheduler.errors import ConfigError
from scheduler.urls import mask_url


def test_interval_beyond_visibility_timeout_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTSCHED_VISIBILITY_TIMEOUT", "5")
    monkeypatch.setenv("POSTSCHED_MAX_CHECK_INTERVAL", "10")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "POSTSCHED_MAX_CHECK_INTERVAL=10 s" in message
    assert "visibility timeout of 5 s" in message
    assert "at most 2.5 s" in message


def test_valid_intervals_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTSCHED_VISIBILITY_TIMEOUT", "120")
    monkeypatch.setenv("POSTSCHED_MAX_CHECK_INTERVAL", "30")
    settings = load_settings()
    assert settings.max_check_interval_s == 30


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_invalid_interval_names_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("POSTSCHED_MAX_CHECK_INTERVAL", value)
    with pytest.raises(ConfigError, match="POSTSCHED_MAX_CHECK_INTERVAL"):
        load_settings()


def test_invalid_webhooks_json_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTSCHED_WEBHOOKS", "{not json")
    with pytest.raises(ConfigError, match="POSTSCHED_WEBHOOKS"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://app:pw@db:5432/posts", "postgresql://app:***@db:5432/posts"),
        ("mongodb://127.0.0.1/postsched", "mongodb://127.0.0.1/postsched"),
        (
            "sqlite:////var/lib/postsched/posts.db",
            "sqlite:////var/lib/postsched/posts.db",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
