"""The local org's schema: objects and fields declared in a YAML file.

``load(path)`` reads a file like ``schemas/default.yaml`` and returns a
``Schema``. Every object gets the system fields (Id, IsDeleted, CreatedDate,
CreatedById, LastModifiedDate, LastModifiedById, SystemModstamp), and every
``address`` field named ``<Prefix>Address`` expands into its real component
fields ``<Prefix>Street`` ... ``<Prefix>Longitude``, each with
``compound_of`` naming the address. The address field itself is read-only,
as in Salesforce: clients write the components.

Names are looked up case-insensitively, as Salesforce does (``find``), but
always reported in the case the schema declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forcelink.errors import ConfigError

DEFAULT_SCHEMA = Path(__file__).resolve().parent / "schemas" / "default.yaml"

TEXT_TYPES = frozenset(
    {"id", "string", "textarea", "picklist", "multipicklist", "reference"}
    | {"email", "phone", "url"}
)
FIELD_TYPES = TEXT_TYPES | {"boolean", "int", "double", "currency", "percent"}
FIELD_TYPES |= {"date", "datetime", "address"}
NUMBER_TYPES = frozenset(["int", "double", "currency", "percent"])
SYSTEM_FIELDS = (
    "Id",
    "IsDeleted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
)
ADDRESS_COMPONENTS: tuple[tuple[str, str, int], ...] = (
    ("Street", "textarea", 255),
    ("City", "string", 40),
    ("State", "string", 80),
    ("PostalCode", "string", 20),
    ("Country", "string", 80),
    ("Latitude", "double", 0),
    ("Longitude", "double", 0),
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PREFIX = re.compile(r"^[0-9A-Za-z]{3}$")


@dataclass
class FieldDef:
    name: str
    type: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    unique: bool = False
    external_id: bool = False
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    values: list[str] = field(default_factory=list)
    compound_of: str | None = None
    """For an address component (BillingCity): the address (BillingAddress)."""
    default: Any = None
    label: str = ""

    @property
    def component(self) -> str:
        """The key inside a nested compound value: ``City`` for BillingCity."""
        if self.compound_of is None:
            return self.name
        prefix = self.compound_of[: -len("Address")]
        return self.name[len(prefix) :]

    @property
    def required(self) -> bool:
        """Must be given on create (Salesforce's REQUIRED_FIELD_MISSING)."""
        return (
            not self.nillable
            and self.createable
            and self.default is None
            and self.type != "boolean"
        )


@dataclass
class ValidationRule:
    """A declared rule on one field: ``min``, ``max``, ``pattern`` or ``required``."""

    name: str
    field: str
    rule: dict[str, Any]
    message: str


@dataclass
class ObjectDef:
    name: str
    key_prefix: str
    label: str
    custom: bool
    fields: dict[str, FieldDef]
    validation_rules: list[ValidationRule] = field(default_factory=list)
    _lower: dict[str, FieldDef] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lower = {name.lower(): f for name, f in self.fields.items()}

    def find(self, name: str) -> FieldDef | None:
        """The field called ``name`` in any case, or None."""
        return self._lower.get(name.lower())

    @property
    def columns(self) -> list[str]:
        """The stored fields, in order: everything but compound addresses."""
        return [name for name, f in self.fields.items() if f.type != "address"]

    @property
    def addresses(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.type == "address"]


@dataclass
class Schema:
    objects: dict[str, ObjectDef]
    source: str = ""

    def find(self, name: str) -> ObjectDef | None:
        """The object called ``name`` in any case, or None."""
        for obj in self.objects.values():
            if obj.name.lower() == name.lower():
                return obj
        return None

    def by_prefix(self, prefix: str) -> ObjectDef | None:
        for obj in self.objects.values():
            if obj.key_prefix == prefix:
                return obj
        return None


def load(path: str | Path | None = None) -> Schema:
    """Read a schema file; ConfigError names the file and key that is wrong."""
    file = Path(path) if path is not None else DEFAULT_SCHEMA
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read schema: {error}", file=str(file)) from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not YAML: {error}", file=str(file), line=line) from error

    if not isinstance(raw, dict) or not isinstance(raw.get("objects"), dict):
        raise ConfigError("expected a mapping with 'objects'", file=str(file))
    objects = {}
    for name, spec in raw["objects"].items():
        objects[name] = _object(str(name), spec, str(file))
    _check_prefixes(objects, str(file))
    return Schema(objects, source=str(file))


def _object(name: str, spec: Any, file: str) -> ObjectDef:
    key = f"objects.{name}"
    if not _NAME.match(name) or not isinstance(spec, dict):
        raise ConfigError("expected an object name and a mapping", file=file, key=key)
    prefix = str(spec.get("keyPrefix", ""))
    if not _PREFIX.match(prefix):
        raise ConfigError("keyPrefix must be 3 base-62 characters", file=file, key=key)

    fields = {"Id": FieldDef("Id", "id", 18, createable=False, updateable=False)}
    fields["Id"].nillable = False
    for field_name, field_spec in (spec.get("fields") or {}).items():
        for built in _fields(str(field_name), field_spec, file, f"{key}.fields"):
            fields[built.name] = built
    fields.update(_system_fields())

    rules = [
        _rule(rule, file, f"{key}.validationRules[{index}]", fields)
        for index, rule in enumerate(spec.get("validationRules") or [])
    ]
    for f in fields.values():
        f.label = f.label or f.name
    return ObjectDef(
        name=name,
        key_prefix=prefix,
        label=str(spec.get("label", name)),
        custom=bool(spec.get("custom", name.endswith("__c"))),
        fields=fields,
        validation_rules=rules,
    )


def _fields(name: str, spec: Any, file: str, parent: str) -> list[FieldDef]:
    key = f"{parent}.{name}"
    if not _NAME.match(name) or not isinstance(spec, dict):
        raise ConfigError("expected a field name and a mapping", file=file, key=key)
    kind = spec.get("type")
    if kind not in FIELD_TYPES:
        raise ConfigError(
            f"unknown type {kind!r}; one of {', '.join(sorted(FIELD_TYPES))}",
            file=file,
            key=key,
        )
    if kind == "address":
        return _address(name, file, key)

    built = FieldDef(
        name=name,
        type=kind,
        length=int(spec.get("length", _default_length(kind))),
        precision=int(spec.get("precision", 18 if kind in NUMBER_TYPES else 0)),
        scale=int(spec.get("scale", 0)),
        createable=bool(spec.get("createable", True)),
        updateable=bool(spec.get("updateable", True)),
        nillable=bool(spec.get("nillable", kind != "boolean")),
        unique=bool(spec.get("unique", False)),
        external_id=bool(spec.get("externalId", False)),
        reference_to=[str(r) for r in spec.get("referenceTo") or []],
        relationship_name=spec.get("relationshipName"),
        values=[str(v) for v in spec.get("values") or []],
        default=spec.get("defaultValue", False if kind == "boolean" else None),
        label=str(spec.get("label", "")),
    )
    if kind == "reference" and not built.reference_to:
        raise ConfigError("a reference needs referenceTo", file=file, key=key)
    if kind in ("picklist", "multipicklist") and not built.values:
        raise ConfigError("a picklist needs values", file=file, key=key)
    return [built]


def _address(name: str, file: str, key: str) -> list[FieldDef]:
    if not name.endswith("Address"):
        raise ConfigError(
            "an address field must be named <Prefix>Address", file=file, key=key
        )
    prefix = name[: -len("Address")]
    compound = FieldDef(name, "address", createable=False, updateable=False)
    parts = [compound]
    for component, kind, length in ADDRESS_COMPONENTS:
        part = FieldDef(prefix + component, kind, length, compound_of=name)
        if kind == "double":
            part.precision, part.scale = 18, 15
        parts.append(part)
    return parts


def _system_fields() -> dict[str, FieldDef]:
    def system(name: str, kind: str, **extra: Any) -> FieldDef:
        return FieldDef(
            name, kind, createable=False, updateable=False, nillable=False, **extra
        )

    user = {"length": 18, "reference_to": ["User"]}
    return {
        "IsDeleted": system("IsDeleted", "boolean", default=False),
        "CreatedDate": system("CreatedDate", "datetime"),
        "CreatedById": system(
            "CreatedById", "reference", relationship_name="CreatedBy", **user
        ),
        "LastModifiedDate": system("LastModifiedDate", "datetime"),
        "LastModifiedById": system(
            "LastModifiedById", "reference", relationship_name="LastModifiedBy", **user
        ),
        "SystemModstamp": system("SystemModstamp", "datetime"),
    }


def _rule(
    spec: Any, file: str, key: str, fields: dict[str, FieldDef]
) -> ValidationRule:
    known = {"min", "max", "pattern", "required"}
    if (
        not isinstance(spec, dict)
        or spec.get("field") not in fields
        or not isinstance(spec.get("rule"), dict)
        or not set(spec["rule"]) <= known
    ):
        raise ConfigError(
            "a validation rule needs name, an existing field, rule "
            "(min/max/pattern/required) and message",
            file=file,
            key=key,
        )
    return ValidationRule(
        name=str(spec.get("name", key)),
        field=str(spec["field"]),
        rule=dict(spec["rule"]),
        message=str(spec.get("message", "Validation failed.")),
    )


def _default_length(kind: str) -> int:
    return {
        "string": 255,
        "textarea": 255,
        "picklist": 255,
        "multipicklist": 4099,
        "email": 80,
        "phone": 40,
        "url": 255,
        "reference": 18,
        "id": 18,
    }.get(kind, 0)


def _check_prefixes(objects: dict[str, ObjectDef], file: str) -> None:
    seen: dict[str, str] = {"005": "User"}
    for obj in objects.values():
        if obj.key_prefix in seen:
            raise ConfigError(
                f"keyPrefix {obj.key_prefix} is already used by {seen[obj.key_prefix]}",
                file=file,
                key=f"objects.{obj.name}.keyPrefix",
            )
        seen[obj.key_prefix] = obj.name
