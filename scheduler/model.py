"""The post model and the validation of new posts."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.errors import ValidationError

MAX_LINK_LENGTH = 2048
# The SQL stores keep a target in 200 characters.
MAX_TARGET_LENGTH = 200
# A due time this far in the past is still accepted, for clocks that differ a little.
CLOCK_SKEW_S = 5.0


class PostStatus(enum.StrEnum):
    """Lifecycle of a post: scheduled, then publishing, then published or failed."""

    SCHEDULED = "scheduled"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Sent, but the platform's response was lost, so an operator or reconcile decides.
    UNCONFIRMED = "unconfirmed"
    # Found overdue by more than the grace, after an outage: listed, not published.
    MISSED = "missed"


@dataclass(frozen=True)
class Post:
    """A post and its publishing state; every datetime is UTC-aware."""

    id: str
    target: str
    content: str
    due_at: datetime
    timezone: str
    link: str | None = None
    status: PostStatus = PostStatus.SCHEDULED
    attempts: int = 0
    # Deliveries to a publishing task that have not ended cleanly: more than
    # one means a worker died while publishing, so the platform may have it.
    # Reset only when a retry is scheduled after the platform turned it down.
    deliveries: int = 0
    last_error: str | None = None
    published_at: datetime | None = None
    external_id: str | None = None
    attempt_id: str | None = None
    lease_until: datetime | None = None
    created_at: datetime = dataclasses.field(default_factory=lambda: utc_now())
    updated_at: datetime = dataclasses.field(default_factory=lambda: utc_now())

    @property
    def publisher(self) -> str:
        """Name of the publisher, the part of the target before the colon."""
        return self.target.split(":", 1)[0]

    @property
    def account(self) -> str:
        """Account of the publisher, the part of the target after the colon."""
        return self.target.split(":", 1)[1]

    @property
    def idempotency_key(self) -> str:
        """Key that stays the same for every attempt to publish this post."""
        return f"postsched-{self.id}"


def post_to_dict(post: Post) -> dict[str, object]:
    """Return ``post`` as a JSON-serialisable dict, datetimes in ISO 8601."""
    fields: dict[str, object] = {}
    for name, value in vars(post).items():
        fields[name] = value.isoformat() if isinstance(value, datetime) else value
    fields["status"] = str(post.status)
    return fields


@dataclass(frozen=True)
class Attempt:
    """One attempt to publish a post, for the post's history."""

    post_id: str
    attempt_id: str
    started_at: datetime
    duration_ms: float
    worker: str
    outcome: str
    error: str | None = None


class TargetRules(Protocol):
    """Publisher facts that validation needs: targets and content limits."""

    def check_target(self, target: str) -> None:
        """Raise ValidationError when no publisher serves ``target``."""

    def max_length(self, target: str) -> int:
        """Return the content limit of ``target``, in characters."""

    def content_length(self, target: str, content: str, link: str | None) -> int:
        """Return the length that ``target`` counts against its limit for ``content`` and ``link``."""


def utc_now() -> datetime:
    """Return the current time, UTC-aware, truncated to the millisecond."""
    return truncate_to_ms(datetime.now(UTC))


def truncate_to_ms(moment: datetime) -> datetime:
    """Drop sub-millisecond digits, so that every store keeps the same value.

    MongoDB keeps datetimes to the millisecond; SQL stores keep microseconds.
    """
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def new_post_id() -> str:
    """Return a new random post id, 32 hex digits."""
    return uuid.uuid4().hex


def resolve_zone(name: str, field: str = "timezone") -> ZoneInfo:
    """Return the IANA time zone called ``name``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            field,
            name,
            "unknown time zone",
            "use an IANA time zone name such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
        ) from exc


def resolve_due_at(
    value: datetime | str, timezone: str | None = None
) -> tuple[datetime, str]:
    """Return ``value`` as a UTC-aware datetime, and the zone it was written in.

    ``value`` is a datetime or an ISO 8601 string. A value without an offset is
    read in ``timezone``; a wall time that the zone skips (a DST gap) or
    repeats (a DST fold) is rejected, because guessing would publish an hour
    early or late.
    """
    if not isinstance(value, datetime | str):
        raise ValidationError(
            "due_at",
            value,
            "not a date and time",
            "pass an ISO 8601 string or a datetime",
        )
    if timezone is not None and not isinstance(timezone, str):
        raise ValidationError(
            "timezone",
            timezone,
            "not a string",
            "pass an IANA time zone name such as 'Europe/Berlin'",
        )
    try:
        return _resolve_due_at(value, timezone)
    except OverflowError as exc:
        raise ValidationError(
            "due_at",
            value if isinstance(value, str) else value.isoformat(),
            "out of the range of dates that can be stored in UTC",
            "use a date between the years 2 and 9998",
        ) from exc


def to_utc(moment: datetime, field: str) -> datetime:
    """Return the UTC-aware datetime of an aware ``moment``, as stores compare them.

    Raises ValidationError naming ``field`` for a naive ``moment``, whose
    zone would be a guess, and for one that is out of range in UTC.
    """
    if moment.utcoffset() is None:
        raise ValidationError(
            field,
            moment.isoformat(),
            "no time zone given",
            "add a UTC offset such as '+01:00', or pass a UTC-aware datetime",
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValidationError(
            field,
            moment.isoformat(),
            "out of the range of dates that can be stored in UTC",
            "use a date between the years 2 and 9998",
        ) from exc


def _check_offset_in_zone(moment: datetime, zone: tzinfo, timezone: str) -> None:
    """Raise ValidationError unless ``zone`` has the UTC offset of ``moment`` at that instant.

    Otherwise the post would be shown in a zone its time was not written in.
    """
    offset = moment.utcoffset() or timedelta(0)
    zone_offset = moment.astimezone(zone).utcoffset() or timedelta(0)
    if offset == zone_offset:
        return
    raise ValidationError(
        "timezone",
        timezone,
        f"the due time's UTC offset {_format_offset(offset)} is not the offset of "
        f"{timezone} at that time, {_format_offset(zone_offset)}",
        "leave timezone out, or write the due time without an offset or with the zone's offset",
    )


def optional_utc(moment: datetime | None, field: str) -> datetime | None:
    """Return ``to_utc(moment, field)``, or None when ``moment`` is None."""
    return None if moment is None else to_utc(moment, field)


def _resolve_due_at(
    value: datetime | str, timezone: str | None = None
) -> tuple[datetime, str]:
    """Resolve ``value`` as ``resolve_due_at`` describes, without its type and range checks."""
    zone = resolve_zone(timezone) if timezone is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValidationError(
                "due_at",
                value,
                "not an ISO 8601 date and time",
                "write it like '2026-12-24T18:00:00+01:00'",
            ) from exc
    else:
        parsed = value

    if parsed.tzinfo is not None and parsed.utcoffset() is not None:
        if zone is not None:
            _check_offset_in_zone(parsed, zone, timezone or "")
        zone_name = timezone or _zone_name(parsed)
        return truncate_to_ms(parsed.astimezone(UTC)), zone_name

    if zone is None:
        raise ValidationError(
            "due_at",
            value if isinstance(value, str) else value.isoformat(),
            "no time zone given",
            "add a UTC offset such as '+01:00', or give the time zone it is written in, "
            "such as Europe/Berlin: the timezone field of the API, or --tz on the command line",
        )
    return truncate_to_ms(_localize(parsed, zone)), zone.key


def _localize(wall: datetime, zone: ZoneInfo) -> datetime:
    earlier = wall.replace(tzinfo=zone, fold=0)
    later = wall.replace(tzinfo=zone, fold=1)
    round_trip = earlier.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if round_trip != wall:
        raise ValidationError(
            "due_at",
            wall.isoformat(),
            f"this time does not exist in {zone.key} (clocks skip it for daylight saving time)",
            "pick a time outside the skipped hour, or give an explicit UTC offset "
            "(in a CSV file, use the header format, whose due_at takes one)",
        )
    if earlier.utcoffset() != later.utcoffset():
        raise ValidationError(
            "due_at",
            wall.isoformat(),
            f"this time occurs twice in {zone.key} (clocks go back for daylight saving time)",
            f"give an explicit UTC offset, '{_offset(earlier)}' for the first occurrence or "
            f"'{_offset(later)}' for the second (in a CSV file, use the header format, whose "
            "due_at takes one)",
        )
    return earlier.astimezone(UTC)


def _offset(moment: datetime) -> str:
    """Format the UTC offset of ``moment`` as '+02:00'."""
    text = moment.strftime("%z")
    return f"{text[:3]}:{text[3:]}"


def _zone_name(moment: datetime) -> str:
    zone = moment.tzinfo
    if isinstance(zone, ZoneInfo) and zone.key:
        return zone.key
    offset = moment.utcoffset()
    if not offset:
        return "UTC"
    # A fixed offset has no IANA name. Its tzname() can be any text, even
    # longer than the stores' column or with a NUL, so the offset is kept.
    return f"UTC{_format_offset(offset)}"


def _format_offset(offset: timedelta) -> str:
    """Format a UTC offset as '+01:00', or '+01:00:30' when it has seconds."""
    sign = "-" if offset < timedelta(0) else "+"
    minutes, seconds = divmod(abs(int(offset.total_seconds())), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return f"{text}:{seconds:02d}" if seconds else text


def validate_content(
    content: object, target: str, rules: TargetRules, link: str | None = None
) -> str:
    """Return ``content`` when it is a non-empty string within the target's limit.

    The length is the one the target counts, which for some platforms includes
    ``link`` and counts URLs at a fixed size.
    """
    if not isinstance(content, str):
        raise ValidationError(
            "content", content, "not a string", "pass the post's text as a string"
        )
    if not content.strip():
        raise ValidationError("content", content, "empty", "write the text of the post")
    if "\x00" in content:
        raise ValidationError(
            "content",
            content,
            "contains a NUL character",
            "remove the NUL (\\x00) characters",
        )
    check_encodable("content", content)
    limit = rules.max_length(target)
    length = rules.content_length(target, content, link)
    if length > limit and length == len(content):
        raise ValidationError(
            "content",
            content,
            f"{length} characters, over the limit of {limit} for {target}",
            f"shorten it to {limit} characters or fewer",
        )
    if length > limit:
        raise ValidationError(
            "content",
            content,
            f"{length} characters as {target} counts them, over the limit of {limit}",
            f"shorten it by {length - limit} or more characters",
        )
    return content


def check_encodable(field: str, text: str) -> None:
    """Raise ValidationError when ``text`` contains a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            field,
            text,
            f"contains the lone surrogate {exc.object[exc.start : exc.end]!r} at position {exc.start}",
            "pass valid Unicode text (decode the input as UTF-8 first)",
        ) from exc


def validate_link(link: object) -> str | None:
    """Return ``link`` when it is empty or an absolute http(s) URL."""
    if link is None or link == "":
        return None
    if not isinstance(link, str):
        raise ValidationError("link", link, "not a string", "pass the link as a string")
    check_encodable("link", link)
    try:
        parts = urlsplit(link)
        port_ok = parts.hostname is not None and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if (
        not port_ok
        or parts.scheme not in ("http", "https")
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in link)
    ):
        raise ValidationError(
            "link",
            link,
            "not an absolute http(s) URL",
            "write it like 'https://example.org/page'",
        )
    if len(link) > MAX_LINK_LENGTH:
        raise ValidationError(
            "link",
            link,
            f"{len(link)} characters long",
            f"use a link of {MAX_LINK_LENGTH} characters or fewer",
        )
    return link


def validate_target(target: object, rules: TargetRules) -> str:
    """Return ``target`` when a publisher serves it."""
    if not isinstance(target, str) or ":" not in target:
        raise ValidationError(
            "target",
            target,
            "not of the form PUBLISHER:ACCOUNT",
            "write it like 'outbox:main' or 'webhook:alerts'",
        )
    if len(target) > MAX_TARGET_LENGTH:
        raise ValidationError(
            "target",
            target,
            f"{len(target)} characters long",
            f"use a target of {MAX_TARGET_LENGTH} characters or fewer",
        )
    rules.check_target(target)
    return target


def check_not_past(due_utc: datetime, now: datetime, written: object) -> None:
    """Raise ValidationError when ``due_utc`` is more than ``CLOCK_SKEW_S`` before ``now``."""
    late_s = (now - due_utc).total_seconds()
    if late_s > CLOCK_SKEW_S:
        shown = written.isoformat() if isinstance(written, datetime) else written
        raise ValidationError(
            "due_at",
            shown,
            f"{late_s:.0f} s in the past",
            "give a future time, or publish it now: publish_now in the API, --now on the command line",
        )


def new_post(
    *,
    target: object,
    content: object,
    due_at: datetime | str,
    rules: TargetRules,
    timezone: str | None = None,
    link: object = None,
    post_id: str | None = None,
    now: datetime | None = None,
    allow_past: bool = False,
) -> Post:
    """Validate the fields of a new post and return it, status ``scheduled``.

    A due time more than ``CLOCK_SKEW_S`` before ``now`` is rejected unless
    ``allow_past`` is set, so that a typo in the date never publishes at once.
    Raises ValidationError, naming the field, the value and the fix.
    """
    checked_target = validate_target(target, rules)
    checked_link = validate_link(link)
    checked_content = validate_content(content, checked_target, rules, checked_link)
    due_utc, zone_name = resolve_due_at(due_at, timezone)
    created = now or utc_now()
    if not allow_past:
        check_not_past(due_utc, created, due_at)
    return Post(
        id=post_id or new_post_id(),
        target=checked_target,
        content=checked_content,
        link=checked_link,
        due_at=due_utc,
        timezone=zone_name,
        created_at=created,
        updated_at=created,
    )
