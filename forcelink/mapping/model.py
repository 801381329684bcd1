"""A loaded, checked mapping: what one Salesforce object looks like in Postgres.

A ``Mapping`` is built by ``forcelink.mapping.load_mappings`` and is
immutable. It converts records both ways:

* ``to_columns(record)``: a Salesforce record, query row or change event
  payload (JSON form, or Bulk CSV strings with ``form="csv"``) into column
  values. Only fields present in the record give a column, so a partial
  UPDATE event gives a partial row. Compound addresses may come nested
  (``BillingAddress: {Street: ...}``) or flat (``BillingStreet``).
* ``to_salesforce(row)``: a Postgres row (column -> value) into field values,
  JSON form for REST (numbers as Decimal: encode with ``types.dumps``) or
  strings for a Bulk CSV. A lookup whose parent-external-id column is set is
  sent through the relationship (``Account: {External_Id__c: ...}``, CSV
  header ``Account.External_Id__c``), so a child can be written in the same
  batch as its parent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from typing import Any, Literal

from forcelink.errors import RecordRejected
from forcelink.mapping import types
from forcelink.mapping.types import ColumnType, ConversionError, Form

Mode = Literal["read_only", "read_write", "write_only"]
ConflictPolicy = Literal[
    "salesforce_wins", "postgres_wins", "last_writer_wins", "merge_fields"
]
Direction = Literal["both", "to_postgres", "to_salesforce"]

MODES: tuple[Mode, ...] = ("read_only", "read_write", "write_only")
POLICIES: tuple[ConflictPolicy, ...] = (
    "salesforce_wins",
    "postgres_wins",
    "last_writer_wins",
    "merge_fields",
)
DIRECTIONS: tuple[Direction, ...] = ("both", "to_postgres", "to_salesforce")

SYNC_STATES = ("synced", "pending", "failed", "conflict")
"""Values of every mapped row's ``_sync_state`` column."""

TRANSFORMS: dict[str, Callable[[str], str | None]] = {
    "trim": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "empty_to_null": lambda text: text or None,
}
"""Text normalisations a field may name; applied in both directions, so a
value normalised once stays the same when it crosses back."""


@dataclass(frozen=True)
class FieldMapping:
    """One column of a mapped table and the Salesforce field behind it."""

    field: str
    """API name: ``Name``, ``BillingStreet``, ``AccountId``."""
    column: str
    sf_type: str
    column_type: ColumnType
    direction: Direction = "both"
    transform: str | None = None
    compound: str | None = None
    """For an address component: the compound field (``BillingAddress``)."""
    component: str | None = None
    """For an address component: its key inside the compound (``Street``)."""
    relationship: str | None = None
    """For a parent-external-id column: the relationship (``Account``)."""
    parent_key: str | None = None
    """For a parent-external-id column: the parent's external id field."""
    line: int = 0
    system: bool = False

    @property
    def reads(self) -> bool:
        """Filled from Salesforce."""
        return self.direction in ("both", "to_postgres")

    @property
    def writes(self) -> bool:
        """Sent to Salesforce."""
        return self.direction in ("both", "to_salesforce")

    @property
    def salesforce_path(self) -> str:
        """What SOQL selects and a Bulk CSV header names: ``Account.External_Id__c``."""
        if self.relationship and self.parent_key:
            return f"{self.relationship}.{self.parent_key}"
        return self.field

    def to_column(self, value: Any, form: Form = "json") -> Any:
        """A Salesforce wire value as this column's value; ConversionError if unfit."""
        canonical = types.from_salesforce(self.sf_type, value, form)
        return types.to_column(self._normalise(canonical), self.column_type)

    def from_column(self, value: Any) -> Any:
        """This column's value as the canonical value of the field's type."""
        canonical = types.from_column(self.sf_type, value, self.column_type)
        return self._normalise(canonical)

    def _normalise(self, value: Any) -> Any:
        if self.transform is None or not isinstance(value, str):
            return value
        return TRANSFORMS[self.transform](value)


@dataclass(frozen=True)
class Mapping:
    """One Salesforce object of one org mapped to one Postgres table."""

    org: str
    object: str
    schema: str
    table_name: str
    mode: Mode
    fields: tuple[FieldMapping, ...]
    """Every column fed by a field, the system ones (sfid, systemmodstamp,
    isdeleted) first."""
    upsert_key: str | None = None
    soql_filter: str | None = None
    conflict_policy: ConflictPolicy = "salesforce_wins"
    file: str = ""
    line: int = 0
    _by_column: dict[str, FieldMapping] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._by_column.update({f.column: f for f in self.fields})

    @property
    def table(self) -> str:
        """Schema-qualified: ``salesforce.account``."""
        return f"{self.schema}.{self.table_name}"

    @property
    def upsert_column(self) -> str | None:
        found = self.field(self.upsert_key) if self.upsert_key else None
        return found.column if found else None

    def field(self, name: str) -> FieldMapping | None:
        """The column mapping of a field (case-insensitive); parent keys excluded."""
        for f in self.fields:
            if f.field.lower() == name.lower() and f.parent_key is None:
                return f
        return None

    def column(self, name: str) -> FieldMapping | None:
        return self._by_column.get(name)

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.fields]

    def soql(self) -> str:
        """The query that reads every mapped field, with the mapping's filter."""
        paths = [f.salesforce_path for f in self.fields if f.reads]
        query = f"SELECT {', '.join(dict.fromkeys(paths))} FROM {self.object}"
        return f"{query} WHERE {self.soql_filter}" if self.soql_filter else query

    def salesforce_fields(self) -> list[str]:
        """Field paths written to Salesforce, in column order (Bulk CSV header)."""
        return list(dict.fromkeys(f.salesforce_path for f in self.fields if f.writes))

    # ---------------------------------------------------------------- records

    def to_columns(
        self, record: MappingType[str, Any], form: Form = "json"
    ) -> dict[str, Any]:
        """Column values for the fields present in ``record``.

        Field names match case-insensitively (REST nests address components
        in lower case, change events capitalise them). Raises RecordRejected
        naming the org, object, record and field when a value does not fit.
        """
        present = {str(k).lower(): v for k, v in record.items()}
        out: dict[str, Any] = {}
        for f in self.fields:
            if not f.reads:
                continue
            found, value = _lookup(present, f)
            if not found:
                continue
            try:
                out[f.column] = f.to_column(value, form)
            except ConversionError as error:
                raise self._rejected(f, error, present.get("id")) from error
        return out

    def to_salesforce(
        self, row: MappingType[str, Any], form: Form = "json"
    ) -> dict[str, Any]:
        """Field values for Salesforce from the mapped columns present in ``row``.

        ``Id`` is never included (it goes in the URL or the caller adds it).
        A lookup goes by the parent's external id when that column holds a
        value, else by the sfid column.
        """
        out: dict[str, Any] = {}
        by_parent: set[str] = set()
        for f in self.fields:
            if not f.writes or f.system or f.column not in row:
                continue
            try:
                value = types.to_salesforce(f.from_column(row[f.column]), form)
            except ConversionError as error:
                raise self._rejected(f, error, row.get("sfid")) from error
            if f.parent_key and f.relationship:
                if row[f.column] is None:
                    continue
                by_parent.add(f.field)
                if form == "json":
                    out[f.relationship] = {f.parent_key: value}
                else:
                    out[f.salesforce_path] = value
                continue
            out[f.field] = value
        for name in by_parent:
            out.pop(name, None)
        return out

    def _rejected(
        self, f: FieldMapping, error: ConversionError, record: Any
    ) -> RecordRejected:
        return RecordRejected(
            f"{f.field} ({f.sf_type} -> {f.column_type.sql}): {error}",
            org=self.org,
            object=self.object,
            record=None if record is None else str(record),
            field=f.field,
        )

    # -------------------------------------------------------------- versions

    def definition(self) -> dict[str, Any]:
        """The mapping as JSON (stored in ``forcelink.mapping_versions``)."""
        return {
            "org": self.org,
            "object": self.object,
            "table": self.table,
            "mode": self.mode,
            "upsert_key": self.upsert_key,
            "soql_filter": self.soql_filter,
            "conflict_policy": self.conflict_policy,
            "fields": [
                {
                    "field": f.field,
                    "column": f.column,
                    "sf_type": f.sf_type,
                    "column_type": f.column_type.sql,
                    "direction": f.direction,
                    "transform": f.transform,
                    "parent_key": f.parent_key,
                }
                for f in self.fields
            ],
        }

    def checksum(self) -> str:
        text = json.dumps(self.definition(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _lookup(present: dict[str, Any], f: FieldMapping) -> tuple[bool, Any]:
    """(found, value) of one field in a record whose keys are lower-cased."""
    if f.parent_key and f.relationship:
        flat = f.salesforce_path.lower()
        if flat in present:
            return True, present[flat]
        parent = present.get(f.relationship.lower(), _MISSING)
        if parent is _MISSING:
            return False, None
        if parent is None:
            return True, None
        if isinstance(parent, MappingType):
            keys = {str(k).lower(): v for k, v in parent.items()}
            if f.parent_key.lower() in keys:
                return True, keys[f.parent_key.lower()]
        return False, None

    name = f.field.lower()
    if name in present:
        return True, present[name]
    if f.compound and f.component and f.compound.lower() in present:
        nested = present[f.compound.lower()]
        if nested is None:
            return True, None
        if isinstance(nested, MappingType):
            keys = {str(k).lower(): v for k, v in nested.items()}
            if f.component.lower() in keys:
                return True, keys[f.component.lower()]
    return False, None


_MISSING = object()
