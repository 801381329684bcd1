"""Type conversions, fed with the text real Postgres writes for each type."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from forcelink.connector.postgres.values import converter_for, parse_array

CASES: list[tuple[str, str, Any]] = [
    ("bool", "true", True),
    ("bool", "false", False),
    ("int2", "-5", -5),
    ("int4", "42", 42),
    ("int8", "9007199254740993", 9007199254740993),
    ("float8", "1.5", 1.5),
    ("float8", "0.1", 0.1),
    ("float8", "NaN", "NaN"),
    ("float4", "-Infinity", "-Infinity"),
    ("numeric", "12.300", "12.300"),
    ("numeric", "12345678901234567890.123456789", "12345678901234567890.123456789"),
    ("numeric", "NaN", "NaN"),
    ("timestamptz", "2024-03-01 10:00:00+02", "2024-03-01T08:00:00Z"),
    ("timestamptz", "2024-03-01 10:00:00.123456+00", "2024-03-01T10:00:00.123456Z"),
    ("timestamptz", "infinity", "infinity"),
    ("timestamptz", "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
    ("timestamp", "2024-03-01 10:00:00", "2024-03-01T10:00:00"),
    ("date", "2024-02-29", "2024-02-29"),
    ("jsonb", '{"b": [1, "ü"], "a": null}', {"a": None, "b": [1, "ü"]}),
    ("json", " [1, 2.5] ", [1, 2.5]),
    ("bytea", "\\x00ff10", "AP8Q"),
    ("text", 'Zoë ☃ 𝄞 — "quoted", comma', 'Zoë ☃ 𝄞 — "quoted", comma'),
    ("varchar(10)", "a,b", "a,b"),
    ("bpchar(4)", "ab", "ab  "),
    (
        "uuid",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    ),
    ("int4[]", "{1,NULL,3}", [1, None, 3]),
    ("int4[]", "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    ("int4[]", "[0:1]={5,6}", [5, 6]),
    ("int8[]", "{}", []),
    (
        "text[]",
        '{"a b","c\\"d","NULL",NULL,"",ü}',
        ["a b", 'c"d', "NULL", None, "", "ü"],
    ),
    ("text[]", '{"x,y","back\\\\slash","{brace}"}', ["x,y", "back\\slash", "{brace}"]),
    ("numeric[]", "{1.10,2}", ["1.10", "2"]),
    ("bool[]", "{t,f}", [True, False]),
    ("float8[]", "{1.5,NaN}", [1.5, "NaN"]),
    ("date[]", "{2024-01-01,NULL}", ["2024-01-01", None]),
    ("timestamptz[]", '{"2024-01-01 00:00:00+00"}', ["2024-01-01T00:00:00Z"]),
    ("jsonb[]", '{"{\\"a\\": 1}"}', [{"a": 1}]),
    ("varchar[]", "{x,y}", ["x", "y"]),
    ("bytea[]", '{"\\\\x01"}', ["AQ=="]),
]


@pytest.fixture(scope="module")
def conn(database_url: str) -> psycopg.Connection[Any]:
    connection = psycopg.connect(database_url, autocommit=True)
    # The session settings the reader's replication connection uses.
    connection.execute("SET DateStyle = ISO; SET TimeZone = 'UTC'")
    connection.execute("SET extra_float_digits = 3")
    return connection


@pytest.mark.parametrize(("type_name", "literal", "expected"), CASES)
def test_converter__postgres_text_output(
    conn: psycopg.Connection[Any], type_name: str, literal: str, expected: Any
) -> None:
    # The raw text result is the type's output function: what pgoutput sends.
    cursor = conn.execute(
        f"SELECT (%s::text)::{type_name}, %s::regtype::oid", (literal, type_name)
    )
    result = cursor.pgresult
    assert result is not None
    raw, oid = result.get_value(0, 0), result.get_value(0, 1)
    assert raw is not None and oid is not None
    text = bytes(raw).decode()

    assert converter_for(int(bytes(oid)))(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "1,2", "{1,2", '{"open}', "{1,2}x"],
)
def test_parse_array__rejects_malformed(text: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        parse_array(text)


def test_converter__unknown_type_keeps_text() -> None:
    assert converter_for(999_999)("anything") == "anything"
