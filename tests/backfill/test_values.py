"""The SQL casts of a backfill agree with ``Mapping.to_columns(form="csv")``.

Each case runs the CSV text through ``cast_sql`` in Postgres and through
``FieldMapping.to_column`` in Python: both give the same value, or both
refuse it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from forcelink.connector.salesforce.backfill import cast_sql
from forcelink.mapping import FieldMapping
from forcelink.mapping.types import ConversionError, parse_column_type

CASES: list[tuple[str, str, str | None, str]] = [
    # (Salesforce type, column type, transform, CSV text)
    ("string", "varchar(80)", None, "plain"),
    ("string", "varchar(80)", None, ""),
    ("string", "text", None, 'quote " comma , newline \n end'),
    ("string", "text", "trim", "  \t padded \u00a0\u2003"),
    ("string", "text", "trim", "   "),
    ("string", "text", "trim", "nothing to trim"),
    ("string", "text", "trim", "x"),
    ("string", "text", "trim", "é at the ends ü"),
    ("string", "text", "trim", "\u3000ideographic space"),
    ("string", "text", "lower", "ÉCOLE Straße İSTANBUL ΟΔΟΣ"),
    ("string", "text", "upper", "straße ǆ école"),
    ("email", "text", "empty_to_null", "a@b.c"),
    ("id", "varchar(18)", None, "001000000000001AAA"),
    ("multipicklist", "varchar(255)", None, "North;South"),
    ("multipicklist", "text[]", None, "North;South;East"),
    ("multipicklist", "text[]", None, "North"),
    ("boolean", "boolean", None, "true"),
    ("boolean", "boolean", None, "false"),
    ("boolean", "boolean", None, "TRUE"),
    ("boolean", "boolean", None, "1"),
    ("boolean", "boolean", None, ""),
    ("int", "bigint", None, "42"),
    ("int", "bigint", None, "-7"),
    ("int", "bigint", None, "5.0"),
    ("int", "bigint", None, "1E3"),
    ("int", "bigint", None, "+12"),
    ("int", "integer", None, "2147483647"),
    ("int", "numeric", None, "12.000"),
    ("int", "text", None, "12.000"),
    ("double", "numeric", None, "0.1"),
    ("double", "numeric", None, "1E-10"),
    ("double", "numeric", None, "-123456789012345678901234567890.123456789"),
    ("double", "text", None, "1E-10"),
    ("double", "text", None, "12.50"),
    ("currency", "numeric(18,2)", None, "1234.5"),
    ("currency", "numeric(18,2)", None, "0.125"),
    ("percent", "numeric(5,2)", None, "12.34"),
    ("date", "date", None, "2024-02-29"),
    ("date", "text", None, "1999-12-31"),
    ("datetime", "timestamptz", None, "2024-01-02T03:04:05.123Z"),
    ("datetime", "timestamptz", None, "2024-01-02T03:04:05.000+0200"),
    ("datetime", "text", None, "2024-01-02T03:04:05.123Z"),
    ("datetime", "text", None, "2024-06-30T23:59:59.999-0130"),
    # refused by both
    ("boolean", "boolean", None, "yes"),
    ("int", "bigint", None, "5.5"),
    ("int", "bigint", None, "many"),
    ("double", "numeric", None, "1.2.3"),
    ("date", "date", None, "2024-02-30"),
    ("datetime", "timestamptz", None, "yesterday-ish"),
]


def _field(sf_type: str, column: str, transform: str | None) -> FieldMapping:
    return FieldMapping(
        field="X__c",
        column="x__c",
        sf_type=sf_type,
        column_type=parse_column_type(column),
        transform=transform,
    )


def _python(
    conn: psycopg.Connection[Any], f: FieldMapping, text: str
) -> tuple[str, Any]:
    """to_column's value as the column stores it (numeric(18,2) rounds)."""
    try:
        value = f.to_column(text, form="csv")
    except ConversionError:
        return "refused", None
    query = sql.SQL("SELECT %s::{}").format(sql.SQL(f.column_type.sql))
    row = conn.execute(query, (value,)).fetchone()
    assert row is not None
    return "ok", row[0]


def _postgres(
    conn: psycopg.Connection[Any], f: FieldMapping, text: str
) -> tuple[str, Any]:
    cast = cast_sql(f, sql.Identifier("v"))
    query = sql.SQL("SELECT ({})::{} FROM (SELECT %s::text AS v) AS given").format(
        cast, sql.SQL(f.column_type.sql)
    )
    try:
        with conn.transaction():
            row = conn.execute(query, (text,)).fetchone()
    except psycopg.errors.DataError:
        return "refused", None
    assert row is not None
    return "ok", row[0]


@pytest.mark.parametrize(("sf_type", "column", "transform", "text"), CASES)
def test_cast_sql__agrees_with_to_columns(
    database_url: str, sf_type: str, column: str, transform: str | None, text: str
) -> None:
    f = _field(sf_type, column, transform)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute("SET DateStyle = 'ISO, YMD'")
        got = _postgres(conn, f, text)
        expected = _python(conn, f, text)

    assert got == expected
