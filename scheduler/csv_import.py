"""Import of scheduled posts from CSV files.

Two formats are read, and the first row that is not blank decides which:

- **bulk**: no header, three columns per row (date and time, message,
  optional link), the format that social media dashboards accept. Every row
  goes to one target, and the times are wall times in the ``tz`` zone.
- **header**: a header row naming the columns ``due_at``, ``target``,
  ``content`` and optionally ``link`` and ``timezone``, in any order.

Every row is validated with :func:`scheduler.model.new_post`, so target rules,
content limits and the DST gap and fold checks apply to it.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TextIO

from scheduler.errors import ImportFileError, PostschedError, RowError, ValidationError
from scheduler.model import Post, TargetRules, new_post, resolve_zone
from scheduler.store.base import Store

logger = logging.getLogger(__name__)

MAX_ROWS = 1_000_000
# Characters in one line of a file. A longer line is no row of either format
# (content, link and the rest are far shorter), and reading it whole would
# take memory without bound, as a file without newlines would.
MAX_LINE_CHARS = 1_048_576
MAX_LOGGED_ERRORS = 20
# Lines read between two progress reports.
PROGRESS_EVERY_LINES = 1000
DEFAULT_TARGET = "outbox:main"
DEFAULT_DATE_FORMAT = "ymd"
UTF8_BOM = "\ufeff"

HEADER_COLUMNS = ("due_at", "target", "content", "link", "timezone")
REQUIRED_HEADER_COLUMNS = ("due_at", "target", "content")
BULK_COLUMNS = "date and time, message, optional link"
MIN_BULK_COLUMNS = 2
MAX_BULK_COLUMNS = 3

DATE_PATTERNS = {"ymd": "%Y-%m-%d", "mdy": "%m/%d/%Y", "dmy": "%d/%m/%Y"}
TIME_PATTERNS = ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p")
DATE_EXAMPLES = {
    "ymd": "'2026-12-24 18:00'",
    "mdy": "'12/24/2026 18:00' or '12/24/2026 6:00 PM'",
    "dmy": "'24/12/2026 18:00'",
}

# Bytes that are not valid UTF-8 are decoded to lone surrogates in this range
# by the "surrogateescape" error handler.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class CsvFileError(PostschedError):
    """Raised when a CSV file cannot be read as a whole, so no row is imported."""


class ImportProgress(Protocol):
    """Receiver of progress reports during an import, such as a progress bar."""

    def lines_read(self, lines: int, bytes_read: int) -> None:
        """Report the lines, and their bytes, read from the file so far."""

    def storing(self, posts: int) -> None:
        """Report that parsing ended and ``posts`` posts are being stored."""


@dataclass(frozen=True)
class ParseResult:
    """Posts parsed from a CSV file, in file order, and the invalid rows."""

    posts: list[Post]
    errors: list[RowError]


@dataclass(frozen=True)
class ImportReport:
    """Outcome of an import: the posts added to the store and the rows skipped.

    ``errors`` is empty unless the import ran with ``skip_invalid``, because
    without it an invalid row makes import_file raise instead.
    """

    path: str
    posts: list[Post]
    errors: list[RowError]


def parse_csv(
    source: str | os.PathLike[str] | TextIO,
    *,
    rules: TargetRules,
    date_format: str = DEFAULT_DATE_FORMAT,
    tz: str | None = None,
    target: str = DEFAULT_TARGET,
    now: datetime | None = None,
    progress: ImportProgress | None = None,
) -> ParseResult:
    """Parse the rows of a CSV file into validated posts.

    ``source`` is a path, read as UTF-8, or a text stream. ``date_format``
    (``ymd``, ``mdy`` or ``dmy``) and ``target`` apply to bulk rows only.
    ``tz`` is the zone of times written without a UTC offset. An invalid row
    becomes a RowError with its 1-based line number. Fully blank lines are
    skipped. Raises CsvFileError when the file cannot be read, or has more
    than MAX_ROWS rows, and ValidationError for an unknown ``date_format``.
    ``progress``, when given, receives the lines read every
    PROGRESS_EVERY_LINES lines and at the end.
    """
    if date_format not in DATE_PATTERNS:
        raise ValidationError(
            "date_format", date_format, "unknown date format", "use ymd, mdy or dmy"
        )
    if tz is not None:
        # Checked once here, or every row would report the same unknown zone.
        resolve_zone(tz, "tz")
    builder = _PostBuilder(rules, date_format, tz, target, now)

    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            with open(
                source, encoding="utf-8", errors="surrogateescape", newline=""
            ) as stream:
                return _parse_lines(stream, name, builder, progress)
        except OSError as exc:
            raise CsvFileError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return _parse_lines(source, getattr(source, "name", "<stream>"), builder, progress)


def import_file(
    source: str | os.PathLike[str] | TextIO,
    store: Store,
    rules: TargetRules,
    *,
    skip_invalid: bool = False,
    date_format: str = DEFAULT_DATE_FORMAT,
    tz: str | None = None,
    target: str = DEFAULT_TARGET,
    now: datetime | None = None,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """Parse a CSV file, or text stream, and add its posts to ``store`` in one call.

    ``source`` is read as :func:`parse_csv` reads it. Raises ImportFileError,
    having added nothing, when a row is invalid, unless ``skip_invalid`` is
    set: then the valid rows are added and the invalid ones are returned in
    the report. The store adds all posts or none of them. ``store.add`` is
    not called when no row is valid. ``progress`` receives the lines read,
    then the number of posts stored.
    """
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
    else:
        name = getattr(source, "name", "<stream>")
    result = parse_csv(
        source,
        rules=rules,
        date_format=date_format,
        tz=tz,
        target=target,
        now=now,
        progress=progress,
    )
    if result.errors and not skip_invalid:
        raise ImportFileError(name, result.errors)

    if result.posts:
        if progress is not None:
            progress.storing(len(result.posts))
        store.add(result.posts)
    for error in result.errors[:MAX_LOGGED_ERRORS]:
        logger.info("skipped an invalid row of %s: %s", name, error)
    if len(result.errors) > MAX_LOGGED_ERRORS:
        hidden = len(result.errors) - MAX_LOGGED_ERRORS
        logger.info("skipped %d more invalid rows of %s", hidden, name)
    return ImportReport(name, result.posts, result.errors)


def parse_bulk_time(value: str, date_format: str) -> datetime:
    """Parse a bulk row's date and time, a naive datetime, seconds optional.

    Raises ValidationError naming the value and the expected format.
    """
    text = " ".join(value.split())
    for time_pattern in TIME_PATTERNS:
        try:
            return datetime.strptime(
                text, f"{DATE_PATTERNS[date_format]} {time_pattern}"
            )
        except ValueError:
            continue
    raise ValidationError(
        "due_at",
        value,
        f"not a date and time in the {date_format} format",
        f"write it like {DATE_EXAMPLES[date_format]}, "
        "or pick the matching --date-format (ymd, mdy or dmy)",
    )


class _InvalidRow(Exception):
    """Raised for a row whose shape is wrong, before any field is validated."""


@dataclass(frozen=True)
class _Record:
    """One CSV record, the line it starts on, and what makes it unusable if anything."""

    line: int
    cells: list[str]
    invalid_byte: int | None = None
    problem: str | None = None


class _TrackedLines:
    """Lines of a stream, with the offsets of invalid UTF-8 bytes noted on the way.

    ``invalid_bytes`` maps a 1-based line number to the byte offset, in the
    file, of the first invalid byte on that line. A UTF-8 BOM at the start
    of the file is dropped. ``progress`` gets the lines and bytes read so far.
    """

    def __init__(
        self, lines: Iterable[str], name: str, progress: ImportProgress | None = None
    ) -> None:
        self._lines = lines
        self._name = name
        self._progress = progress
        self.invalid_bytes: dict[int, int] = {}

    def __iter__(self) -> Iterator[str]:
        byte_offset = 0
        number = 0
        for number, line in enumerate(self._bounded_lines(), start=1):
            match = _ESCAPED_BYTE.search(line)
            if match is not None:
                self.invalid_bytes[number] = byte_offset + _utf8_length(
                    line[: match.start()]
                )
            byte_offset += _utf8_length(line)
            if self._progress is not None and number % PROGRESS_EVERY_LINES == 0:
                self._progress.lines_read(number, byte_offset)
            if number == 1 and line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
            yield line
        if self._progress is not None:
            self._progress.lines_read(number, byte_offset)

    def _bounded_lines(self) -> Iterator[str]:
        """Yield the lines, read at most MAX_LINE_CHARS at a time from a stream."""
        readline = getattr(self._lines, "readline", None)
        if readline is None:
            yield from self._lines
            return
        number = 0
        while line := readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise CsvFileError(
                    f"line {number} of {self._name} is longer than {MAX_LINE_CHARS:,} "
                    "characters, so it is no CSV row of either format; check that "
                    "this is the CSV file you meant"
                )
            yield line

    def first_invalid_byte(self, first_line: int, last_line: int) -> int | None:
        """Return the offset of the first invalid byte in the lines, or None."""
        for number in range(first_line, last_line + 1):
            if number in self.invalid_bytes:
                return self.invalid_bytes[number]
        return None


class _PostBuilder:
    """Builder of validated posts from the cells of one row, with the parse options."""

    def __init__(
        self,
        rules: TargetRules,
        date_format: str,
        tz: str | None,
        target: str,
        now: datetime | None,
    ) -> None:
        self.rules = rules
        self.date_format = date_format
        self.tz = tz
        self.target = target
        self.now = now

    def bulk_post(self, cells: list[str]) -> Post:
        """Build the post of a bulk row: date and time, message, optional link."""
        if not MIN_BULK_COLUMNS <= len(cells) <= MAX_BULK_COLUMNS:
            raise _InvalidRow(_bulk_column_count_reason(len(cells)))
        values = [cell.strip() for cell in cells] + [""]
        when, content, link = values[:3]
        if not when:
            raise ValidationError(
                "due_at",
                when,
                "empty",
                f"write the date and time in the first column, like "
                f"{DATE_EXAMPLES[self.date_format]}",
            )

        due_at = parse_bulk_time(when, self.date_format)
        return new_post(
            target=self.target,
            content=content,
            due_at=due_at,
            timezone=self.tz,
            link=link or None,
            rules=self.rules,
            now=self.now,
        )

    def header_post(self, columns: list[str], cells: list[str]) -> Post:
        """Build the post of a row in the header format."""
        if len(cells) != len(columns):
            raise _InvalidRow(
                f"{len(cells)} columns, expected {len(columns)} as in the header "
                f"({', '.join(columns)}); put a value that contains a comma "
                'in double quotes, such as "Doors open at 9, talks at 10"'
            )
        values = {
            column: cell.strip() for column, cell in zip(columns, cells, strict=True)
        }
        if not values["due_at"]:
            raise ValidationError(
                "due_at",
                "",
                "empty",
                "write the date and time, like '2026-12-24T18:00:00+01:00'",
            )

        return new_post(
            target=values["target"],
            content=values["content"],
            due_at=values["due_at"],
            timezone=values.get("timezone") or self.tz,
            link=values.get("link") or None,
            rules=self.rules,
            now=self.now,
        )


def _parse_lines(
    lines: Iterable[str],
    name: str,
    builder: _PostBuilder,
    progress: ImportProgress | None = None,
) -> ParseResult:
    posts: list[Post] = []
    errors: list[RowError] = []
    columns: list[str] | None = None
    first_row = True
    data_rows = 0

    for record in _read_records(lines, name, progress):
        if record.problem is not None:
            errors.append(RowError(record.line, record.problem))
            continue
        if _is_blank(record.cells):
            continue
        if first_row:
            first_row = False
            if _looks_like_header(record.cells):
                try:
                    columns = _read_header(record.cells)
                except _InvalidRow as exc:
                    errors.append(RowError(record.line, str(exc)))
                    return ParseResult(posts, errors)
                continue

        data_rows += 1
        if data_rows > MAX_ROWS:
            raise CsvFileError(
                f"{name} has more than {MAX_ROWS:,} rows; "
                f"split it into files of at most {MAX_ROWS:,} rows"
            )
        try:
            posts.append(_build_post(record, name, builder, columns))
        except (_InvalidRow, ValidationError) as exc:
            errors.append(RowError(record.line, str(exc)))
    return ParseResult(posts, errors)


def _build_post(
    record: _Record, name: str, builder: _PostBuilder, columns: list[str] | None
) -> Post:
    if record.invalid_byte is not None:
        raise _InvalidRow(
            f"invalid UTF-8 in {name} at byte offset {record.invalid_byte}; "
            "save the file with the UTF-8 encoding"
        )
    if columns is None:
        return builder.bulk_post(record.cells)
    return builder.header_post(columns, record.cells)


def _read_records(
    lines: Iterable[str], name: str, progress: ImportProgress | None = None
) -> Iterator[_Record]:
    """Yield the CSV records of ``lines`` with the line each one starts on."""
    tracked = _TrackedLines(lines, name, progress)
    reader = csv.reader(tracked, strict=True)
    last_line = 0
    while True:
        first_line = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last_line = reader.line_num
            yield _Record(
                first_line,
                [],
                problem=f"invalid CSV row: {exc}; "
                "check the row for a double quote that is never closed",
            )
            continue
        except UnicodeDecodeError as exc:
            raise CsvFileError(
                f"{name} is not valid UTF-8 after line {reader.line_num} "
                f"({exc.reason}); save the file with the UTF-8 encoding"
            ) from exc

        last_line = reader.line_num
        invalid_byte = tracked.first_invalid_byte(first_line, last_line)
        yield _Record(first_line, cells, invalid_byte=invalid_byte)


def _read_header(cells: list[str]) -> list[str]:
    columns = [cell.strip().lower() for cell in cells]
    unknown = [column for column in columns if column not in HEADER_COLUMNS]
    missing = [column for column in REQUIRED_HEADER_COLUMNS if column not in columns]
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    known = ", ".join(HEADER_COLUMNS)
    if unknown:
        raise _InvalidRow(
            f"unknown column(s) in the header: {', '.join(map(repr, unknown))}; "
            f"use only {known}"
        )
    if missing:
        raise _InvalidRow(
            f"missing column(s) in the header: {', '.join(missing)}; "
            "the header needs due_at, target and content, and may add link and timezone"
        )
    if repeated:
        raise _InvalidRow(
            f"repeated column(s) in the header: {', '.join(repeated)}; "
            "name each column once"
        )
    return columns


def _looks_like_header(cells: list[str]) -> bool:
    # A header row contains the required names, and its first cell is no date: a
    # bulk row whose message is "Content" stays a bulk row. Only the required
    # names count, so a bulk file whose first row has a "Link" heading is
    # still read as bulk.
    if not cells or any(character.isdigit() for character in cells[0]):
        return False
    return any(cell.strip().lower() in REQUIRED_HEADER_COLUMNS for cell in cells)


def _is_blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _bulk_column_count_reason(count: int) -> str:
    if count > MAX_BULK_COLUMNS:
        return (
            f"{count} columns, expected at most {MAX_BULK_COLUMNS} ({BULK_COLUMNS}); "
            "put a message that contains a comma in double quotes, "
            'such as "Doors open at 9, talks at 10"'
        )
    return (
        f"{count} column, expected {MIN_BULK_COLUMNS} or {MAX_BULK_COLUMNS} "
        f"({BULK_COLUMNS}); separate the columns with commas"
    )


def _utf8_length(text: str) -> int:
    try:
        return len(text.encode("utf-8", errors="surrogateescape"))
    except UnicodeEncodeError:
        # A lone surrogate from a text stream, not from an undecodable byte.
        return len(text.encode("utf-8", errors="surrogatepass"))
