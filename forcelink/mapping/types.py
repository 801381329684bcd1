"""Salesforce field types, their Postgres columns, and lossless conversions.

Each Salesforce type has a default Postgres type and a few allowed
overrides. A value crosses in two steps, so every (Salesforce type, column
type) pair is covered by a small amount of code::

    Salesforce wire value  --parse-->  canonical Python  --to column-->  column value
    (JSON or Bulk CSV)                 (Decimal, date,                   (what psycopg
                                        aware UTC datetime, ...)          reads/writes)

and back the same way. The canonical values are chosen to lose nothing:

=============  ===================================  ==========================
Salesforce     default column                       canonical Python value
=============  ===================================  ==========================
id, reference  varchar(18)                          str
string, ...    varchar(length)                      str
multipicklist  varchar(length) as ``A;B;C``         str (``text[]``: list)
boolean        boolean                              bool
int            bigint                               int
double         numeric (no scale: any decimal)      Decimal
currency       numeric(precision, scale)            Decimal
percent        numeric(precision, scale)            Decimal
date           date                                 datetime.date
datetime       timestamptz (stored in UTC)          aware datetime in UTC
=============  ===================================  ==========================

Numbers never pass through ``float`` when it can be avoided: read
Salesforce JSON with ``parse_float=Decimal`` (simple-salesforce takes that
option) and encode outgoing JSON with ``dumps`` below, which writes Decimals
as exact JSON numbers. A float that does arrive is taken at its shortest
``repr`` (``0.1`` stays ``0.1``). Datetimes keep Salesforce's millisecond
precision; a Postgres value with microseconds is truncated to milliseconds on
its way to Salesforce, which stores no finer.
"""

from __future__ import annotations

import difflib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Form = Literal["json", "csv"]
"""Salesforce wire forms: REST/CDC JSON, or Bulk API 2.0 CSV (all strings)."""

TEXT_TYPES = frozenset(
    {"id", "string", "textarea", "picklist", "email", "phone", "url", "reference"}
    | {"encryptedstring", "combobox"}
)
DECIMAL_TYPES = frozenset(["double", "currency", "percent"])
SALESFORCE_TYPES = frozenset(
    {*TEXT_TYPES, *DECIMAL_TYPES, "multipicklist", "boolean", "int", "date"}
    | {"datetime", "address"}
)

CSV_NULL = "#N/A"
"""Bulk API 2.0 ingest: this value sets a field to null (empty means unchanged)."""


class ConversionError(ValueError):
    """A value does not fit its field's type; the message names value and type."""


# ---------------------------------------------------------------- column types

ColumnKind = Literal[
    "text", "integer", "numeric", "boolean", "date", "timestamptz", "text[]"
]


@dataclass(frozen=True)
class ColumnType:
    """A parsed Postgres column type: ``numeric(18,2)`` -> kind numeric, (18, 2)."""

    kind: ColumnKind
    sql: str
    """As DDL takes it and ``format_type`` reports it: ``character varying(80)``."""
    length: int | None = None
    precision: int | None = None
    scale: int | None = None


_TYPE_PATTERN = re.compile(
    r"^\s*(?P<name>[a-z ]+?)\s*(?:\(\s*(?P<a>\d+)\s*(?:,\s*(?P<b>\d+)\s*)?\))?"
    r"\s*(?P<array>\[\])?\s*$",
    re.IGNORECASE,
)
_ALIASES: dict[str, tuple[ColumnKind, str]] = {
    "varchar": ("text", "character varying"),
    "character varying": ("text", "character varying"),
    "text": ("text", "text"),
    "integer": ("integer", "integer"),
    "int": ("integer", "integer"),
    "int4": ("integer", "integer"),
    "bigint": ("integer", "bigint"),
    "int8": ("integer", "bigint"),
    "numeric": ("numeric", "numeric"),
    "decimal": ("numeric", "numeric"),
    "boolean": ("boolean", "boolean"),
    "bool": ("boolean", "boolean"),
    "date": ("date", "date"),
    "timestamptz": ("timestamptz", "timestamp with time zone"),
    "timestamp with time zone": ("timestamptz", "timestamp with time zone"),
}
KNOWN_COLUMN_TYPES = sorted(_ALIASES)


def parse_column_type(text: str) -> ColumnType:
    """Parse a type override; ConversionError says what is accepted."""
    match = _TYPE_PATTERN.match(text)
    name = match["name"].lower().strip() if match else ""
    if name.startswith("timestamp") and name not in _ALIASES:
        raise ConversionError(
            f"column type {text!r} drops the time zone: use timestamptz "
            "(forcelink stores datetimes in UTC)"
        )
    if not match or name not in _ALIASES:
        guess = difflib.get_close_matches(name, KNOWN_COLUMN_TYPES, n=1)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        raise ConversionError(
            f"unknown column type {text!r}{hint}; known: "
            + ", ".join(KNOWN_COLUMN_TYPES)
        )
    kind, canonical = _ALIASES[name]
    a = int(match["a"]) if match["a"] else None
    b = int(match["b"]) if match["b"] else None
    if match["array"]:
        if kind != "text" or a is not None:
            raise ConversionError(
                f"only text[] is supported as an array (got {text!r})"
            )
        return ColumnType("text[]", "text[]")
    if kind == "text" and canonical == "character varying":
        if a is None or b is not None or a < 1:
            raise ConversionError(f"varchar needs one positive length (got {text!r})")
        return ColumnType("text", f"character varying({a})", length=a)
    if kind == "numeric" and a is not None:
        scale = b or 0
        if not 1 <= a <= 1000 or scale > a:
            raise ConversionError(f"numeric(precision, scale) out of range: {text!r}")
        return ColumnType("numeric", f"numeric({a},{scale})", precision=a, scale=scale)
    if a is not None:
        raise ConversionError(f"{name} takes no size (got {text!r})")
    return ColumnType(kind, canonical)


_ALLOWED_KINDS: dict[str, frozenset[str]] = {
    "text": frozenset(["text"]),
    "multipicklist": frozenset(["text", "text[]"]),
    "boolean": frozenset(["boolean"]),
    "int": frozenset(["integer", "numeric", "text"]),
    "decimal": frozenset(["numeric", "text"]),
    "date": frozenset(["date", "text"]),
    "datetime": frozenset(["timestamptz", "text"]),
}


def _family(sf_type: str) -> str:
    if sf_type in TEXT_TYPES:
        return "text"
    if sf_type in DECIMAL_TYPES:
        return "decimal"
    return sf_type


def allowed_kinds(sf_type: str) -> frozenset[str]:
    """The column kinds that can hold this Salesforce type without loss."""
    return _ALLOWED_KINDS.get(_family(sf_type), frozenset())


def default_column_type(
    sf_type: str, length: int = 0, precision: int = 0, scale: int = 0
) -> ColumnType:
    """The column a field gets unless the mapping overrides its type."""
    family = _family(sf_type)
    if sf_type in ("id", "reference"):
        return parse_column_type("varchar(18)")
    if family == "text" or sf_type == "multipicklist":
        return parse_column_type(f"varchar({length})" if length > 0 else "text")
    if sf_type == "double" or (family == "decimal" and precision <= 0):
        return parse_column_type("numeric")
    if family == "decimal":
        return parse_column_type(f"numeric({precision},{scale})")
    simple = {"boolean": "boolean", "int": "bigint", "date": "date"}
    if sf_type in simple:
        return parse_column_type(simple[sf_type])
    if sf_type == "datetime":
        return parse_column_type("timestamptz")
    raise ConversionError(f"Salesforce type {sf_type!r} has no column type")


# ------------------------------------------------- Salesforce wire -> canonical


def _parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ConversionError(f"expected a number, got {value!r}")
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ConversionError(f"expected a number, got {value!r}") from None
    if not number.is_finite():
        raise ConversionError(f"expected a finite number, got {value!r}")
    return number


def _parse_int(value: Any) -> int:
    number = _parse_decimal(value)
    if number != number.to_integral_value():
        raise ConversionError(f"expected a whole number, got {value!r}")
    return int(number)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ConversionError(f"expected true or false, got {value!r}")


def _parse_date(value: Any) -> date:
    if isinstance(value, datetime):
        raise ConversionError(f"expected a date, got a datetime {value!r}")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConversionError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise ConversionError(
                f"expected an ISO 8601 datetime, got {value!r}"
            ) from None
    if moment.tzinfo is None:
        # Salesforce never sends a naive datetime; a naive one comes from a
        # timestamp column or a careless caller and is taken as UTC.
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _parse_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list):
        raise ConversionError(f"expected text, got {value!r}")
    return str(value)


def _parse_multi(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ";".join(_parse_text(v) for v in value)
    return _parse_text(value)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "text": _parse_text,
    "multipicklist": _parse_multi,
    "boolean": _parse_bool,
    "int": _parse_int,
    "decimal": _parse_decimal,
    "date": _parse_date,
    "datetime": _parse_datetime,
}


def from_salesforce(sf_type: str, value: Any, form: Form = "json") -> Any:
    """A Salesforce value (JSON or CSV form) as its canonical Python value.

    ``None`` stays ``None``; in CSV form the empty string is null too, as in
    Bulk API query results.
    """
    if value is None or (form == "csv" and value == ""):
        return None
    return _PARSERS[_family(sf_type)](value)


# ------------------------------------------------- canonical <-> column value


def to_column(value: Any, column: ColumnType) -> Any:
    """A canonical value as the column holds it (None stays None)."""
    if value is None:
        return None
    if column.kind == "text[]":
        return value.split(";") if value else []
    if column.kind == "text":
        return _wire_text(value)
    return value


def from_column(sf_type: str, value: Any, column: ColumnType) -> Any:
    """A column value as the canonical value of its Salesforce type."""
    if value is None:
        return None
    if column.kind == "text[]":
        return ";".join(value)
    return _PARSERS[_family(sf_type)](value)


# ------------------------------------------------- canonical -> Salesforce wire


def _wire_text(value: Any) -> str:
    """The Salesforce text form of a canonical value (also the CSV form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _decimal_text(value: Decimal) -> str:
    """Plain decimal notation, never an exponent (``1E-10`` -> ``0.0000000001``)."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def to_salesforce(value: Any, form: Form = "json") -> Any:
    """A canonical value in Salesforce's wire form.

    JSON: numbers stay ``Decimal``/``int`` (encode with ``dumps``), booleans
    stay ``bool``, dates and datetimes become Salesforce's strings
    (``2026-01-02``, ``2026-01-02T03:04:05.000+0000``). CSV: every value is a
    string and None is ``#N/A`` (Bulk API 2.0's way to clear a field).
    """
    if value is None:
        return CSV_NULL if form == "csv" else None
    if form == "csv":
        return _wire_text(value)
    if isinstance(value, datetime):
        return _wire_text(value)[:-1] + "+0000"
    if isinstance(value, date):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    """JSON text with every Decimal written as an exact JSON number.

    The standard encoder knows no Decimal and ``float`` would round it, so
    Decimals are first written as strings carrying a random per-call mark,
    then the marked strings are replaced by their bare digits. The mark
    starts with NUL and is new each call, so ordinary text never matches.
    """
    nonce = secrets.token_hex(8)

    def mark(item: Any) -> str:
        if isinstance(item, Decimal):
            return f"\x00{nonce}:{_decimal_text(item)}"
        raise TypeError(f"{type(item).__name__} is not JSON serializable")

    token = re.compile(r'"\\u0000' + nonce + r':(-?[0-9.]+)"')
    return token.sub(r"\1", json.dumps(value, default=mark))


def loads(text: str | bytes) -> Any:
    """JSON text with numbers that have a fraction read as Decimal, not float."""
    return json.loads(text, parse_float=Decimal)
