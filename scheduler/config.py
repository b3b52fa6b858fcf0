"""Settings, read from ``POSTSCHED_*`` environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from scheduler.errors import ConfigError

if TYPE_CHECKING:
    from scheduler.store.base import Store

DEFAULT_MAX_CHECK_INTERVAL_S = 60.0
DEFAULT_VISIBILITY_TIMEOUT_S = 3600.0
# A countdown must stay well below the broker's visibility timeout, or the
# Redis transport delivers the waiting check message a second time.
MAX_INTERVAL_SHARE_OF_VISIBILITY = 0.5


class WebhookSettings(BaseModel):
    """One webhook account: where to POST and how to sign."""

    url: str
    secret: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    max_length: int = Field(default=65_536, gt=0)
    # GET with the Idempotency-Key header: 200 when the receiver has the post, 404 when not.
    lookup_url: str | None = None
    # Attempts for this account's posts; POSTSCHED_MAX_ATTEMPTS when unset.
    max_attempts: int | None = Field(default=None, gt=0)


ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MastodonSettings(BaseModel):
    """One Mastodon account: its server, where its access token is, and how it posts."""

    base_url: str
    # Name of the environment variable that contains the access token. The token
    # itself stays out of the settings, so it never reaches a log or a message.
    token_env: str
    visibility: Literal["public", "unlisted", "private", "direct"] = "public"
    timeout_s: float = Field(default=10.0, gt=0)
    # Attempts for this account's posts; POSTSCHED_MAX_ATTEMPTS when unset.
    max_attempts: int | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "use the server's http(s) address, such as 'https://social.example.org'"
            )
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _token_env_is_name(cls, value: str) -> str:
        if not ENV_NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "use the name of the environment variable that contains the token, "
                "such as 'MASTODON_MAIN_TOKEN', not the token itself"
            )
        return value


def default_data_dir() -> Path:
    """Return the folder for the embedded Redis and the SQLite store."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "postsched"


class Settings(BaseSettings):
    """Every setting of postsched; see the README for the environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="POSTSCHED_", extra="ignore", populate_by_name=True
    )

    broker_url: str | None = None
    result_backend: str | None = None
    store_url: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    outbox_dir: Path | None = None
    key_prefix: str = "postsched"
    max_check_interval_s: float = Field(
        default=DEFAULT_MAX_CHECK_INTERVAL_S, gt=0, alias="POSTSCHED_MAX_CHECK_INTERVAL"
    )
    visibility_timeout_s: float = Field(
        default=DEFAULT_VISIBILITY_TIMEOUT_S, gt=0, alias="POSTSCHED_VISIBILITY_TIMEOUT"
    )
    claim_batch_size: int = Field(default=500, gt=0)
    publish_batch_size: int = Field(default=50, gt=0)
    publish_lease_s: float = Field(default=900.0, gt=0, alias="POSTSCHED_PUBLISH_LEASE")
    max_attempts: int = Field(default=5, gt=0, alias="POSTSCHED_MAX_ATTEMPTS")
    max_deliveries: int = Field(default=3, gt=0, alias="POSTSCHED_MAX_DELIVERIES")
    missed_grace_s: float = Field(default=3600.0, gt=0, alias="POSTSCHED_MISSED_GRACE")
    retry_backoff_s: float = Field(default=5.0, gt=0, alias="POSTSCHED_RETRY_BACKOFF")
    retry_backoff_max_s: float = Field(
        default=600.0, gt=0, alias="POSTSCHED_RETRY_BACKOFF_MAX"
    )
    check_max_retries: int = Field(default=3, ge=0, alias="POSTSCHED_CHECK_MAX_RETRIES")
    watchdog_interval_s: float = Field(
        default=10.0, gt=0, alias="POSTSCHED_WATCHDOG_INTERVAL"
    )
    lost_check_grace_s: float = Field(
        default=30.0, gt=0, alias="POSTSCHED_LOST_CHECK_GRACE"
    )
    check_lease_s: float = Field(default=30.0, gt=0, alias="POSTSCHED_CHECK_LEASE")
    webhooks: dict[str, WebhookSettings] = Field(default_factory=dict)
    mastodon: dict[str, MastodonSettings] = Field(default_factory=dict)
    store_connect_timeout_s: float = Field(
        default=5.0, gt=0, alias="POSTSCHED_STORE_CONNECT_TIMEOUT"
    )
    mongo_write_concern: str = Field(
        default="majority", alias="POSTSCHED_MONGO_WRITE_CONCERN"
    )
    # The worker serves the Prometheus metrics on this port when it is set.
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, alias="POSTSCHED_METRICS_PORT"
    )
    metrics_host: str = Field(default="127.0.0.1", alias="POSTSCHED_METRICS_HOST")

    @field_validator("key_prefix")
    @classmethod
    def _prefix_not_empty(cls, value: str) -> str:
        if not value or ":" in value:
            raise ValueError("use a non-empty prefix without ':' such as 'postsched'")
        return value

    @property
    def resolved_outbox_dir(self) -> Path:
        """Folder of the outbox files."""
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def resolved_store_url(self) -> str:
        """Store URL, the SQLite file in the data folder unless one is set."""
        return self.store_url or f"sqlite:///{self.data_dir / 'posts.db'}"

    def open_store(self) -> Store:
        """Open the configured store."""
        from scheduler.store import open_store

        write_concern: str | int = (
            int(self.mongo_write_concern)
            if self.mongo_write_concern.isdigit()
            else self.mongo_write_concern
        )
        return open_store(
            self.resolved_store_url,
            connect_timeout_s=self.store_connect_timeout_s,
            write_concern=write_concern,
        )

    def check_intervals(self) -> None:
        """Raise ConfigError when the maximum check interval risks a redelivery."""
        limit = self.visibility_timeout_s * MAX_INTERVAL_SHARE_OF_VISIBILITY
        if self.max_check_interval_s > limit:
            raise ConfigError(
                f"POSTSCHED_MAX_CHECK_INTERVAL={self.max_check_interval_s:g} s is too long for the broker's "
                f"visibility timeout of {self.visibility_timeout_s:g} s: a check message waiting longer than "
                "the visibility timeout is delivered twice; set POSTSCHED_MAX_CHECK_INTERVAL to at most "
                f"{limit:g} s or raise POSTSCHED_VISIBILITY_TIMEOUT"
            )


def load_settings(**overrides: object) -> Settings:
    """Return the settings from the environment, with ``overrides`` on top.

    Raises ConfigError naming the invalid variable.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        variable = (
            f"POSTSCHED_{field.group(1).upper()}" if field else "a POSTSCHED_* variable"
        )
        raise ConfigError(
            f"invalid JSON in {variable}: {exc}; write it as a JSON object, such as {{}}"
        ) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable_name(error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    settings.check_intervals()
    return settings


def _variable_name(location: tuple[int | str, ...]) -> str:
    name = "_".join(str(part) for part in location).upper()
    return name if name.startswith("POSTSCHED_") else f"POSTSCHED_{name}"
