"""Where mapping validation learns an org's objects and fields.

A describe provider is any callable taking an object name and returning the
object's REST describe (``GET /sobjects/<name>/describe``) as a dict, or None
when the org has no such object. Only these keys are read::

    {"name": "Account",
     "fields": [{"name", "type", "length", "precision", "scale",
                 "createable", "updateable", "nillable", "unique",
                 "externalId", "referenceTo", "relationshipName",
                 "compoundFieldName", "calculated"}, ...]}

Two providers are built here: ``schema_describe`` reads an emulator schema
file offline (the same information the emulator's describe serves), and
``org_describe`` asks a live org through simple-salesforce.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from forcelink.errors import SessionExpired, SourceUnavailable

Describe = dict[str, Any]
DescribeProvider = Callable[[str], Describe | None]

SYSTEM_READ_ONLY = frozenset(
    [
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
    ]
)
"""Fields no client can write in any org; mapped, they only ever read."""


class SchemaDescribe:
    """Answers from an emulator schema file (default: the emulator's default)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from forcelink.emulator import schema as emulator_schema

        loaded = emulator_schema.load(path)
        self._objects: dict[str, Describe] = {
            obj.name.lower(): {
                "name": obj.name,
                "custom": obj.custom,
                "keyPrefix": obj.key_prefix,
                "fields": [_field_describe(f) for f in obj.fields.values()],
            }
            for obj in loaded.objects.values()
        }
        self.object_names = [d["name"] for d in self._objects.values()]

    def __call__(self, name: str) -> Describe | None:
        return self._objects.get(name.lower())


def schema_describe(path: str | Path | None = None) -> DescribeProvider:
    """A provider answering offline from an emulator schema file."""
    return SchemaDescribe(path)


def _field_describe(f: Any) -> dict[str, Any]:
    return {
        "name": f.name,
        "type": f.type,
        "length": f.length,
        "precision": f.precision,
        "scale": f.scale,
        "createable": f.createable,
        "updateable": f.updateable,
        "nillable": f.nillable,
        "unique": f.unique,
        "externalId": f.external_id,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.relationship_name,
        "compoundFieldName": f.compound_of,
        "calculated": False,
    }


class OrgDescribe:
    """Asks a live org through a ``simple_salesforce.Salesforce`` client.

    Answers are cached for the provider's lifetime: one describe call per
    object. A missing object is None; an unreachable org or a dead session
    raise ``SourceUnavailable`` / ``SessionExpired``.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._cache: dict[str, Describe | None] = {}
        self.object_names: list[str] = []
        try:
            answer = client.restful("sobjects")
            self.object_names = [str(s["name"]) for s in answer.get("sobjects", [])]
        except Exception:
            # The list only improves "did you mean" suggestions; describing
            # single objects works without it.
            self.object_names = []

    def __call__(self, name: str) -> Describe | None:
        from simple_salesforce.exceptions import (
            SalesforceExpiredSession,
            SalesforceResourceNotFound,
        )

        key = name.lower()
        if key not in self._cache:
            try:
                self._cache[key] = dict(
                    self._client.restful(f"sobjects/{name}/describe")
                )
            except SalesforceResourceNotFound:
                self._cache[key] = None
            except SalesforceExpiredSession as error:
                raise SessionExpired("describe refused: session expired") from error
            except OSError as error:
                raise SourceUnavailable(f"cannot reach the org: {error}") from error
        return self._cache[key]


def org_describe(client: Any) -> DescribeProvider:
    """A provider asking a live org (a ``simple_salesforce.Salesforce``)."""
    return OrgDescribe(client)


def object_names(provider: DescribeProvider) -> list[str]:
    """The object names a provider knows of, for suggestions (may be empty)."""
    names = getattr(provider, "object_names", [])
    return [str(n) for n in names]


def fields_by_name(described: Describe) -> dict[str, dict[str, Any]]:
    """The describe's fields keyed by lower-case name (lookups ignore case)."""
    return {str(f["name"]).lower(): f for f in described.get("fields", [])}
