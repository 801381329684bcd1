"""Check a mapping's ``soql_filter``: a SOQL WHERE condition, without ``WHERE``.

The text is parsed by the emulator's SOQL parser (the same grammar the local
org serves) inside ``SELECT Id FROM <object> WHERE <filter>``, then every
field it names is looked up in the object's describe. Problems come back as
messages, never raised: validation reports them all at once.
"""

from __future__ import annotations

import difflib
from typing import Any

from forcelink.emulator import soql as emulator_soql
from forcelink.emulator.errors import ApiError
from forcelink.mapping.describe import Describe, DescribeProvider, fields_by_name


def check_filter(
    text: str, described: Describe | None, describe: DescribeProvider
) -> list[str]:
    """Messages about ``text`` as a filter on ``described`` (empty: it is fine)."""
    if not text.strip():
        return ["soql_filter is empty (leave it out to sync every record)"]
    if text.lstrip().upper().startswith("WHERE "):
        return ["soql_filter is the condition only: leave out the word WHERE"]
    name = described["name"] if described else "Account"
    prefix = f"SELECT Id FROM {name} WHERE "
    try:
        query = emulator_soql.parse(prefix + text)
    except ApiError as error:
        return [f"bad soql_filter: {_syntax_message(error, len(prefix))}"]
    if described is None or query.where is None:
        return []
    return [
        message
        for path in _paths(query.where)
        if (message := _check_path(path, described, describe))
    ]


def _syntax_message(error: ApiError, offset: int) -> str:
    """Salesforce's message, with the column counted within the filter."""
    lines = error.message.strip().splitlines()
    reason = lines[-1] if lines else error.error_code
    for line in lines:
        if line.startswith("ERROR at Row:"):
            column = int(line.rsplit(":", 1)[1]) - offset
            return f"{reason} at column {max(column, 1)}"
    return reason


def _paths(condition: Any) -> list[tuple[str, ...]]:
    if isinstance(condition, emulator_soql.Compare):
        return [condition.path.parts]
    if isinstance(condition, emulator_soql.Not):
        return _paths(condition.term)
    return [p for term in condition.terms for p in _paths(term)]


def _check_path(
    parts: tuple[str, ...], described: Describe, describe: DescribeProvider
) -> str | None:
    """A message if the first one or two steps of a field path do not exist."""
    fields = fields_by_name(described)
    if len(parts) == 1:
        if parts[0].lower() in fields:
            return None
        return f"soql_filter: unknown field {parts[0]!r} on {described['name']}" + (
            _suggest(parts[0], [str(f["name"]) for f in fields.values()])
        )
    relations = {
        str(f["relationshipName"]).lower(): f
        for f in fields.values()
        if f.get("relationshipName")
    }
    via = relations.get(parts[0].lower())
    if via is None:
        return f"soql_filter: unknown relationship {parts[0]!r} on {described['name']}"
    parent = describe(str(via["referenceTo"][0])) if via.get("referenceTo") else None
    if parent is None or len(parts) > 2:
        return None
    if parts[1].lower() in fields_by_name(parent):
        return None
    return f"soql_filter: unknown field {parts[1]!r} on {parent['name']}"


def _suggest(name: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    guess = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[guess[0]]!r}?)" if guess else ""
