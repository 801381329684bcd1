"""Change events, built by Salesforce's Change Data Capture rules.

What each change type carries besides the header:

- CREATE and UNDELETE: every non-empty field of the record.
- UPDATE: only the fields whose value changed (set to null: present as
  null and listed in ``nulledFields``), plus LastModifiedDate, with their
  names in ``changedFields``.
- DELETE: nothing.

Address components travel nested under the compound name, and are named
with a dot in the header lists. Worked example: changing BillingCity and
clearing BillingState on an Account gives::

    {"BillingAddress": {"City": "Oslo", "State": null},
     "LastModifiedDate": "2026-01-02T03:04:05.000Z",
     "ChangeEventHeader": {"changeType": "UPDATE",
        "changedFields": ["BillingAddress.City", "BillingAddress.State",
                          "LastModifiedDate"],
        "nulledFields": ["BillingAddress.State"], "diffFields": [], ...}}

Id, IsDeleted and SystemModstamp never appear as fields: the id is in the
header's ``recordIds``. Datetimes use the event form ``...05.000Z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forcelink.emulator.clock import event_datetime
from forcelink.emulator.schema import ObjectDef

_NEVER = frozenset(["Id", "IsDeleted", "SystemModstamp"])
"""Fields that never appear in an event body (compound values are rebuilt)."""
OVERFLOW_LIMIT = 100_000
"""Changes per transaction that get events; the rest become GAP_OVERFLOW."""


@dataclass
class Change:
    """One record's change inside a transaction, before the header is known."""

    entity: str
    record_id: str
    change_type: str
    fields: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    nulled: list[str] = field(default_factory=list)


def full_change(obj: ObjectDef, record: dict[str, Any], change_type: str) -> Change:
    """A CREATE or UNDELETE: every non-empty field."""
    change = Change(obj.name, record["Id"], change_type)
    for name, value in record.items():
        if value is None or name in _NEVER or _is_compound(obj, name):
            continue
        _put(change, obj, name, _event_value(obj, name, value))
    return change


def update_change(obj: ObjectDef, old: dict[str, Any], new: dict[str, Any]) -> Change:
    """An UPDATE: changed and nulled fields, LastModifiedDate always."""
    change = Change(obj.name, new["Id"], "UPDATE")
    for name, value in new.items():
        if name in _NEVER or _is_compound(obj, name):
            continue
        if old.get(name) == value and name != "LastModifiedDate":
            continue
        label = _put(change, obj, name, _event_value(obj, name, value))
        change.changed.append(label)
        if value is None:
            change.nulled.append(label)
    return change


def delete_change(obj: ObjectDef, record_id: str) -> Change:
    return Change(obj.name, record_id, "DELETE")


def _is_compound(obj: ObjectDef, name: str) -> bool:
    definition = obj.fields.get(name)
    return definition is not None and definition.type == "address"


def _put(change: Change, obj: ObjectDef, name: str, value: Any) -> str:
    """Place one field in the payload; return its name for the header lists."""
    definition = obj.fields.get(name)
    if definition is None or definition.compound_of is None:
        change.fields[name] = value
        return name
    nested = change.fields.setdefault(definition.compound_of, {})
    nested[definition.component] = value
    return f"{definition.compound_of}.{definition.component}"


def _event_value(obj: ObjectDef, name: str, value: Any) -> Any:
    definition = obj.fields.get(name)
    if value is not None and definition is not None and definition.type == "datetime":
        return event_datetime(value)
    return value


def payload(change: Change, header: dict[str, Any]) -> dict[str, Any]:
    """The CometD ``data.payload`` object: header plus the change's fields."""
    body = dict(change.fields)
    body["ChangeEventHeader"] = {
        "entityName": change.entity,
        "recordIds": [change.record_id],
        "changeType": change.change_type,
        "changedFields": list(change.changed),
        "nulledFields": list(change.nulled),
        "diffFields": [],
        **header,
    }
    return body


def overflow_payload(entity: str, header: dict[str, Any]) -> dict[str, Any]:
    """The one GAP_OVERFLOW event per object past ``OVERFLOW_LIMIT`` changes."""
    return {
        "ChangeEventHeader": {
            "entityName": entity,
            "recordIds": [],
            "changeType": "GAP_OVERFLOW",
            "changedFields": [],
            "nulledFields": [],
            "diffFields": [],
            **header,
        }
    }
