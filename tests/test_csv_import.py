"""CSV import in the bulk and header formats, with every kind of bad row."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler import csv_import
from scheduler.config import Settings, WebhookSettings
from scheduler.csv_import import CsvFileError, import_file, parse_csv
from scheduler.errors import ImportFileError, ValidationError
from scheduler.model import Post
from scheduler.publishers import Publishers
from scheduler.store.sql import SqlStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class RecordingStore(SqlStore):
    """A SQLite store that also records the batches given to add()."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:///{path}")
        self.batches: list[list[Post]] = []

    def add(self, posts: Sequence[Post]) -> None:
        self.batches.append(list(posts))
        super().add(posts)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordingStore]:
    recording = RecordingStore(tmp_path / "posts.db")
    yield recording
    recording.close()


@pytest.fixture
def rules(tmp_path: Path) -> Iterator[Publishers]:
    """Publishers with the outbox and one webhook account, ``alerts``."""
    webhooks = {
        "alerts": WebhookSettings(
            url="https://example.org/hooks/alerts", max_length=280
        )
    }
    publishers = Publishers(Settings(data_dir=tmp_path, webhooks=webhooks))
    yield publishers
    publishers.close()


def parse_text(
    text: str, rules: Publishers, **options: object
) -> csv_import.ParseResult:
    return parse_csv(io.StringIO(text, newline=""), rules=rules, now=NOW, **options)  # type: ignore[arg-type]


def write(tmp_path: Path, data: str | bytes, name: str = "posts.csv") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return path


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Bulk format


def test_bulk_row_fields(rules: Publishers) -> None:
    result = parse_text(
        "2026-12-07 09:00,Doors open at 9.,https://example.org/devday\n",
        rules,
        tz="Europe/Berlin",
    )

    [post] = result.posts
    assert result.errors == []
    assert post.due_at == utc(2026, 12, 7, 8, 0)
    assert post.timezone == "Europe/Berlin"
    assert post.content == "Doors open at 9."
    assert post.link == "https://example.org/devday"
    assert post.target == "outbox:main"
    assert post.created_at == NOW


def test_bulk_link_optional(rules: Publishers) -> None:
    result = parse_text(
        "2026-12-07 09:00,two columns\n2026-12-07 09:00,empty link,\n", rules, tz="UTC"
    )

    assert [post.link for post in result.posts] == [None, None]
    assert result.errors == []


def test_bulk_target_option(rules: Publishers) -> None:
    result = parse_text(
        "2026-12-07 09:00,Alert!\n", rules, tz="UTC", target="webhook:alerts"
    )

    assert result.posts[0].target == "webhook:alerts"


def test_bulk_quoted_comma_and_newline(rules: Publishers) -> None:
    text = (
        '2026-12-07 09:00,"Coffee, tea\nand cake",https://example.org/a\n'
        "2026-12-07 10:00,bad date?,x,y\n"
    )

    result = parse_text(text, rules, tz="UTC")

    assert result.posts[0].content == "Coffee, tea\nand cake"
    assert [error.line for error in result.errors] == [3]


def test_bulk_cells_stripped(rules: Publishers) -> None:
    result = parse_text(
        "2026-12-07 09:00 ,  Hello  , https://example.org/a \n", rules, tz="UTC"
    )

    assert result.posts[0].content == "Hello"
    assert result.posts[0].link == "https://example.org/a"


def test_bulk_crlf_line_endings(rules: Publishers) -> None:
    result = parse_text(
        "2026-12-07 09:00,one\r\n2026-12-07 09:01,two\r\n", rules, tz="UTC"
    )

    assert [post.content for post in result.posts] == ["one", "two"]


@pytest.mark.parametrize(
    ("date_format", "written", "expected"),
    [
        ("ymd", "2026-12-24 18:00", utc(2026, 12, 24, 17, 0)),
        ("ymd", "2026-12-24 18:00:30", utc(2026, 12, 24, 17, 0, 30)),
        ("ymd", "2026-12-24 6:00 PM", utc(2026, 12, 24, 17, 0)),
        ("mdy", "12/24/2026 18:00", utc(2026, 12, 24, 17, 0)),
        ("mdy", "12/24/2026 18:00:05", utc(2026, 12, 24, 17, 0, 5)),
        ("mdy", "12/24/2026 6:00 PM", utc(2026, 12, 24, 17, 0)),
        ("mdy", "12/24/2026 6:00 pm", utc(2026, 12, 24, 17, 0)),
        ("mdy", "12/24/2026 12:00 AM", utc(2026, 12, 23, 23, 0)),
        ("mdy", "12/24/2026 12:30 PM", utc(2026, 12, 24, 11, 30)),
        ("mdy", "12/24/2026 6:00:45 AM", utc(2026, 12, 24, 5, 0, 45)),
        ("mdy", "1/5/2027 9:00", utc(2027, 1, 5, 8, 0)),
        ("dmy", "24/12/2026 18:00", utc(2026, 12, 24, 17, 0)),
        ("dmy", "24/12/2026 18:00:59", utc(2026, 12, 24, 17, 0, 59)),
        ("dmy", "05/01/2027 09:00", utc(2027, 1, 5, 8, 0)),
    ],
)
def test_bulk_date_formats(
    rules: Publishers, date_format: str, written: str, expected: datetime
) -> None:
    result = parse_text(
        f"{written},hello\n", rules, tz="Europe/Berlin", date_format=date_format
    )

    assert result.errors == []
    assert result.posts[0].due_at == expected


def test_bulk_without_tz(rules: Publishers) -> None:
    result = parse_text("2026-12-07 09:00,hello\n", rules)

    [error] = result.errors
    assert error.line == 1
    assert "no time zone given" in error.reason
    assert "Europe/Berlin" in error.reason
    assert "--tz on the command line" in error.reason
    assert "timezone field" in error.reason


def test_bulk_unknown_tz(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_text("2026-12-07 09:00,hello\n" * 3, rules, tz="Europe/Atlantis")

    assert raised.value.field == "tz"
    assert raised.value.value == "Europe/Atlantis"
    assert "unknown time zone" in raised.value.reason


def test_bulk_dst_gap(rules: Publishers) -> None:
    result = parse_text("2026-03-29 02:30,hello\n", rules, tz="Europe/Berlin")

    [error] = result.errors
    assert error.line == 1
    assert "does not exist in Europe/Berlin" in error.reason


def test_bulk_dst_fold(rules: Publishers) -> None:
    result = parse_text("2026-10-25 02:30,hello\n", rules, tz="Europe/Berlin")

    assert "occurs twice in Europe/Berlin" in result.errors[0].reason


def test_bulk_with_own_header_row(rules: Publishers) -> None:
    result = parse_text("Date,Message,Link\n2026-12-07 09:00,hello\n", rules, tz="UTC")

    [error] = result.errors
    assert error.line == 1
    assert "invalid due_at 'Date'" in error.reason
    assert len(result.posts) == 1


# Header format


def test_header_rows(rules: Publishers) -> None:
    text = (
        "due_at,target,content,link,timezone\n"
        "2026-12-07T09:00:00+01:00,outbox:main,With offset,https://example.org/a,\n"
        "2026-12-07 09:00,webhook:alerts,With zone,,America/New_York\n"
        "2026-12-07T09:00:00Z,outbox:news,In UTC,,\n"
    )

    result = parse_text(text, rules)

    assert result.errors == []
    assert [post.due_at for post in result.posts] == [
        utc(2026, 12, 7, 8, 0),
        utc(2026, 12, 7, 14, 0),
        utc(2026, 12, 7, 9, 0),
    ]
    assert [post.target for post in result.posts] == [
        "outbox:main",
        "webhook:alerts",
        "outbox:news",
    ]
    assert [post.timezone for post in result.posts] == [
        "UTC+01:00",
        "America/New_York",
        "UTC",
    ]
    assert [post.link for post in result.posts] == ["https://example.org/a", None, None]


def test_header_any_order_and_case(rules: Publishers) -> None:
    text = " Content ,TARGET,Due_At\nhello,outbox:main,2026-12-07T09:00:00Z\n"

    result = parse_text(text, rules)

    assert result.posts[0].content == "hello"
    assert result.posts[0].due_at == utc(2026, 12, 7, 9, 0)


def test_header_tz_option_fallback(rules: Publishers) -> None:
    text = "due_at,target,content\n2026-12-07 09:00,outbox:main,hello\n"

    result = parse_text(text, rules, tz="Europe/Berlin")

    assert result.posts[0].due_at == utc(2026, 12, 7, 8, 0)


def test_header_naive_without_zone(rules: Publishers) -> None:
    text = "due_at,target,content\n2026-12-07 09:00,outbox:main,hello\n"

    result = parse_text(text, rules)

    [error] = result.errors
    assert error.line == 2
    assert "no time zone given" in error.reason


def test_header_ignores_bulk_options(rules: Publishers) -> None:
    text = "due_at,target,content\n2026-12-07T09:00:00Z,outbox:news,hello\n"

    result = parse_text(text, rules, target="webhook:alerts", date_format="mdy")

    assert result.posts[0].target == "outbox:news"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("due_at,target,conent", "unknown column(s) in the header: 'conent'"),
        ("due_at,target", "missing column(s) in the header: content"),
        ("due_at,content,link", "missing column(s) in the header: target"),
        ("due_at,target,content,content", "repeated column(s) in the header: content"),
    ],
)
def test_header_invalid(rules: Publishers, header: str, reason: str) -> None:
    result = parse_text(f"\n{header}\n2026-12-07T09:00:00Z,outbox:main,hello\n", rules)

    [error] = result.errors
    assert error.line == 2
    assert reason in error.reason
    assert result.posts == []


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2026-12-07T09:00:00Z,outbox:main", "2 columns, expected 3"),
        ("2026-12-07T09:00:00Z,outbox:main,a,b", "4 columns, expected 3"),
        (",outbox:main,hello", "invalid due_at '': empty"),
        (
            "2026-12-07T09:00:00Z,outbox,hello",
            "invalid target 'outbox': not of the form PUBLISHER:ACCOUNT",
        ),
        ("2026-12-07T09:00:00Z,webhook:sales,hello", "'sales' is not configured"),
        ("2026-12-07T09:00:00Z,outbox:../x,hello", "invalid target 'outbox:../x'"),
        ("07.12.2026 09:00,outbox:main,hello", "not an ISO 8601 date and time"),
        ("2026-12-07T09:00:00Z,outbox:main,   ", "invalid content '': empty"),
    ],
)
def test_header_row_invalid(rules: Publishers, row: str, reason: str) -> None:
    result = parse_text(f"due_at,target,content\n{row}\n", rules)

    [error] = result.errors
    assert error.line == 2
    assert reason in error.reason


def test_header_with_bom(rules: Publishers, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffdue_at,target,content\n2026-12-07T09:00:00Z,outbox:main,hello\n",
    )

    result = parse_csv(path, rules=rules)

    assert result.errors == []
    assert len(result.posts) == 1


# Malformed rows in the bulk format


@pytest.mark.parametrize(
    ("row", "date_format", "reason"),
    [
        ("2026-12-07 09:00", "ymd", "1 column, expected 2 or 3"),
        (
            "2026-12-07 09:00,Coffee, tea and cake,https://example.org/a",
            "ymd",
            "4 columns, expected at most 3",
        ),
        (
            "2026-12-07 09:00,Coffee, tea and cake,https://example.org/a",
            "ymd",
            "in double quotes",
        ),
        (",hello", "ymd", "invalid due_at '': empty"),
        ("   ,hello", "ymd", "invalid due_at '': empty"),
        (
            "07.12.2026 09:00,hello",
            "ymd",
            "invalid due_at '07.12.2026 09:00': not a date and time in the ymd format",
        ),
        ("07.12.2026 09:00,hello", "ymd", "write it like '2026-12-24 18:00'"),
        ("2026-12-07,hello", "ymd", "not a date and time in the ymd format"),
        ("2026-12-07 25:00,hello", "ymd", "not a date and time in the ymd format"),
        ("2026-02-30 09:00,hello", "ymd", "not a date and time in the ymd format"),
        ("2026-12-07 18:00 PM,hello", "ymd", "not a date and time in the ymd format"),
        ("2026-12-07 09:00,", "ymd", "invalid content '': empty"),
        ("2026-12-07 09:00,a\x00b", "ymd", "NUL character"),
        (
            f"2026-12-07 09:00,{'x' * 10_001}",
            "ymd",
            "over the limit of 10000 for outbox:main",
        ),
        (
            "2026-12-07 09:00,hello,example.org/page",
            "ymd",
            "invalid link 'example.org/page'",
        ),
    ],
)
def test_bulk_row_invalid(
    rules: Publishers, row: str, date_format: str, reason: str
) -> None:
    text = f"2026-12-07 08:00,first\n{row}\n2026-12-07 10:00,last\n"

    result = parse_text(text, rules, tz="UTC", date_format=date_format)

    [error] = result.errors
    assert error.line == 2
    assert reason in error.reason
    assert [post.content for post in result.posts] == ["first", "last"]


@pytest.mark.parametrize(
    ("written", "date_format", "reason"),
    [
        (
            "2026-12-07 09:00",
            "mdy",
            "invalid due_at '2026-12-07 09:00': not a date and time in the mdy format",
        ),
        ("2026-12-07 09:00", "mdy", "'12/24/2026 6:00 PM'"),
        (
            "24/12/2026 18:00",
            "mdy",
            "pick the matching --date-format (ymd, mdy or dmy)",
        ),
        ("12/24/2026 18:00", "dmy", "not a date and time in the dmy format"),
        ("12/24/2026 18:00", "dmy", "write it like '24/12/2026 18:00'"),
        ("24/12/2026 18:00", "ymd", "write it like '2026-12-24 18:00'"),
    ],
)
def test_bulk_date_wrong_format(
    rules: Publishers, written: str, date_format: str, reason: str
) -> None:
    result = parse_text(
        f"\n{written},hello\n", rules, tz="UTC", date_format=date_format
    )

    [error] = result.errors
    assert error.line == 2
    assert reason in error.reason


def test_blank_lines_skipped(rules: Publishers) -> None:
    text = "\n2026-12-07 08:00,first\n\n   \n,,\n \t, \n2026-12-07 09:00,bad,x,y\n\n"

    result = parse_text(text, rules, tz="UTC")

    assert [post.content for post in result.posts] == ["first"]
    assert [error.line for error in result.errors] == [7]


def test_line_numbers_after_multiline_cell(rules: Publishers) -> None:
    text = '2026-12-07 08:00,"one\ntwo\nthree"\n2026-12-07 99:00,bad\n"x\ny",hello\n'

    result = parse_text(text, rules, tz="UTC")

    assert [error.line for error in result.errors] == [4, 5]


def test_bom_accepted(rules: Publishers, tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff2026-12-07 08:00,first\n")

    result = parse_csv(path, rules=rules, tz="UTC")

    assert result.errors == []
    assert result.posts[0].due_at == utc(2026, 12, 7, 8, 0)


def test_invalid_utf8(rules: Publishers, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        b"2026-12-07 08:00,ok\n2026-12-07 09:00,Gr\xfc\xdfe\n2026-12-07 10:00,ok\n",
    )

    result = parse_csv(path, rules=rules, tz="UTC")

    [error] = result.errors
    assert error.line == 2
    assert f"invalid UTF-8 in {path} at byte offset 39" in error.reason
    assert "UTF-8 encoding" in error.reason
    assert len(result.posts) == 2


def test_invalid_utf8_offset_after_bom(rules: Publishers, tmp_path: Path) -> None:
    path = write(
        tmp_path, "\ufeff2026-12-07 08:00,é\n".encode() + b"2026-12-07 09:00,\xff\n"
    )

    result = parse_csv(path, rules=rules, tz="UTC")

    assert "byte offset 40" in result.errors[0].reason


def test_invalid_utf8_in_text_stream(rules: Publishers) -> None:
    stream = io.TextIOWrapper(
        io.BytesIO(b"2026-12-07 08:00,ok\n2026-12-07 09:00,\xff\n"), encoding="utf-8"
    )

    with pytest.raises(CsvFileError) as caught:
        parse_csv(stream, rules=rules, tz="UTC")

    assert "is not valid UTF-8" in str(caught.value)


def test_unclosed_quote(rules: Publishers, tmp_path: Path) -> None:
    path = write(
        tmp_path, '2026-12-07 08:00,"' + "x" * 200_000 + "\n2026-12-07 09:00,ok\n"
    )

    result = parse_csv(path, rules=rules, tz="UTC")

    [error] = result.errors
    assert error.line == 1
    assert "invalid CSV row" in error.reason
    assert "double quote" in error.reason


def test_row_cap(rules: Publishers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_import, "MAX_ROWS", 3)
    text = "".join(f"2026-12-07 0{hour}:00,post {hour}\n\n" for hour in range(4))

    with pytest.raises(CsvFileError) as caught:
        parse_text(text, rules, tz="UTC")

    assert "more than 3 rows" in str(caught.value)


def test_row_cap_not_reached(
    rules: Publishers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_import, "MAX_ROWS", 3)
    text = "".join(f"2026-12-07 0{hour}:00,post {hour}\n\n" for hour in range(3))

    result = parse_text(text, rules, tz="UTC")

    assert len(result.posts) == 3


def test_missing_file(rules: Publishers, tmp_path: Path) -> None:
    with pytest.raises(CsvFileError) as caught:
        parse_csv(tmp_path / "nope.csv", rules=rules, tz="UTC")

    assert "nope.csv" in str(caught.value)


def test_empty_file(rules: Publishers, tmp_path: Path) -> None:
    result = parse_csv(write(tmp_path, ""), rules=rules, tz="UTC")

    assert result.posts == []
    assert result.errors == []


def test_unknown_date_format(rules: Publishers) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_text("2026-12-07 08:00,first\n", rules, tz="UTC", date_format="iso")

    assert caught.value.field == "date_format"
    assert "ymd, mdy or dmy" in caught.value.fix


# import_file


def test_import_bad_row_adds_nothing(
    rules: Publishers, tmp_path: Path, store: RecordingStore
) -> None:
    existing = parse_text("2026-12-06 08:00,already stored\n", rules, tz="UTC").posts
    store.add(existing)
    store.batches.clear()
    path = write(
        tmp_path,
        "2026-12-07 08:00,first\n2026-12-07 25:00,bad\n2026-12-07 10:00,last\n",
    )

    with pytest.raises(ImportFileError) as caught:
        import_file(path, store, rules, tz="UTC")

    assert store.batches == []
    assert store.list_posts() == existing
    assert [error.line for error in caught.value.errors] == [2]
    assert str(path) in str(caught.value)
    assert "line 2: invalid due_at '2026-12-07 25:00'" in str(caught.value)


def test_import_skip_invalid(
    rules: Publishers, tmp_path: Path, store: RecordingStore
) -> None:
    path = write(
        tmp_path,
        "2026-12-07 08:00,first\n2026-12-07 25:00,bad\n2026-12-07 10:00,last\n",
    )

    report = import_file(path, store, rules, skip_invalid=True, tz="UTC")

    assert len(store.batches) == 1
    assert [post.content for post in store.batches[0]] == ["first", "last"]
    assert report.posts == store.batches[0]
    assert [error.line for error in report.errors] == [2]
    assert report.path == str(path)


def test_import_valid_file_one_add(
    rules: Publishers, tmp_path: Path, store: RecordingStore
) -> None:

    report = import_file(EXAMPLES / "schedule.csv", store, rules, tz="Europe/Berlin")

    assert len(store.batches) == 1
    assert len(store.batches[0]) == len(report.posts)
    assert report.errors == []


def test_import_empty_file_no_add(
    rules: Publishers, tmp_path: Path, store: RecordingStore
) -> None:

    report = import_file(write(tmp_path, "\n\n"), store, rules, tz="UTC")

    assert store.batches == []
    assert report.posts == []


def test_import_all_invalid_skipped(
    rules: Publishers, tmp_path: Path, store: RecordingStore
) -> None:

    report = import_file(
        write(tmp_path, "bad,row\n"), store, rules, skip_invalid=True, tz="UTC"
    )

    assert store.batches == []
    assert len(report.errors) == 1


# Shipped examples


def test_example_bulk_parses(rules: Publishers) -> None:
    result = parse_csv(EXAMPLES / "schedule.csv", rules=rules, tz="Europe/Berlin")

    assert result.errors == []
    assert len(result.posts) >= 30


def test_example_bulk_shared_minutes(rules: Publishers) -> None:
    result = parse_csv(EXAMPLES / "schedule.csv", rules=rules, tz="Europe/Berlin")

    groups = [
        count
        for count in Counter(post.due_at for post in result.posts).values()
        if count > 1
    ]
    assert len(groups) >= 3
    assert all(2 <= count <= 4 for count in groups)


def test_example_bulk_has_links(rules: Publishers) -> None:
    result = parse_csv(EXAMPLES / "schedule.csv", rules=rules, tz="Europe/Berlin")

    assert any(post.link for post in result.posts)
    assert any(post.link is None for post in result.posts)


def test_example_header_parses(rules: Publishers) -> None:
    result = parse_csv(EXAMPLES / "schedule-header.csv", rules=rules)

    assert result.errors == []
    assert len(result.posts) == 5


def test_unterminated_quote_rejected(rules: Publishers) -> None:
    text = '2027-06-01 10:00,"unterminated\n2027-06-01 11:00,fine\n'
    result = parse_text(text, rules, tz="UTC")
    assert result.posts == []
    assert len(result.errors) == 1


def test_bulk_message_named_like_header(rules: Publishers) -> None:
    text = "2027-06-01 10:00,Content\n2027-06-01 11:00,second post\n"
    result = parse_text(text, rules, tz="UTC")
    assert [post.content for post in result.posts] == ["Content", "second post"]
    assert result.errors == []


class RecordingProgress:
    """Progress receiver that keeps every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int]] = []
        self.stored: list[int] = []

    def lines_read(self, lines: int, bytes_read: int) -> None:
        self.reports.append((lines, bytes_read))

    def storing(self, posts: int) -> None:
        self.stored.append(posts)


def test_import_reports_progress(
    tmp_path: Path, store: RecordingStore, rules: Publishers
) -> None:
    row = "2030-01-01 10:00,Doors open\n"
    rows = 2 * csv_import.PROGRESS_EVERY_LINES + 5
    path = write(tmp_path, row * rows)
    progress = RecordingProgress()

    report = import_file(path, store, rules, tz="UTC", progress=progress)

    every = csv_import.PROGRESS_EVERY_LINES
    assert len(report.posts) == rows
    assert progress.reports == [
        (every, every * len(row)),
        (2 * every, 2 * every * len(row)),
        (rows, path.stat().st_size),
    ]
    assert progress.stored == [rows]


def test_invalid_import_never_reports_storing(
    tmp_path: Path, store: RecordingStore, rules: Publishers
) -> None:
    path = write(tmp_path, "2030-01-01 10:00,fine\n2030-02-30 10:00,bad\n")
    progress = RecordingProgress()

    with pytest.raises(ImportFileError):
        import_file(path, store, rules, tz="UTC", progress=progress)

    assert progress.reports == [(2, path.stat().st_size)]
    assert progress.stored == []


def test_line_without_end_rejected(rules: Publishers, tmp_path: Path) -> None:
    endless = tmp_path / "endless.csv"
    endless.write_text("x" * (csv_import.MAX_LINE_CHARS + 10))
    with pytest.raises(CsvFileError) as caught:
        parse_csv(endless, rules=rules, now=NOW)
    message = str(caught.value)
    assert "line 1 of" in message
    assert f"longer than {csv_import.MAX_LINE_CHARS:,} characters" in message


def test_line_at_limit_parsed(rules: Publishers) -> None:
    content = "y" * 5000
    stream = io.StringIO(f"2030-01-01 10:00,{content}\n", newline="")
    result = parse_csv(stream, rules=rules, tz="UTC", now=NOW)  # type: ignore[arg-type]
    assert result.errors == []
    assert result.posts[0].content == content
