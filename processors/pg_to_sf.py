"""Postgres -> Salesforce: the write side of issue 6.

Data flow, one batch of event-log records (``run_consumer`` hands it over;
``processors.linger`` makes it fuller)::

    events -> collect per table -> re-read rows -> plan per object
           (last change per row)   (by id, xmin)  (create/update/upsert/delete)
           -> send (collections or Bulk) -> write back in one transaction
                                            (sfid, state, sync_records,
                                             dead letters)

**What is sent.** The WAL's values are not trusted as the thing to send:
each batch re-reads the current rows by primary key and sends only rows
whose ``_sync_state`` is still ``pending`` (the read side may have settled
a conflict meanwhile), and sends every writable mapped column (a full-row
write), so Salesforce ends equal to Postgres. Several changes to one row in
one batch are one write; batches are handled one after another, so changes
to one record stay in commit order. ``unchanged_toast`` never matters: the
row is read whole. A deleted row is gone, so its delete uses the WAL's old
values (the ``sfid``); a row never synced (no sfid) needs no delete.

**How a row is written.** A row with an ``sfid`` is updated by Id, or by
upsert on its external id when that is the value last synced for the record
(``sync_records``): the same record, and new and changed rows then share
collections calls (fewer API calls). A row
without one is created by *upsert on the mapping's external id* when the
mapping has one and the row holds a value: idempotent, so a crash between
the Salesforce write and the sfid write-back, or a redelivered event, finds
the record again instead of making a second one. A mapping without an
external id (or a row with none) is created with a plain create: a crash
in that window, or a timeout on the create call, can then leave a
duplicate record in Salesforce; give such mappings an ``upsert_key``.

**Order and calls.** Deletes go first (children before parents), then
writes (parents before children: mapping order, with lookups resolved
through parent external ids, so a parent and its child inserted together
land in one batch). Per object and operation, records go in sObject
collections of 200, or, above ``bulk_threshold`` records, in one Bulk API
2.0 ingest job. Nothing is called when nothing is pending.

**Outcomes**, written back in one transaction whose session carries
forcelink's replication origin (the capture skips it: invariant 3, and the
pending trigger leaves the row alone):

* success: ``sfid`` set (always, even if the row changed meanwhile: the
  record exists now), and -- only where the row is still the version that
  was read (same ``xmin``) -- ``_sync_state='synced'``, ``_sync_error``
  NULL, ``_sync_at=now()``; ``forcelink.sync_records`` gets the values sent.
  A row deleted between the read and the write-back leaves an orphan record
  behind, which is deleted in Salesforce right after.
* rejected (validation rule, duplicate, required field, deleted parent, a
  value that does not convert): ``_sync_state='failed'`` with Salesforce's
  error JSON in ``_sync_error``, and a dead letter; other records go on.
* ``UNABLE_TO_LOCK_ROW`` for one record: that record alone is sent again
  (``lock_retries`` rounds); still locked, the batch is held (TransientError
  after everything else was written back, so only that record is re-sent).
* a whole call failing transiently after the writer's own retries: the
  results so far are written back, then ``TransientError`` goes up and
  ``run_consumer`` hands the batch back later; rows synced meanwhile are no
  longer pending and are not sent twice.

``forcelink dlq retry`` republishes the dead-lettered event: it makes this
processor re-read the row and, if it is ``pending`` (fixed by the app) or
still ``failed`` (retry as is), send it again; success resolves the letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forcelink.connector.postgres.setup import (
    apply_session_origin_async,
    split_table,
)
from forcelink.connector.salesforce.writer import (
    COLLECTION_SIZE,
    CallRejected,
    Operation,
    RecordResult,
    SalesforceWriter,
)
from forcelink.errors import (
    ConfigError,
    RecordRejected,
    SourceUnavailable,
    TransientError,
)
from forcelink.eventlog.base import Event
from forcelink.mapping import Mapping, types
from forcelink.metrics import METRICS, Metrics
from forcelink.processors import deadletters

log = logging.getLogger("forcelink.processors.pg_to_sf")

DIRECTION = "pg_to_sf"
RETRY_HEADER = "forcelink-retry"
WRITE_BACK_ATTEMPTS = 5


@dataclass
class PgToSfSettings:
    database_url: str
    """Database holding the mapped tables and forcelink's bookkeeping."""
    org: str
    """The org written to: only this org's mappings are used."""
    origin: str = "forcelink"
    """Replication origin for write-backs (the reader skips it)."""
    collection_size: int = COLLECTION_SIZE
    bulk_threshold: int = 2000
    """Above this many records of one object and operation: Bulk API 2.0."""
    lock_retries: int = 4
    lock_retry_delay: float = 0.5


# ------------------------------------------------------------------ the plan


@dataclass
class _Touched:
    """One row's changes in this batch: what decides what to do with it."""

    table: str
    pk: int
    key: str
    """The event key, ``salesforce.account:42``: the dead letters' record key."""
    event: Event
    commit_time: datetime | None
    retry: bool = False
    deleted_sfids: list[str] = field(default_factory=list)


@dataclass
class _Item:
    """One record to send, and then its outcome."""

    mapping: Mapping
    touched: _Touched
    operation: Operation
    payload: dict[str, Any]
    """JSON form for collections (``Id`` included for update/delete)."""
    row: dict[str, Any] | None = None
    xmin: str | None = None
    result: RecordResult | None = None
    error: BaseException | None = None

    @property
    def metric_operation(self) -> str:
        if self.operation == "delete":
            return "delete"
        created = self.operation == "create" or (
            self.result is not None and self.result.created
        )
        return "create" if created else "update"


@dataclass
class _Plan:
    deletes: list[_Item] = field(default_factory=list)
    writes: list[_Item] = field(default_factory=list)
    already_synced: list[_Touched] = field(default_factory=list)
    """Retried events whose row is synced already: their letters resolve."""

    @property
    def items(self) -> list[_Item]:
        return self.deletes + self.writes


class PgToSalesforce:
    """The ``run_consumer`` handler for one org (see the module doc).

    ``mappings``: every loaded mapping; only those of ``settings.org`` in
    mode ``read_write`` or ``write_only`` are used. ``writer`` makes the
    Salesforce calls (``SalesforceWriter.for_org(org_config)``). Call
    ``close()`` when done (it closes the database connection).
    """

    name = "pg_to_sf"

    def __init__(
        self,
        settings: PgToSfSettings,
        mappings: Sequence[Mapping],
        writer: SalesforceWriter,
        *,
        metrics: Metrics = METRICS,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        own = [
            m
            for m in mappings
            if m.org == settings.org and m.mode in ("read_write", "write_only")
        ]
        self.order = parent_first(own)
        self.by_table = {m.table: m for m in self.order}
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def handle(self, events: Sequence[Event]) -> None:
        """Make every event safe: written to the org, or dead-lettered."""
        touched = self._collect(events)
        if not touched:
            return
        conn = await self._connection()
        try:
            plan = await self._plan(conn, touched)
            if not plan.items and not plan.already_synced:
                return
            failure = await asyncio.to_thread(self._send, plan)
            orphans = await self._write_back_retrying(conn, plan)
        except psycopg.OperationalError as error:
            await self.close()
            raise SourceUnavailable(
                f"Postgres: {type(error).__name__}", org=self.settings.org
            ) from error
        self._record_metrics(plan)
        if orphans:
            await asyncio.to_thread(self._delete_orphans, orphans)
        if failure is not None:
            raise failure

    # -------------------------------------------------------------- collect

    def _collect(self, events: Sequence[Event]) -> dict[tuple[str, int], _Touched]:
        """The rows these events touch, last change last (log order)."""
        touched: dict[tuple[str, int], _Touched] = {}
        for event in events:
            change = json.loads(event.value)
            table = str(change.get("table", ""))
            if table not in self.by_table:
                continue
            if change.get("op") == "truncate":
                log.warning(
                    "TRUNCATE of %s is not sent to Salesforce: delete the"
                    " records there yourself, or delete the rows instead",
                    table,
                )
                continue
            pk = _primary_key(change, table)
            entry = touched.get((table, pk))
            if entry is None:
                entry = touched[(table, pk)] = _Touched(
                    table, pk, event.key.decode(), event, None
                )
            entry.event = event
            entry.commit_time = _moment(change.get("commit_time"))
            entry.retry = entry.retry or event.headers.get(RETRY_HEADER) == "1"
            old = change.get("old") or {}
            if change.get("op") == "delete" and old.get("sfid"):
                entry.deleted_sfids.append(str(old["sfid"]))
        return touched

    # ----------------------------------------------------------------- plan

    async def _plan(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        touched: dict[tuple[str, int], _Touched],
    ) -> _Plan:
        """Re-read the touched rows and decide, per row, what to send."""
        plan = _Plan()
        by_table: dict[str, list[_Touched]] = {}
        for entry in touched.values():
            by_table.setdefault(entry.table, []).append(entry)
        for mapping in self.order:
            entries = by_table.get(mapping.table, [])
            rows = await _read_rows(conn, mapping, [e.pk for e in entries])
            sent_keys = await _sent_keys(conn, self.settings.org, mapping, rows)
            for entry in entries:
                row = rows.get(entry.pk)
                sent = sent_keys.get(str(row.get("sfid"))) if row else None
                self._plan_row(plan, mapping, entry, row, sent)
        plan.deletes.reverse()  # children first
        return plan

    def _plan_row(
        self,
        plan: _Plan,
        mapping: Mapping,
        entry: _Touched,
        row: dict[str, Any] | None,
        sent_key: str | None,
    ) -> None:
        """``sent_key``: the external id last sent for the row's sfid, if any."""
        current = row.get("sfid") if row else None
        for sfid in entry.deleted_sfids:
            if sfid != current:
                item = _Item(mapping, entry, "delete", {"Id": sfid})
                plan.deletes.append(item)
        if row is None:
            return
        state = row["_sync_state"]
        if state == "synced" and entry.retry:
            plan.already_synced.append(entry)
        if not (state == "pending" or (state == "failed" and entry.retry)):
            return
        xmin = str(row.pop("_xmin"))
        try:
            payload = mapping.to_salesforce(row)
        except RecordRejected as error:
            plan.writes.append(
                _Item(mapping, entry, "update", {}, row, xmin, error=error)
            )
            return
        # An existing record whose external id is the one last synced is
        # written by upsert too: the same record, and one call for new and
        # changed rows together instead of one per operation.
        key = payload.get(mapping.upsert_key) if mapping.upsert_key else None
        operation: Operation = "update"
        if current and not (key is not None and str(key) == sent_key):
            payload["Id"] = current
        elif key is not None:
            operation = "upsert"
        else:
            operation = "create"
        plan.writes.append(_Item(mapping, entry, operation, payload, row, xmin))

    # ----------------------------------------------------------------- send

    def _send(self, plan: _Plan) -> TransientError | None:
        """Send the plan (in a worker thread); record each item's outcome.

        Returns the transient error that stopped it, if one did: the items
        not reached keep no outcome and stay pending.
        """
        groups = _groups(plan.deletes, delete=True) + _groups(plan.writes)
        try:
            for items in groups:
                self._send_group(items)
        except TransientError as error:
            return error
        return None

    def _send_group(self, items: list[_Item]) -> None:
        """One object and operation, until no record is left locked."""
        waiting = [i for i in items if i.error is None]
        for attempt in range(self.settings.lock_retries + 1):
            if attempt:
                time.sleep(self.settings.lock_retry_delay * attempt)
            self._call(waiting)
            waiting = [
                i for i in waiting if i.result is not None and i.result.transient
            ]
            if not waiting:
                return
            for item in waiting:
                item.result = None  # not settled: stays pending if we give up
            log.info("%d record(s) locked; sending them again", len(waiting))
        raise TransientError(
            f"{len(waiting)} record(s) still locked in Salesforce",
            org=self.settings.org,
            object=waiting[0].mapping.object,
        )

    def _call(self, items: list[_Item]) -> None:
        mapping, operation = items[0].mapping, items[0].operation
        if len(items) > self.settings.bulk_threshold and operation != "create":
            self._call_bulk(mapping, operation, items)
            return
        size = self.settings.collection_size
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            try:
                results = self.writer.collection(
                    mapping.object,
                    operation,
                    [i.payload for i in chunk],
                    mapping.upsert_key,
                )
            except CallRejected as error:
                for item in chunk:
                    item.error = error
                continue
            for item, result in zip(chunk, results, strict=True):
                item.result = result

    def _call_bulk(
        self, mapping: Mapping, operation: Operation, items: list[_Item]
    ) -> None:
        rows = []
        for item in items:
            row = {"Id": item.payload["Id"]} if operation == "delete" else {}
            if item.row is not None:
                row.update(mapping.to_salesforce(item.row, form="csv"))
                if "Id" in item.payload:
                    row["Id"] = item.payload["Id"]
            rows.append(row)
        try:
            results = self.writer.bulk(
                mapping.object, operation, rows, mapping.upsert_key
            )
        except CallRejected as error:
            for item in items:
                item.error = error
            return
        for item, result in zip(items, results, strict=True):
            item.result = result

    def _delete_orphans(self, sfids: list[tuple[str, str]]) -> None:
        """Records created for rows deleted before their sfid was written back."""
        for start in range(0, len(sfids), self.settings.collection_size):
            chunk = sfids[start : start + self.settings.collection_size]
            try:
                self.writer.collection(
                    chunk[0][0], "delete", [{"Id": sfid} for _, sfid in chunk]
                )
            except (TransientError, CallRejected) as error:
                log.warning(
                    "could not delete %d orphan record(s) %s: %s",
                    len(chunk),
                    [sfid for _, sfid in chunk],
                    error,
                )

    # ----------------------------------------------------------- write back

    async def _write_back_retrying(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], plan: _Plan
    ) -> list[tuple[str, str]]:
        """``_write_back``, again after a deadlock with an application
        transaction (both lock rows of the table, in different orders):
        redoing the Salesforce calls for that would cost quota."""
        for attempt in range(WRITE_BACK_ATTEMPTS):
            try:
                return await self._write_back(conn, plan)
            except psycopg.errors.DeadlockDetected:
                if attempt == WRITE_BACK_ATTEMPTS - 1:
                    raise
                log.info("write-back deadlocked with the application; again")
                await asyncio.sleep(0.05 * (attempt + 1))
        return []

    async def _write_back(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], plan: _Plan
    ) -> list[tuple[str, str]]:
        """Record every settled outcome in one transaction; returns orphans."""
        orphans: list[tuple[str, str]] = []
        async with conn.transaction():
            for mapping in self.order:
                items = [i for i in plan.writes if i.mapping is mapping]
                if items:
                    await _lock_in_order(conn, mapping, items)
                    orphans += await self._settle_writes(conn, mapping, items)
            await self._settle_deletes(conn, plan.deletes)
            for entry in plan.already_synced:
                mapping = self.by_table[entry.table]
                await deadletters.resolve(
                    conn, self.settings.org, mapping.object, entry.key
                )
        return orphans

    async def _settle_writes(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        mapping: Mapping,
        items: list[_Item],
    ) -> list[tuple[str, str]]:
        done = [i for i in items if i.result is not None and i.result.ok]
        failed = [i for i in items if _failure(i) is not None]
        orphans: list[tuple[str, str]] = []
        if done:
            found = await _mark_synced(conn, mapping, done)
            orphans = [
                (mapping.object, str(i.result.id))
                for i in done
                if i.touched.pk not in found
                and i.result is not None
                and i.result.id
                and i.metric_operation == "create"
            ]
            await _remember(conn, self.settings.org, mapping, done)
            for item in done:
                if item.touched.retry:
                    await deadletters.resolve(
                        conn, self.settings.org, mapping.object, item.touched.key
                    )
        if failed:
            await self._mark_failed(conn, mapping, failed)
        return orphans

    async def _mark_failed(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        mapping: Mapping,
        items: list[_Item],
    ) -> None:
        """``failed`` + error on rows still as read; a dead letter for each."""
        errors = [_failure(i) for i in items]
        cur = await conn.execute(
            f"""
            UPDATE {_table(mapping)} AS t
            SET _sync_state = 'failed', _sync_error = v.error, _sync_at = now()
            FROM unnest(%s::bigint[], %s::text[], %s::jsonb[]) AS v(id, xmin, error)
            WHERE t.id = v.id AND t.xmin::text = v.xmin
            RETURNING t.id
            """,
            (
                [i.touched.pk for i in items],
                [i.xmin for i in items],
                [Jsonb(_error_json(e)) for e in errors],
            ),
        )
        still = {row["id"] for row in await cur.fetchall()}
        for item, error in zip(items, errors, strict=True):
            assert error is not None
            log.debug("%s %s rejected: %s", mapping.object, item.touched.key, error)
            if item.touched.pk in still:
                await self._dead_letter(conn, mapping, item.touched, error)

    async def _settle_deletes(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], items: list[_Item]
    ) -> None:
        for item in items:
            mapping, error = item.mapping, _failure(item)
            if error is not None:
                await self._dead_letter(conn, mapping, item.touched, error)
                continue
            if item.result is None:
                continue  # not reached: the batch is handed back
            await conn.execute(
                "DELETE FROM forcelink.sync_records"
                " WHERE org = %s AND object = %s AND sfid = %s",
                (self.settings.org, mapping.object, item.payload["Id"]),
            )
            if item.touched.retry:
                await deadletters.resolve(
                    conn, self.settings.org, mapping.object, item.touched.key
                )

    async def _dead_letter(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        mapping: Mapping,
        entry: _Touched,
        error: BaseException,
    ) -> None:
        """A new dead letter, or the retried one of this record opened again."""
        await deadletters.add(
            conn,
            org=self.settings.org,
            direction="to_salesforce",
            object_name=mapping.object,
            record_key=entry.key,
            event=entry.event,
            error=error,
            reopen=entry.retry,
        )

    # -------------------------------------------------------------- metrics

    def _record_metrics(self, plan: _Plan) -> None:
        now = time.time()
        org = self.settings.org
        for item in plan.items:
            error = _failure(item)
            obj = item.mapping.object
            if error is not None:
                self.metrics.apply_error(org, DIRECTION, obj, error)
            elif item.result is not None:
                moment = item.touched.commit_time
                delay = now - moment.timestamp() if moment else None
                self.metrics.event_applied(
                    org, DIRECTION, obj, item.metric_operation, delay_seconds=delay
                )

    # ------------------------------------------------------------ database

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True, row_factory=dict_row
                )
            except psycopg.OperationalError as error:
                raise SourceUnavailable(
                    "cannot connect to Postgres", org=self.settings.org
                ) from error
            await apply_session_origin_async(conn, self.settings.origin)  # type: ignore[arg-type]  # any row type
            self._conn = conn
        return self._conn


# ------------------------------------------------------------------ helpers


def parent_first(mappings: Sequence[Mapping]) -> list[Mapping]:
    """Mappings ordered so that a lookup's parent object comes before it.

    The parent of a lookup is found by name among the mapped objects: the
    relationship (``Account``, ``Work_Order__r``) or the field
    (``AccountId``, ``Work_Order__c``) with ``Id``/``__r``/``__c`` and
    underscores removed, compared without case (``Work_Order__r`` ->
    ``workorder`` -> WorkOrder). A parent not found so is not ordered
    against; mapping order decides among the rest.
    """
    names = {_squash(m.object): m for m in mappings}
    parents: dict[str, set[str]] = {m.object: set() for m in mappings}
    for mapping in mappings:
        for f in mapping.fields:
            for name in (
                f.relationship or "",
                f.field if f.sf_type == "reference" else "",
            ):
                parent = names.get(_squash(name))
                if parent is not None and parent.object != mapping.object:
                    parents[mapping.object].add(parent.object)
    ordered: list[Mapping] = []
    placed: set[str] = set()
    while len(ordered) < len(mappings):
        ready = [
            m
            for m in mappings
            if m.object not in placed and parents[m.object] <= placed
        ]
        if not ready:  # a cycle: fall back to mapping order for the rest
            ready = [m for m in mappings if m.object not in placed]
        ordered.append(ready[0])
        placed.add(ready[0].object)
    return ordered


def _squash(name: str) -> str:
    lowered = name.lower()
    for suffix in ("__r", "__c", "id"):
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            lowered = lowered[: -len(suffix)]
            break
    return lowered.replace("_", "")


def _groups(items: list[_Item], *, delete: bool = False) -> list[list[_Item]]:
    """Items by (object, operation), keeping the order objects first appear."""
    grouped: dict[tuple[str, str], list[_Item]] = {}
    for item in items:
        if delete == (item.operation == "delete"):
            grouped.setdefault((item.mapping.object, item.operation), []).append(item)
    return [g for g in grouped.values() if any(i.error is None for i in g)]


def _failure(item: _Item) -> BaseException | None:
    """The terminal error of an item, if it failed for good."""
    if item.error is not None:
        return item.error
    result = item.result
    if result is None or result.ok or result.transient:
        return None
    if item.operation == "delete" and result.gone:
        return None  # already deleted: the delete is done
    first = result.errors[0] if result.errors else {}
    code = first.get("statusCode") or first.get("errorCode")
    return _Rejected(
        f"{code}: {first.get('message')}",
        result.errors,
        org=item.mapping.org,
        object=item.mapping.object,
        record=item.touched.key,
    )


class _Rejected(RecordRejected):
    """Salesforce refused one record; ``errors`` is its JSON error list."""

    def __init__(self, message: str, errors: list[dict[str, Any]], **context: Any):
        self.errors = errors
        super().__init__(message, **context)


def _error_json(error: BaseException | None) -> dict[str, Any]:
    """What ``_sync_error`` holds: Salesforce's errors, or forcelink's own."""
    errors = getattr(error, "errors", None)
    body = deadletters.error_body(error) if error is not None else {}
    if errors:
        body["errors"] = errors
    return body


def _primary_key(change: dict[str, Any], table: str) -> int:
    key = change.get("key") or {}
    if list(key) != ["id"]:
        raise ConfigError(
            f"{table}: mapped tables are keyed by their `id` column (got {list(key)})",
            key="mappings",
        )
    return int(key["id"])


def _moment(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _table(mapping: Mapping) -> str:
    schema, name = split_table(mapping.table)
    return f'"{schema}"."{name}"'


async def _read_rows(
    conn: psycopg.AsyncConnection[dict[str, Any]], mapping: Mapping, pks: list[int]
) -> dict[int, dict[str, Any]]:
    """Current rows by id, each with its ``_xmin`` (row version)."""
    if not pks:
        return {}
    cur = await conn.execute(
        f"SELECT t.*, t.xmin::text AS _xmin FROM {_table(mapping)} AS t"
        " WHERE t.id = ANY(%s)",
        (pks,),
    )
    return {int(row["id"]): row for row in await cur.fetchall()}


async def _lock_in_order(
    conn: psycopg.AsyncConnection[dict[str, Any]], mapping: Mapping, items: list[_Item]
) -> None:
    """Lock the rows about to be written back in id order.

    An UPDATE ... FROM locks rows in whatever order its join produces; an
    application updating several of them in another order could then
    deadlock with the write-back. In id order, only an application that
    itself locks out of order can.
    """
    await conn.execute(
        f"SELECT 1 FROM {_table(mapping)} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        ([i.touched.pk for i in items],),
    )


async def _sent_keys(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    org: str,
    mapping: Mapping,
    rows: dict[int, dict[str, Any]],
) -> dict[str, str]:
    """sfid -> the external id value last sent for it (``sync_records``)."""
    sfids = [str(r["sfid"]) for r in rows.values() if r.get("sfid")]
    if not mapping.upsert_key or not sfids:
        return {}
    cur = await conn.execute(
        "SELECT sfid, last_values->>%s AS key FROM forcelink.sync_records"
        " WHERE org = %s AND object = %s AND sfid = ANY(%s)",
        (mapping.upsert_key, org, mapping.object, sfids),
    )
    return {
        str(r["sfid"]): str(r["key"])
        for r in await cur.fetchall()
        if r["key"] is not None
    }


async def _mark_synced(
    conn: psycopg.AsyncConnection[dict[str, Any]], mapping: Mapping, items: list[_Item]
) -> set[int]:
    """sfid always; state ``synced`` only where the row is as it was read.

    Returns the ids of the rows still there.
    """
    cur = await conn.execute(
        f"""
        UPDATE {_table(mapping)} AS t
        SET sfid = coalesce(v.sfid, t.sfid),
            _sync_state = CASE WHEN t.xmin::text = v.xmin
                               THEN 'synced' ELSE t._sync_state END,
            _sync_error = CASE WHEN t.xmin::text = v.xmin
                               THEN NULL ELSE t._sync_error END,
            _sync_at = CASE WHEN t.xmin::text = v.xmin
                            THEN now() ELSE t._sync_at END
        FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, xmin, sfid)
        WHERE t.id = v.id
        RETURNING t.id
        """,
        (
            [i.touched.pk for i in items],
            [i.xmin for i in items],
            [i.result.id if i.result else None for i in items],
        ),
    )
    return {int(row["id"]) for row in await cur.fetchall()}


async def _remember(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    org: str,
    mapping: Mapping,
    items: list[_Item],
) -> None:
    """``forcelink.sync_records``: the values Salesforce now holds (as sent)."""
    sfids, texts, hashes = [], [], []
    for item in items:
        sfid = (item.result.id if item.result else None) or item.payload.get("Id")
        if not sfid:
            continue
        values = {k: v for k, v in item.payload.items() if k != "Id"}
        text = types.dumps(values)
        sfids.append(str(sfid))
        texts.append(text)
        hashes.append(hashlib.sha256(text.encode()).hexdigest())
    await conn.execute(
        """
        INSERT INTO forcelink.sync_records
            (org, object, sfid, last_synced_at, last_values_hash, last_values)
        SELECT %s, %s, v.sfid, now(), v.hash, v.vals::jsonb
        FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(sfid, hash, vals)
        ON CONFLICT (org, object, sfid) DO UPDATE
        SET last_synced_at = excluded.last_synced_at,
            last_values_hash = excluded.last_values_hash,
            last_values = excluded.last_values
        """,
        (org, mapping.object, sfids, hashes, texts),
    )
