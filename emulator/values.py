"""Checking and normalising field values the way Salesforce does on write.

``converter(field)`` returns a function that takes a value from a request
body and returns the stored form (the JSON form REST answers with), or
raises ``ApiError`` with the status code Salesforce uses for that mistake.
Converters are built once per field so that seeding a million records pays
only the check itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from forcelink.emulator.clock import format_datetime
from forcelink.emulator.errors import ApiError
from forcelink.emulator.ids import normalize
from forcelink.emulator.schema import FieldDef

Converter = Callable[[Any], Any]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def converter(field: FieldDef) -> Converter:
    """The value check for ``field``; None passes (nillable is checked apart)."""
    build = _BUILDERS.get(field.type, _text)
    check = build(field)

    def convert(value: Any) -> Any:
        if value is None or (value == "" and field.type != "boolean"):
            return None
        return check(value)

    return convert


def _deserialize_error(kind: str, value: Any) -> ApiError:
    token = "VALUE_STRING" if isinstance(value, str) else "VALUE_NUMBER_INT"
    if isinstance(value, bool):
        token = "VALUE_TRUE" if value else "VALUE_FALSE"
    elif isinstance(value, float):
        token = "VALUE_NUMBER_FLOAT"
    elif isinstance(value, (dict, list)):
        token = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY"
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {token} value {value} "
        "or request may be missing a required field",
    )


def _too_long(field: FieldDef, value: str) -> ApiError:
    return ApiError(
        400,
        "STRING_TOO_LONG",
        f"{field.label}: data value too large: {value[:40]} "
        f"(max length={field.length})",
        [field.name],
    )


def _text(field: FieldDef) -> Converter:
    limit = field.length or 255

    def check(value: Any) -> str:
        if isinstance(value, (dict, list)):
            raise _deserialize_error("string", value)
        text = value if isinstance(value, str) else _plain(value)
        if len(text) > limit:
            raise _too_long(field, text)
        return text

    return check


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _email(field: FieldDef) -> Converter:
    text = _text(field)

    def check(value: Any) -> str:
        email = str(text(value))
        if not _EMAIL.match(email):
            raise ApiError(
                400,
                "INVALID_EMAIL_ADDRESS",
                f"{field.label}: invalid email address: {email}",
                [field.name],
            )
        return email

    return check


def _picklist(field: FieldDef) -> Converter:
    allowed = set(field.values)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise _bad_picklist(field, value)
        return value

    return check


def _multipicklist(field: FieldDef) -> Converter:
    allowed = set(field.values)

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _bad_picklist(field, value)
        chosen = [part.strip() for part in value.split(";") if part.strip()]
        for part in chosen:
            if part not in allowed:
                raise _bad_picklist(field, part)
        return ";".join(chosen)

    return check


def _bad_picklist(field: FieldDef, value: Any) -> ApiError:
    return ApiError(
        400,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        f"{field.label}: bad value for restricted picklist field: {value}",
        [field.name],
    )


def _boolean(field: FieldDef) -> Converter:
    def check(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _deserialize_error("boolean", value)

    return check


def _int(field: FieldDef) -> Converter:
    def check(value: Any) -> int:
        number = _number(value, "int")
        if number != int(number):
            raise _deserialize_error("int", value)
        return int(number)

    return check


def _double(field: FieldDef) -> Converter:
    digits = max(field.precision - field.scale, 1)

    def check(value: Any) -> float | int:
        number = _number(value, "double")
        if abs(number) >= 10**digits:
            raise ApiError(
                400,
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{field.label}: value outside of valid range on numeric field: "
                f"{value}",
                [field.name],
            )
        return number

    return check


def _number(value: Any, kind: str) -> float | int:
    if isinstance(value, bool):
        raise _deserialize_error(kind, value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    raise _deserialize_error(kind, value)


def _date(field: FieldDef) -> Converter:
    def check(value: Any) -> str:
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                pass
        raise _deserialize_error("date", value)

    return check


def _datetime(field: FieldDef) -> Converter:
    def check(value: Any) -> str:
        if isinstance(value, str):
            parsed = parse_datetime(value)
            if parsed is not None:
                return format_datetime(parsed)
        raise _deserialize_error("datetime", value)

    return check


def parse_datetime(text: str) -> datetime | None:
    """Read the ISO forms clients send (``Z``, ``+0000``, ``+00:00``, no zone = UTC)."""
    candidate = text.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", candidate):
        candidate = candidate[:-2] + ":" + candidate[-2:]
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _reference(field: FieldDef) -> Converter:
    # Existence is checked by the org, which knows the records.
    def check(value: Any) -> str:
        record_id = normalize(value)
        if record_id is None:
            raise ApiError(
                400,
                "MALFORMED_ID",
                f"{field.label}: id value of incorrect type: {value}",
                [field.name],
            )
        return record_id

    return check


_BUILDERS: dict[str, Callable[[FieldDef], Converter]] = {
    "id": _reference,
    "string": _text,
    "textarea": _text,
    "phone": _text,
    "url": _text,
    "email": _email,
    "picklist": _picklist,
    "multipicklist": _multipicklist,
    "boolean": _boolean,
    "int": _int,
    "double": _double,
    "currency": _double,
    "percent": _double,
    "date": _date,
    "datetime": _datetime,
    "reference": _reference,
}
