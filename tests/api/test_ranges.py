"""Range and conditional arithmetic, as a table (the HTTP tests cover the wiring)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.datastructures import Headers

from forcelink.api.http import Unsatisfiable, http_date, not_modified, parse_range

ETAG = '"abc"'
MODIFIED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=900-", (900, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=500-5000", (500, 999)),
        ("bytes=999-999", (999, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: whole object
        ("bytes=9-5", None),  # backwards: ignored
        ("items=0-9", None),  # unknown unit: ignored
        ("bytes=abc", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(Headers({"range": header}), 1000, ETAG, MODIFIED) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0"])
def test_parse_range__unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(Headers({"range": header}), 1000, ETAG, MODIFIED)


@pytest.mark.parametrize(
    ("if_range", "ranged"),
    [(ETAG, True), ('"old"', False), (http_date(MODIFIED), True), ("yesterday", False)],
)
def test_if_range(if_range: str, ranged: bool) -> None:
    headers = Headers({"range": "bytes=0-9", "if-range": if_range})
    assert (parse_range(headers, 1000, ETAG, MODIFIED) is not None) is ranged


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"if-none-match": ETAG}, True),
        ({"if-none-match": f'"x", W/{ETAG}'}, True),
        ({"if-none-match": "*"}, True),
        ({"if-none-match": '"x"'}, False),
        ({"if-modified-since": http_date(MODIFIED)}, True),
        ({"if-modified-since": "Thu, 01 Jan 2026 00:00:00 GMT"}, False),
        # If-None-Match wins over the date when both are sent.
        ({"if-none-match": '"x"', "if-modified-since": http_date(MODIFIED)}, False),
        ({}, False),
    ],
)
def test_not_modified(headers: dict[str, str], expected: bool) -> None:
    assert not_modified(Headers(headers), ETAG, MODIFIED) is expected
