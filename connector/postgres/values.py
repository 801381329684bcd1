"""Column values: Postgres text output → JSON-safe Python values, by type OID.

pgoutput sends every column in its type's text output form (the reader asks
for ``DateStyle=ISO``, ``TimeZone=UTC`` and ``extra_float_digits=3`` so that
form is fixed). ``converter_for(type_oid)`` returns the function that turns
that text into a value ``json.dumps`` can write without losing anything:

=================  ============================  =========================
Postgres type      text from the server          value in the event
=================  ============================  =========================
bool               ``t``                         ``True``
int2/int4/int8     ``42``                        ``42``
float4/float8      ``1.5`` / ``NaN``             ``1.5`` / ``"NaN"``
numeric            ``12.300``                    ``"12.300"`` (exact)
timestamptz        ``2024-03-01 10:00:00+00``    ``"2024-03-01T10:00:00Z"``
timestamp          ``2024-03-01 10:00:00``       ``"2024-03-01T10:00:00"``
date               ``2024-03-01``                ``"2024-03-01"``
json / jsonb       ``{"a": 1}``                  ``{"a": 1}`` (parsed)
bytea              ``\\x0102``                   ``"AQI="`` (base64)
arrays of these    ``{1,NULL,3}``                ``[1, None, 3]``
anything else      as sent                       the text, unchanged
=================  ============================  =========================

Numeric stays a string because a float would round it (``0.1 + 0.2``) and
Salesforce currency fields must keep every digit. Values Python cannot hold
as the natural type (``infinity`` timestamps, BC dates, ``NaN``) stay text.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

Converter = Callable[[str], Any]


def _text(value: str) -> str:
    return value


def _bool(value: str) -> bool:
    return value == "t"


def _float(value: str) -> float | str:
    number = float(value)
    # JSON has no NaN or infinity; keep Postgres's own spelling instead.
    return value if math.isnan(number) or math.isinf(number) else number


def _timestamptz(value: str) -> str:
    # The reader's sessions run with TimeZone=UTC, so the usual form is
    # '2024-03-01 10:00:00.5+00': rewrite it without parsing (hot path).
    if value.endswith("+00") and len(value) >= 22 and value[10] == " ":
        return f"{value[:10]}T{value[11:-3]}Z"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # 'infinity', '-infinity', years BC or beyond 9999
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _timestamp(value: str) -> str:
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


def _json(value: str) -> Any:
    return json.loads(value)


def _bytea(value: str) -> str:
    # bytea_output=hex (the default since 9.0): '\x' then two hex digits a byte.
    return base64.b64encode(bytes.fromhex(value[2:])).decode("ascii")


_SCALARS: dict[int, Converter] = {
    16: _bool,
    20: int,
    21: int,
    23: int,
    26: int,
    700: _float,
    701: _float,
    1700: _text,
    1184: _timestamptz,
    1114: _timestamp,
    1082: _text,
    114: _json,
    3802: _json,
    17: _bytea,
}

# Array type OID → element type OID, for the element types above and text-like
# ones (text, varchar, bpchar, uuid, time, name).
_ARRAYS: dict[int, int] = {
    1000: 16,
    1016: 20,
    1005: 21,
    1007: 23,
    1028: 26,
    1021: 700,
    1022: 701,
    1231: 1700,
    1185: 1184,
    1115: 1114,
    1182: 1082,
    199: 114,
    3807: 3802,
    1001: 17,
    1009: 25,
    1015: 1043,
    1014: 1042,
    2951: 2950,
    1183: 1083,
    1003: 19,
}


def converter_for(type_oid: int) -> Converter:
    """The function turning this type's text output into an event value."""
    scalar = _SCALARS.get(type_oid)
    if scalar is not None:
        return scalar
    element = _ARRAYS.get(type_oid)
    if element is not None:
        return _array_converter(_SCALARS.get(element, _text))
    return _text


def _array_converter(element: Converter) -> Converter:
    def convert(value: str) -> Any:
        return parse_array(value, element)

    return convert


def parse_array(text: str, element: Converter = _text) -> list[Any]:
    """Parse Postgres array output (``{1,2}``, ``{{a,"b c"},{NULL,d}}``).

    Quoted elements are taken literally after removing backslash escapes; an
    unquoted ``NULL`` is ``None``. A leading bounds decoration (``[0:1]=``,
    written when the lower bound is not 1) is dropped: JSON lists start at 0.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    if not text.startswith("{"):
        raise ValueError(f"not an array literal: {text[:40]!r}")
    result, end = _parse_level(text, 1, element)
    if end != len(text):
        raise ValueError(f"trailing text after array literal: {text[end:][:40]!r}")
    return result


def _parse_level(text: str, pos: int, element: Converter) -> tuple[list[Any], int]:
    """Parse from just after a ``{`` to just after its matching ``}``."""
    items: list[Any] = []
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            nested, pos = _parse_level(text, pos + 1, element)
            items.append(nested)
        elif char == '"':
            raw, pos = _quoted(text, pos + 1)
            items.append(element(raw))
        else:
            end = pos
            while text[end] not in ",}":
                end += 1
            raw = text[pos:end]
            items.append(None if raw.upper() == "NULL" else element(raw))
            pos = end
        if text[pos] == "}":
            return items, pos + 1
        pos += 1  # the ',' between elements


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted element from just after its opening quote."""
    out: list[str] = []
    while True:
        char = text[pos]
        if char == "\\":
            out.append(text[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
