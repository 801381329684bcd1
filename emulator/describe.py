"""Describe results built from the schema, shaped like Salesforce's.

Only the keys clients commonly read are filled with meaning (name, label,
type, length, precision, scale, createable, updateable, nillable, unique,
externalId, referenceTo, relationshipName, picklistValues,
compoundFieldName, defaultValue); the rest carry fixed plausible values so
that code indexing them does not fail.
"""

from __future__ import annotations

from typing import Any

from forcelink.emulator.schema import FieldDef, ObjectDef, Schema

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
    "address": "urn:address",
}


def urls(obj: ObjectDef, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "sobject": base,
        "describe": f"{base}/describe",
        "rowTemplate": f"{base}/{{ID}}",
    }


def global_describe(schema: Schema, version: str) -> dict[str, Any]:
    return {
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": [_summary(obj, version) for obj in schema.objects.values()],
    }


def _summary(obj: ObjectDef, version: str) -> dict[str, Any]:
    return {
        "name": obj.name,
        "label": obj.label,
        "labelPlural": obj.label + "s",
        "keyPrefix": obj.key_prefix,
        "custom": obj.custom,
        "customSetting": False,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "undeletable": True,
        "queryable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": True,
        "replicateable": True,
        "layoutable": True,
        "mergeable": False,
        "feedEnabled": False,
        "urls": urls(obj, version),
    }


def describe(schema: Schema, obj: ObjectDef, version: str) -> dict[str, Any]:
    """The full ``/sobjects/<name>/describe`` answer."""
    return {
        **_summary(obj, version),
        "fields": [_field(obj, f) for f in obj.fields.values()],
        "childRelationships": _children(schema, obj),
        "recordTypeInfos": [],
        "supportedScopes": [{"label": "All", "name": "everything"}],
    }


def _field(obj: ObjectDef, f: FieldDef) -> dict[str, Any]:
    return {
        "name": f.name,
        "label": f.label,
        "type": f.type,
        "soapType": _SOAP_TYPES.get(f.type, "xsd:string"),
        "length": f.length,
        "byteLength": f.length * 3,
        "precision": f.precision,
        "scale": f.scale,
        "digits": f.precision if f.type == "int" else 0,
        "createable": f.createable,
        "updateable": f.updateable,
        "nillable": f.nillable,
        "unique": f.unique,
        "externalId": f.external_id,
        "idLookup": f.name == "Id" or f.external_id,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.relationship_name,
        "picklistValues": [_value(v) for v in f.values],
        "restrictedPicklist": bool(f.values),
        "compoundFieldName": f.compound_of,
        "defaultValue": f.default,
        "defaultedOnCreate": f.default is not None or not f.createable,
        "custom": f.name.endswith("__c"),
        "calculated": False,
        "autoNumber": False,
        "nameField": f.name == "Name"
        or (obj.name == "Contact" and f.name == "LastName"),
        "filterable": f.type not in ("textarea", "address"),
        "sortable": f.type not in ("textarea", "multipicklist", "address"),
        "groupable": f.type not in ("textarea", "double", "address", "datetime"),
        "caseSensitive": False,
        "htmlFormatted": False,
        "encrypted": False,
    }


def _value(value: str) -> dict[str, Any]:
    return {
        "active": True,
        "defaultValue": False,
        "label": value,
        "value": value,
        "validFor": None,
    }


def _children(schema: Schema, parent: ObjectDef) -> list[dict[str, Any]]:
    children = []
    for obj in schema.objects.values():
        for f in obj.fields.values():
            if f.type == "reference" and parent.name in f.reference_to:
                children.append(
                    {
                        "childSObject": obj.name,
                        "field": f.name,
                        "relationshipName": _plural(obj.name),
                        "cascadeDelete": False,
                    }
                )
    return children


def _plural(name: str) -> str:
    if name.endswith("__c"):
        return name[:-3] + "s__r"
    return name + "s"
