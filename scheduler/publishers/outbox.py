"""The outbox publisher: one JSON line per post, appended to a file per account.

The outbox replaces a real platform in development, demos and tests.
Several worker processes may append to the same file at once, so each line is
written under an exclusive ``flock`` with a single ``write()`` call.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.errors import (
    PermanentPublishError,
    TransientPublishError,
    ValidationError,
)
from scheduler.model import Post, utc_now
from scheduler.publishers.base import Publisher, PublishResult

MAX_CONTENT_LENGTH = 10_000
OUTBOX_SUFFIX = ".jsonl"
# The account becomes a file name, so it must not contain a path separator or
# start with a dot. With the suffix it stays well below the 255-byte name limit
# of common file systems.
ACCOUNT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class OutboxPublisher(Publisher):
    """Publisher that appends each post to ``<outbox_dir>/<account>.jsonl``."""

    name = "outbox"

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = outbox_dir

    def check_account(self, account: str) -> None:
        """Raise ValidationError unless ``account`` is a safe file name."""
        if ACCOUNT_PATTERN.fullmatch(account) is None:
            raise ValidationError(
                "target",
                f"{self.name}:{account}",
                "invalid outbox account, because the account becomes a file name",
                "use 1 to 64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit, such as 'outbox:main'",
            )

    def max_length(self, account: str) -> int:
        """Return the content limit, the same for every account."""
        return MAX_CONTENT_LENGTH

    def path_for(self, account: str) -> Path:
        """Return the outbox file of ``account``.

        Raises ValidationError when the account is not a safe file name.
        """
        self.check_account(account)
        return self.outbox_dir / f"{account}{OUTBOX_SUFFIX}"

    def publish(self, post: Post) -> PublishResult:
        """Append ``post`` as one JSON line and return its byte offset as the id.

        ``published_at`` is taken under the lock, right before the write.
        Raises TransientPublishError when the file cannot be written, such as
        on a full disk, and PermanentPublishError when the post cannot be
        encoded as UTF-8.
        """
        path = self.path_for(post.account)
        try:
            published_at, offset = _append_post(path, post)
        except OSError as exc:
            raise TransientPublishError(
                f"cannot append post {post.id} to outbox file {path}: "
                f"{exc.strerror or exc}; check the free disk space and the write "
                f"permission of {path.parent}"
            ) from exc
        except UnicodeEncodeError as exc:
            raise PermanentPublishError(
                f"cannot write post {post.id} to outbox file {path}: the text "
                f"contains the lone surrogate {exc.object[exc.start : exc.end]!r}, "
                "which UTF-8 cannot encode; edit the post and schedule it again"
            ) from exc
        return PublishResult(published_at, external_id=f"{post.account}:{offset}")

    def can_find(self, account: str) -> bool:
        """Return True: every outbox file can be searched by idempotency key."""
        return True

    def find(self, post: Post) -> PublishResult | None:
        """Return the line already written for ``post``, found by its idempotency key."""
        path = self.path_for(post.account)
        try:
            with open(path, "rb") as file:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH)
                offset = 0
                for line in file:
                    if post.idempotency_key.encode() in line:
                        record = json.loads(line)
                        if record.get("idempotency_key") == post.idempotency_key:
                            published_at = datetime.fromisoformat(
                                record["published_at"]
                            )
                            return PublishResult(
                                published_at, external_id=f"{post.account}:{offset}"
                            )
                    offset += len(line)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransientPublishError(
                f"cannot read outbox file {path}: {exc.strerror or exc}"
            ) from exc
        return None


def read_outbox(path: Path) -> list[dict[str, Any]]:
    """Read the posts of an outbox file, in the order they were written.

    Returns an empty list when the file does not exist yet. Raises
    json.JSONDecodeError for a line that is not JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as ISO 8601 in UTC, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _append_post(path: Path, post: Post) -> tuple[datetime, int]:
    """Append the JSON line of ``post`` to ``path``.

    Returns the time written as ``published_at`` and the byte offset of the line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered, so each write() is one system call and nothing waits in a
    # buffer. The lock is released when the file is closed.
    with open(path, "ab", buffering=0) as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)

        published_at = utc_now()
        line = _encode_line(post, published_at)
        offset = file.seek(0, os.SEEK_END)

        written = file.write(line)
        if written != len(line):
            # Cut the partial line, so that readers never see a torn record.
            file.truncate(offset)
            raise OSError(errno.ENOSPC, f"wrote {written} of {len(line)} bytes")
        os.fsync(file.fileno())
    return published_at, offset


def _encode_line(post: Post, published_at: datetime) -> bytes:
    record = {
        "post_id": post.id,
        "idempotency_key": post.idempotency_key,
        "target": post.target,
        "content": post.content,
        "link": post.link,
        "due_at": format_timestamp(post.due_at),
        "published_at": format_timestamp(published_at),
    }
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")
