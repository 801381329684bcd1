"""One local org's whole state: records, users, apps, sessions, usage, events.

Writes go through ``create``/``update``/``upsert``/``delete``/``undelete``,
always inside a transaction: either one the caller opened with
``transaction(ctx)`` or one the call opens for itself. A transaction that
ends without an exception is committed: its changes get one transactionKey,
sequence numbers 1..n and one commitTimestamp, and are appended to the
journal in order. One that raises is rolled back: the records return to
their earlier state and nothing is journaled. So a REST call with
allOrNone, or a Bulk batch, is "all or nothing" by wrapping it in one
transaction.

Records are stored compactly: one list of values per record, in the order
of ``ObjectDef.columns``, keyed by the 18-character id. Values are kept in
their REST JSON form (datetimes ``2026-01-02T03:04:05.000+0000``). The
table's dict is kept in last-write order (an updated record moves to the
end), so iterating a table walks SystemModstamp order, except for records
restored by a rollback. Unique and external-id fields have an index from
value (lower-cased text) to id, over live records only.

A re-entrant lock serialises writers; a transaction holds it from start to
end, so transactions in other threads wait. Readers take a snapshot of the
table under the lock and iterate it without.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forcelink.emulator import events
from forcelink.emulator.clock import Clock, epoch_ms, format_datetime
from forcelink.emulator.errors import ApiError, not_found
from forcelink.emulator.ids import USER_PREFIX, IdFactory, normalize
from forcelink.emulator.journal import Journal
from forcelink.emulator.limits import DEFAULT_DAILY_LIMIT, Faults, Usage
from forcelink.emulator.schema import FieldDef, ObjectDef, Schema
from forcelink.emulator.sessions import DEFAULT_TOKEN_SECONDS, SessionStore
from forcelink.emulator.values import converter

log = logging.getLogger("forcelink.emulator.org")

DEFAULT_API_VERSION = "60.0"


@dataclass(frozen=True)
class CallContext:
    """Who writes and through which API: it ends up in the change header."""

    user_id: str
    client: str | None = None
    api: str = "rest"
    api_version: str = DEFAULT_API_VERSION

    @property
    def change_origin(self) -> str:
        origin = f"com/salesforce/api/{self.api}/{self.api_version}"
        return f"{origin};client={self.client}" if self.client else origin


@dataclass
class ConnectedApp:
    client_id: str
    public_key_pem: str
    name: str = "forcelink"


@dataclass
class _Transaction:
    ctx: CallContext
    emit: bool
    now: str
    changes: list[events.Change] = field(default_factory=list)
    undo: list[tuple[Table, str, list[Any] | None]] = field(default_factory=list)


class Table:
    """The records of one object, with converters and indexes built once."""

    def __init__(self, obj: ObjectDef) -> None:
        self.obj = obj
        self.columns = obj.columns
        self.slot = {name: index for index, name in enumerate(self.columns)}
        self.rows: dict[str, list[Any]] = {}
        self.converters = {name: converter(obj.fields[name]) for name in self.columns}
        self.indexed = [
            f.name for f in obj.fields.values() if f.unique or f.external_id
        ]
        self.keys: dict[str, dict[Any, Any]] = {name: {} for name in self.indexed}
        self.relationships = {
            f.relationship_name.lower(): f
            for f in obj.fields.values()
            if f.relationship_name and f.type == "reference"
        }
        self.deleted_slot = self.slot["IsDeleted"]
        self.writable = {name: obj.fields[name] for name in self.columns}
        self.defaults = [
            (self.slot[f.name], f.name, f.default)
            for f in obj.fields.values()
            if f.default is not None and f.createable
        ]
        self.required = [
            (self.slot[f.name], f.name) for f in obj.fields.values() if f.required
        ]

    def live(self, row: list[Any]) -> bool:
        return not row[self.deleted_slot]

    def store(self, record_id: str, row: list[Any] | None) -> None:
        """Replace (or with None remove) a record, keeping indexes right."""
        old = self.rows.pop(record_id, None)
        if old is not None and self.live(old):
            self._unindex(record_id, old)
        if row is not None:
            self.rows[record_id] = row
            if self.live(row):
                self._index(record_id, row)

    def lookup(self, field_name: str, value: Any) -> list[str]:
        """Live ids whose indexed ``field_name`` equals ``value``."""
        found = self.keys[field_name].get(_key(value))
        if found is None:
            return []
        return list(found) if isinstance(found, tuple) else [found]

    def _index(self, record_id: str, row: list[Any]) -> None:
        for name in self.indexed:
            value = row[self.slot[name]]
            if value is None:
                continue
            index, key = self.keys[name], _key(value)
            found = index.get(key)
            if found is None:
                index[key] = record_id
            else:
                prior = found if isinstance(found, tuple) else (found,)
                index[key] = (*prior, record_id)

    def _unindex(self, record_id: str, row: list[Any]) -> None:
        for name in self.indexed:
            value = row[self.slot[name]]
            if value is None:
                continue
            index, key = self.keys[name], _key(value)
            found = index.get(key)
            if isinstance(found, tuple):
                rest = tuple(i for i in found if i != record_id)
                index[key] = rest[0] if len(rest) == 1 else rest
            elif found == record_id:
                del index[key]


def _key(value: Any) -> Any:
    # Text external ids match case-insensitively, as Salesforce's do.
    return value.lower() if isinstance(value, str) else value


class Org:
    def __init__(
        self,
        schema: Schema,
        *,
        clock: Clock | None = None,
        token_seconds: float = DEFAULT_TOKEN_SECONDS,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        self.schema = schema
        self.clock = clock or Clock()
        self.journal = Journal(self.clock)
        self.ids = IdFactory()
        self.sessions = SessionStore(self.clock, token_seconds)
        self.default_daily_limit = DEFAULT_DAILY_LIMIT
        self.usage = Usage(self.default_daily_limit)
        self.faults = Faults()
        self.api_version = api_version
        self.apps: dict[str, ConnectedApp] = {}
        self.users: dict[str, str] = {}
        """Username -> user id (005...)."""
        self.login_url = ""
        self.instance_url = ""
        self._tables = {name: Table(obj) for name, obj in schema.objects.items()}
        self._lock = threading.RLock()
        self._txn: _Transaction | None = None
        self._commits = itertools.count(1)
        self.writes = 0
        """Committed writes so far: persistence saves when this moves."""

    # -- registration ---------------------------------------------------

    def register_user(self, username: str) -> str:
        """The id of ``username``, creating the user on first call."""
        with self._lock:
            if username not in self.users:
                self.users[username] = self.ids.new(USER_PREFIX)
            return self.users[username]

    def register_app(self, client_id: str, public_key_pem: str) -> ConnectedApp:
        app = ConnectedApp(client_id, public_key_pem)
        self.apps[client_id] = app
        return app

    # -- transactions ---------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, ctx: CallContext, *, emit: bool = True) -> Iterator[None]:
        """All writes inside commit together, or not at all (see module doc).

        A transaction opened inside another (same thread) joins the outer one.
        ``emit=False`` commits without change events (fast seeding).
        """
        with self._lock:
            if self._txn is not None:
                yield
                return
            txn = _Transaction(ctx, emit, format_datetime(self.clock.now()))
            self._txn = txn
            try:
                yield
            except BaseException:
                for table, record_id, row in reversed(txn.undo):
                    table.store(record_id, row)
                log.debug("transaction rolled back (%d writes)", len(txn.undo))
                raise
            finally:
                self._txn = None
            self.writes += len(txn.undo)
            self._publish(txn)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: if the block raises, undo only its writes.

        The exception still propagates; the transaction goes on. This is how
        a call with allOrNone=false (or a Bulk batch) keeps the good rows of a
        batch in one transaction while reporting the bad ones.
        """
        txn = self._current()
        undo_mark, change_mark = len(txn.undo), len(txn.changes)
        try:
            yield
        except BaseException:
            for table, record_id, row in reversed(txn.undo[undo_mark:]):
                table.store(record_id, row)
            del txn.undo[undo_mark:]
            del txn.changes[change_mark:]
            raise

    def _current(self) -> _Transaction:
        if self._txn is None:
            raise RuntimeError("org writes must run inside org.transaction()")
        return self._txn

    def _publish(self, txn: _Transaction) -> None:
        if not txn.emit or not txn.changes:
            return
        now = self.clock.now()
        header = {
            "changeOrigin": txn.ctx.change_origin,
            "transactionKey": str(uuid.uuid4()),
            "commitTimestamp": epoch_ms(now),
            "commitNumber": 10_000_000_000 + next(self._commits),
            "commitUser": txn.ctx.user_id,
        }
        sequence = itertools.count(1)
        for change in txn.changes[: events.OVERFLOW_LIMIT]:
            body = events.payload(change, {**header, "sequenceNumber": next(sequence)})
            self.journal.append(change.entity, body)
        overflowed = dict.fromkeys(
            c.entity for c in txn.changes[events.OVERFLOW_LIMIT :]
        )
        for entity in overflowed:
            body = events.overflow_payload(
                entity, {**header, "sequenceNumber": next(sequence)}
            )
            self.journal.append(entity, body)

    # -- writes ---------------------------------------------------------

    def create(self, sobject: str, values: dict[str, Any], ctx: CallContext) -> str:
        """Insert one record; return its 18-character id. Raises ApiError."""
        table = self.table(sobject)
        with self.transaction(ctx):
            txn = self._current()
            row: list[Any] = [None] * len(table.columns)
            given = self._apply(table, row, values, creating=True)
            self._fill_defaults(table, row, given)
            record_id = self.ids.new(table.obj.key_prefix)
            self._stamp(table, row, txn, created=True)
            row[0] = record_id
            row[table.deleted_slot] = False
            self._check_record(table, row, record_id)
            table.store(record_id, row)
            txn.undo.append((table, record_id, None))
            if txn.emit:
                record = self._dict(table, row, compounds=False)
                txn.changes.append(events.full_change(table.obj, record, "CREATE"))
        return record_id

    def update(
        self, sobject: str, record_id: str, values: dict[str, Any], ctx: CallContext
    ) -> None:
        """Change fields of a live record. Raises ApiError (NOT_FOUND, ...)."""
        table = self.table(sobject)
        with self.transaction(ctx):
            txn = self._current()
            record_id, old = self._live_row(table, record_id)
            row = list(old)
            self._apply(table, row, values, creating=False)
            self._stamp(table, row, txn, created=False)
            self._check_record(table, row, record_id)
            table.store(record_id, row)
            txn.undo.append((table, record_id, old))
            if txn.emit:
                before = self._dict(table, old, compounds=False)
                after = self._dict(table, row, compounds=False)
                txn.changes.append(events.update_change(table.obj, before, after))

    def upsert(
        self,
        sobject: str,
        ext_field: str,
        ext_value: Any,
        values: dict[str, Any],
        ctx: CallContext,
    ) -> tuple[str, bool]:
        """Update the record whose ``ext_field`` is ``ext_value``, or create it.

        Returns (id, created). ``ext_field`` may be ``Id``. Several matches
        raise 300 MULTIPLE_CHOICES, as Salesforce does.
        """
        table = self.table(sobject)
        definition = table.obj.find(ext_field)
        if definition is None or not (
            definition.external_id or definition.unique or definition.name == "Id"
        ):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: "
                f"{ext_field}",
            )
        body = {k: v for k, v in values.items() if k.lower() != definition.name.lower()}
        with self.transaction(ctx):
            matches = self._matches(table, definition, ext_value)
            if len(matches) > 1:
                raise ApiError(
                    300,
                    "MULTIPLE_CHOICES",
                    f"More than one record found for external id field "
                    f"{definition.name}: {', '.join(matches)}",
                )
            if matches:
                self.update(table.obj.name, matches[0], body, ctx)
                return matches[0], False
            if definition.name != "Id":
                body[definition.name] = ext_value
            return self.create(table.obj.name, body, ctx), True

    def delete(self, sobject: str, record_id: str, ctx: CallContext) -> None:
        """Move a live record to the recycle bin (IsDeleted = true)."""
        table = self.table(sobject)
        with self.transaction(ctx):
            txn = self._current()
            record_id, old = self._live_row(table, record_id)
            row = list(old)
            row[table.deleted_slot] = True
            self._stamp(table, row, txn, created=False)
            table.store(record_id, row)
            txn.undo.append((table, record_id, old))
            if txn.emit:
                txn.changes.append(events.delete_change(table.obj, record_id))

    def undelete(self, sobject: str, record_id: str, ctx: CallContext) -> None:
        """Bring a deleted record back from the recycle bin."""
        table = self.table(sobject)
        with self.transaction(ctx):
            txn = self._current()
            canonical = normalize(record_id)
            old = table.rows.get(canonical) if canonical else None
            if canonical is None or old is None:
                raise not_found()
            if table.live(old):
                raise ApiError(
                    400, "UNDELETE_FAILED", "Entity is not in the recycle bin"
                )
            row = list(old)
            row[table.deleted_slot] = False
            self._stamp(table, row, txn, created=False)
            self._check_unique(table, row, canonical)
            table.store(canonical, row)
            txn.undo.append((table, canonical, old))
            if txn.emit:
                record = self._dict(table, row, compounds=False)
                txn.changes.append(events.full_change(table.obj, record, "UNDELETE"))

    # -- reads ----------------------------------------------------------

    def table(self, sobject: str) -> Table:
        """The table of ``sobject`` (any case); 404 NOT_FOUND if unknown."""
        table = self._tables.get(sobject)
        if table is None:
            obj = self.schema.find(sobject)
            if obj is None:
                raise not_found()
            table = self._tables[obj.name]
        return table

    def get(
        self, sobject: str, record_id: str, include_deleted: bool = False
    ) -> dict[str, Any] | None:
        """One record as a dict of field name -> JSON value, or None."""
        table = self.table(sobject)
        canonical = normalize(record_id)
        row = table.rows.get(canonical) if canonical else None
        if row is None or (not include_deleted and not table.live(row)):
            return None
        return self._dict(table, row, compounds=True)

    def records(
        self, sobject: str, include_deleted: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every record of ``sobject`` (a snapshot), in last-write order."""
        table = self.table(sobject)
        with self._lock:
            rows = list(table.rows.values())
        for row in rows:
            if include_deleted or table.live(row):
                yield self._dict(table, row, compounds=True)

    def count(self, sobject: str, include_deleted: bool = False) -> int:
        table = self.table(sobject)
        if include_deleted:
            return len(table.rows)
        return sum(1 for row in list(table.rows.values()) if table.live(row))

    def object_of(self, record_id: str) -> ObjectDef | None:
        """The object an id belongs to, from its key prefix."""
        canonical = normalize(record_id)
        return self.schema.by_prefix(canonical[:3]) if canonical else None

    def clear(self) -> None:
        """Forget every record and event (users, apps and sessions stay)."""
        with self._lock:
            self._tables = {n: Table(obj) for n, obj in self.schema.objects.items()}
            self.journal.clear()

    # -- persistence ----------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Everything but the journal and sessions, for ``state.save``.

        Taken under the write lock, so it is one committed moment; rows are
        shared, not copied, which is safe because writes replace rows.
        """
        with self._lock:
            return {
                "ids": self.ids.state(),
                "users": dict(self.users),
                "apps": {c: a.public_key_pem for c, a in self.apps.items()},
                "clock_offset": self.clock.offset_seconds,
                "writes": self.writes,
                "tables": {
                    name: {"columns": t.columns, "rows": dict(t.rows)}
                    for name, t in self._tables.items()
                },
            }

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace records, users and apps with an ``export_state`` result.

        Columns are matched by name, so a schema that gained or lost fields
        since the save still loads (new fields start empty).
        """
        with self._lock:
            self.ids = IdFactory(state["ids"])
            self.users.update(state["users"])
            for client_id, pem in state["apps"].items():
                self.register_app(client_id, pem)
            ahead = float(state["clock_offset"]) - self.clock.offset_seconds
            if ahead > 0:
                self.clock.advance(ahead)
            self.writes = int(state["writes"])
            self._tables = {n: Table(o) for n, o in self.schema.objects.items()}
            for name, saved in state["tables"].items():
                if name in self._tables:
                    _load_rows(self._tables[name], saved["columns"], saved["rows"])

    # -- helpers --------------------------------------------------------

    def _dict(self, table: Table, row: list[Any], *, compounds: bool) -> dict[str, Any]:
        record = dict(zip(table.columns, row, strict=True))
        if compounds:
            for address in table.obj.addresses:
                record[address.name] = _compound(address, record)
        return record

    def _live_row(self, table: Table, record_id: str) -> tuple[str, list[Any]]:
        canonical = normalize(record_id)
        row = table.rows.get(canonical) if canonical else None
        if canonical is None or row is None:
            raise not_found()
        if not table.live(row):
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return canonical, row

    def _matches(self, table: Table, definition: FieldDef, value: Any) -> list[str]:
        if definition.name == "Id":
            canonical = normalize(value)
            row = table.rows.get(canonical) if canonical else None
            return [canonical] if canonical and row and table.live(row) else []
        converted = table.converters[definition.name](value)
        return table.lookup(definition.name, converted) if converted is not None else []

    def _apply(
        self, table: Table, row: list[Any], values: dict[str, Any], *, creating: bool
    ) -> set[str]:
        """Convert and place the given values; return the field names given."""
        given = set()
        for key, value in values.items():
            definition = table.writable.get(key) or table.obj.find(key)
            if definition is None and isinstance(value, dict):
                definition, value = self._resolve_relationship(table, key, value)
            if definition is None or definition.type == "address":
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {table.obj.name}",
                )
            if definition.name == "Id" and not creating:
                continue
            if not (definition.createable if creating else definition.updateable):
                raise _not_writable(definition)
            converted = table.converters[definition.name](value)
            if converted is None and definition.type == "boolean":
                converted = False
            if converted is None and not definition.nillable:
                raise _missing([definition.name])
            if converted is not None and definition.type == "reference":
                self._check_reference(definition, converted)
            row[table.slot[definition.name]] = converted
            given.add(definition.name)
        return given

    def _resolve_relationship(
        self, table: Table, key: str, value: dict[str, Any]
    ) -> tuple[FieldDef | None, Any]:
        """``"Account": {"External_Id__c": "A-1"}`` -> (AccountId, the id)."""
        reference = table.relationships.get(key.lower())
        pairs = [(k, v) for k, v in value.items() if k != "attributes"]
        if reference is None or len(pairs) != 1:
            return None, value
        target = self.table(reference.reference_to[0])
        ext_name, ext_value = pairs[0]
        ext = target.obj.find(ext_name)
        if ext is None or not (ext.external_id or ext.unique):
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field name provided, {ext_name} is not an External ID or indexed "
                f"field for {target.obj.name}",
            )
        found = self._matches(target, ext, ext_value)
        if len(found) != 1:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Foreign key external ID: {ext_value} not found for field "
                f"{ext.name} in entity {target.obj.name}",
            )
        return reference, found[0]

    def _check_reference(self, definition: FieldDef, record_id: str) -> None:
        if "User" in definition.reference_to and record_id in self.users.values():
            return
        target = self.schema.by_prefix(record_id[:3])
        if target is None or target.name not in definition.reference_to:
            raise ApiError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"{definition.label}: id value of incorrect type: {record_id}",
                [definition.name],
            )
        table = self._tables[target.name]
        row = table.rows.get(record_id)
        if row is None:
            raise ApiError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                [definition.name],
            )
        if not table.live(row):
            raise ApiError(
                400, "ENTITY_IS_DELETED", "entity is deleted", [definition.name]
            )

    def _fill_defaults(self, table: Table, row: list[Any], given: set[str]) -> None:
        for slot, name, default in table.defaults:
            if name not in given and row[slot] is None:
                row[slot] = default
        missing = [name for slot, name in table.required if row[slot] is None]
        if missing:
            raise _missing(missing)

    def _stamp(
        self, table: Table, row: list[Any], txn: _Transaction, *, created: bool
    ) -> None:
        slot = table.slot
        if created:
            row[slot["CreatedDate"]] = txn.now
            row[slot["CreatedById"]] = txn.ctx.user_id
        row[slot["LastModifiedDate"]] = txn.now
        row[slot["LastModifiedById"]] = txn.ctx.user_id
        row[slot["SystemModstamp"]] = txn.now

    def _check_record(self, table: Table, row: list[Any], record_id: str) -> None:
        for rule in table.obj.validation_rules:
            if _breaks(rule.rule, row[table.slot[rule.field]]):
                raise ApiError(
                    400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, [rule.field]
                )
        self._check_unique(table, row, record_id)

    def _check_unique(self, table: Table, row: list[Any], record_id: str) -> None:
        for name in table.indexed:
            if not table.obj.fields[name].unique:
                continue
            value = row[table.slot[name]]
            if value is None:
                continue
            others = [i for i in table.lookup(name, value) if i != record_id]
            if others:
                raise ApiError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {name} duplicates value on record "
                    f"with id: {others[0]}",
                )


def _load_rows(table: Table, columns: list[str], rows: dict[str, list[Any]]) -> None:
    if columns == table.columns:
        for record_id, row in rows.items():
            table.store(record_id, row)
        return
    where = [table.slot.get(name) for name in columns]
    for record_id, row in rows.items():
        placed: list[Any] = [None] * len(table.columns)
        for slot, value in zip(where, row, strict=True):
            if slot is not None:
                placed[slot] = value
        if placed[table.deleted_slot] is None:
            placed[table.deleted_slot] = False
        table.store(record_id, placed)


def _breaks(rule: dict[str, Any], value: Any) -> bool:
    if rule.get("required") and value is None:
        return True
    if value is None:
        return False
    if "min" in rule and value < rule["min"]:
        return True
    if "max" in rule and value > rule["max"]:
        return True
    return "pattern" in rule and not re.fullmatch(str(rule["pattern"]), str(value))


def _compound(address: FieldDef, record: dict[str, Any]) -> Any:
    """The REST value of an address: lower-camel keys, None if all empty."""
    prefix = address.name[: -len("Address")]
    parts = {
        "city": record.get(prefix + "City"),
        "country": record.get(prefix + "Country"),
        "geocodeAccuracy": None,
        "latitude": record.get(prefix + "Latitude"),
        "longitude": record.get(prefix + "Longitude"),
        "postalCode": record.get(prefix + "PostalCode"),
        "state": record.get(prefix + "State"),
        "street": record.get(prefix + "Street"),
    }
    return parts if any(v is not None for v in parts.values()) else None


def _not_writable(definition: FieldDef) -> ApiError:
    return ApiError(
        400,
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {definition.name}. Please check the "
        "security settings of this field and verify that it is read/write for "
        "your profile or permission set.",
        [definition.name],
    )


def _missing(names: list[str]) -> ApiError:
    return ApiError(
        400,
        "REQUIRED_FIELD_MISSING",
        f"Required fields are missing: [{', '.join(names)}]",
        names,
    )
