"""Every Salesforce type crosses to a real Postgres column and back unchanged."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from forcelink.mapping import types
from forcelink.mapping.types import ColumnType, Form

NUMERIC_18_2_MAX = "9999999999999999.99"

# (Salesforce type, column type or None for the default, form, wire value in,
#  wire value expected back)  -- "same" means the value comes back as it went.
SAME = object()
_tables = itertools.count()
CASES: list[tuple[str, str | None, Form, Any, Any]] = [
    ("string", None, "json", "plain", SAME),
    ("string", None, "json", "héllo wörld — 日本語 🚀 'quoted' \"double\"", SAME),
    ("textarea", None, "json", "line 1\nline 2\r\n\ttabbed", SAME),
    ("string", None, "json", None, SAME),
    ("string", None, "json", "", SAME),
    ("id", None, "json", "001000000000001AAA", SAME),
    ("reference", None, "json", "001000000000001AAA", SAME),
    ("picklist", None, "json", "Energy", SAME),
    ("email", None, "json", "zoë@example.com", SAME),
    ("phone", None, "json", "+47 22 33 44 55", SAME),
    ("url", None, "json", "https://example.com/ä?q=1", SAME),
    ("multipicklist", None, "json", "North;South;East", SAME),
    ("multipicklist", "text[]", "json", "North;South", SAME),
    ("multipicklist", "text[]", "json", None, SAME),
    ("multipicklist", None, "csv", "North;West", SAME),
    ("boolean", None, "json", True, SAME),
    ("boolean", None, "json", False, SAME),
    ("boolean", None, "json", None, SAME),
    ("boolean", None, "csv", "true", SAME),
    ("boolean", None, "csv", "false", SAME),
    ("boolean", None, "csv", "", "#N/A"),
    ("int", None, "json", 0, SAME),
    ("int", None, "json", -2147483648, SAME),
    ("int", None, "json", 9223372036854775807, SAME),
    ("int", None, "csv", "42", SAME),
    ("int", "numeric", "json", 7, SAME),
    ("double", None, "json", 1e-10, Decimal("1E-10")),
    ("double", None, "json", 0.1, Decimal("0.1")),
    (
        "double",
        None,
        "json",
        -1.7976931348623157e308,
        Decimal("-1.7976931348623157E+308"),
    ),
    ("double", None, "json", Decimal("123456789012345678.123456789"), SAME),
    ("double", None, "csv", "0.0000000001", SAME),
    ("double", None, "csv", "1E-10", "0.0000000001"),
    ("currency", "numeric(18,2)", "json", Decimal(NUMERIC_18_2_MAX), SAME),
    ("currency", "numeric(18,2)", "json", Decimal("-" + NUMERIC_18_2_MAX), SAME),
    ("currency", "numeric(18,2)", "json", 12, Decimal("12.00")),
    ("currency", "numeric(18,2)", "json", None, SAME),
    ("currency", "numeric(18,2)", "csv", NUMERIC_18_2_MAX, SAME),
    ("currency", "numeric(18,2)", "csv", "0.10", SAME),
    ("currency", "text", "json", Decimal("12.30"), SAME),
    ("percent", "numeric(5,2)", "json", Decimal("-100.25"), SAME),
    ("date", None, "json", "2026-01-02", SAME),
    ("date", None, "json", "1700-01-01", SAME),
    ("date", None, "json", "4000-12-31", SAME),
    ("date", None, "json", None, SAME),
    ("date", None, "csv", "2024-02-29", SAME),
    ("date", "text", "json", "2026-01-02", SAME),
    ("datetime", None, "json", "2026-01-02T03:04:05.000+0000", SAME),
    (
        "datetime",
        None,
        "json",
        "2026-01-02T03:04:05.123Z",
        "2026-01-02T03:04:05.123+0000",
    ),
    (
        "datetime",
        None,
        "json",
        "2026-01-02T03:04:05.123+05:30",
        "2026-01-01T21:34:05.123+0000",
    ),
    (
        "datetime",
        None,
        "json",
        "2026-03-29T01:30:00.000-08:00",
        "2026-03-29T09:30:00.000+0000",
    ),
    ("datetime", None, "json", "1970-01-01T00:00:00.000+0000", SAME),
    ("datetime", None, "json", "4000-12-31T23:59:59.999+0000", SAME),
    ("datetime", None, "json", None, SAME),
    ("datetime", None, "csv", "2026-01-02T03:04:05.000Z", SAME),
    ("datetime", None, "csv", "", "#N/A"),
    (
        "datetime",
        "text",
        "json",
        "2026-01-02T03:04:05.000+0100",
        "2026-01-02T02:04:05.000+0000",
    ),
]


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A session whose time zone is not UTC: values must not depend on it."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SET TimeZone = 'America/New_York'")
        yield connection


def _column_type(sf_type: str, written: str | None) -> ColumnType:
    if written is not None:
        return types.parse_column_type(written)
    return types.default_column_type(sf_type, length=255, precision=18, scale=2)


@pytest.mark.parametrize(
    ("sf_type", "written", "form", "wire", "expected"),
    CASES,
    ids=[f"{c[0]}-{c[1] or 'default'}-{c[2]}-{c[3]!r}"[:60] for c in CASES],
)
def test_round_trip_through_a_real_column(
    conn: psycopg.Connection[tuple[Any, ...]],
    sf_type: str,
    written: str | None,
    form: Form,
    wire: Any,
    expected: Any,
) -> None:
    column = _column_type(sf_type, written)
    table = f"rt_{next(_tables)}"  # a new table each time: no stale cached plans
    conn.execute(f"CREATE TEMP TABLE {table} (v {column.sql})")

    stored = types.to_column(types.from_salesforce(sf_type, wire, form), column)
    conn.execute(f"INSERT INTO {table} VALUES (%s)", (stored,))
    row = conn.execute(f"SELECT v FROM {table}").fetchone()
    assert row is not None
    back = types.to_salesforce(types.from_column(sf_type, row[0], column), form)

    want = wire if expected is SAME else expected
    if form == "csv" and want == "":
        want = types.CSV_NULL
    assert back == want
    assert type(back) is type(want) or isinstance(want, int | Decimal)


def test_datetimes_are_stored_as_the_same_instant_whatever_the_session_zone(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    column = types.parse_column_type("timestamptz")
    moment = types.to_column(
        types.from_salesforce("datetime", "2026-06-01T12:00:00.000+0200"), column
    )

    stored = conn.execute("SELECT %s::timestamptz AT TIME ZONE 'UTC'", (moment,))
    row = stored.fetchone()

    assert row is not None
    assert row[0] == datetime(2026, 6, 1, 10, 0)


def test_canonical_values_are_utc_and_decimal() -> None:
    moment = types.from_salesforce("datetime", "2026-01-02T03:04:05.000-0500")
    number = types.from_salesforce("double", 0.1)

    assert moment == datetime(2026, 1, 2, 8, 4, 5, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert number == Decimal("0.1")
    assert types.from_salesforce("date", "2026-01-02") == date(2026, 1, 2)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": Decimal(NUMERIC_18_2_MAX)}, '{"a": 9999999999999999.99}'),
        ({"a": Decimal("1E-10")}, '{"a": 0.0000000001}'),
        ([Decimal("-0.50"), 3, None, "x"], '[-0.50, 3, null, "x"]'),
        ({"s": "\u0000decimal:1"}, '{"s": "\\u0000decimal:1"}'),
    ],
)
def test_dumps_writes_decimals_exactly(value: Any, text: str) -> None:
    assert types.dumps(value) == text


def test_loads_reads_fractions_as_decimal() -> None:
    assert types.loads('{"a": 9999999999999999.99, "b": 3}') == {
        "a": Decimal(NUMERIC_18_2_MAX),
        "b": 3,
    }


@pytest.mark.parametrize(
    ("sf_type", "value", "words"),
    [
        ("int", "abc", "expected a number"),
        ("int", 1.5, "expected a whole number"),
        ("double", "NaN", "expected a finite number"),
        ("boolean", "yes", "expected true or false"),
        ("date", "2026-02-30", "expected a date"),
        ("datetime", "yesterday", "expected an ISO 8601 datetime"),
        ("string", {"nested": 1}, "expected text"),
    ],
)
def test_unfit_values_are_refused_with_the_reason(
    sf_type: str, value: Any, words: str
) -> None:
    with pytest.raises(types.ConversionError, match=words):
        types.from_salesforce(sf_type, value)
