"""Salesforce changes into Postgres: the read-side processor.

Consumes ``forcelink.sf.<org>.changes`` (written by
``connector.salesforce.subscriber``), one event per changed record, keyed by
record id, so the changes of one record arrive in commit order. Each batch is
applied in one Postgres transaction, in a session tagged with forcelink's
replication origin, so the Postgres reader skips these writes and they never
travel back to Salesforce (invariant 3).

What each change does to the mapped row (matched by ``sfid``):

=================  ===========================================================
change             effect
=================  ===========================================================
CREATE, UNDELETE   insert or overwrite the mapped columns; ``isdeleted`` false
UPDATE             set only the fields the event carries (changed and nulled
                   ones); a row forcelink never saw is fetched whole first
DELETE             ``isdeleted`` true
GAP_*              the record is fetched over REST (one query for all the
                   batch's gap ids of an object) and applied whole; a record
                   the org no longer has counts as deleted
GAP_OVERFLOW       the object is re-read with SOQL on SystemModstamp from the
                   overflowing transaction's commit time, every record applied
RESYNC             (after a lost replay id) the record, as queried, applied whole
=================  ===========================================================

Order and idempotency (invariant 2): ``systemmodstamp`` holds the commit
time of the version the row has. A change older than that is skipped, so a
redelivered batch, or a backfill racing the stream, never puts an older
version back. Applying the same change twice sets the same values twice.

Echo (invariant 3): a change whose ``changeOrigin`` carries our client tag
is our own write coming back. It never creates a row and never overrides a
local change still ``pending``; on a ``synced`` row it is applied like any
change, which keeps both sides equal when a Salesforce user's edit and our
write crossed.

A change that meets a ``pending`` row is a conflict, decided by the
mapping's policy (``processors.conflicts``) and recorded.

A record that cannot be applied (a value that does not convert, a constraint
violation) goes to the dead letters alone; the rest of the batch is applied
(invariant 6). Postgres or the org being unreachable raises
``SourceUnavailable`` and the whole batch is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import requests
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from forcelink.connector.postgres.setup import apply_session_origin
from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    salesforce_client,
)
from forcelink.errors import (
    ForcelinkError,
    RecordRejected,
    SessionExpired,
    SourceUnavailable,
    TerminalError,
)
from forcelink.eventlog.base import Event
from forcelink.mapping import Mapping
from forcelink.mapping.types import ConversionError
from forcelink.metrics import METRICS
from forcelink.processors import conflicts, deadletters

log = logging.getLogger("forcelink.processors.sf_to_pg")

DIRECTION = "sf_to_pg"
SYSTEM_COLUMNS = ("sfid", "systemmodstamp", "isdeleted")
FETCH_CHUNK = 200
"""Record ids per SOQL ``IN`` list when fetching gap records."""


@dataclass(frozen=True)
class Change:
    """One decoded event: a change to one record."""

    event: Event
    entity: str
    record_id: str
    change_type: str
    fields: dict[str, Any]
    """The record's fields as the event (or a query) gave them."""
    origin: str
    committed_at: datetime

    @property
    def whole(self) -> bool:
        """True when ``fields`` hold the whole record, not just what changed."""
        return self.change_type in ("CREATE", "UNDELETE", "RESYNC")


class SalesforceToPostgres:
    """A ``processors.runtime.Handler`` for one org's Salesforce changes."""

    def __init__(
        self,
        *,
        org: str,
        mappings: Sequence[Mapping],
        database_url: str,
        connection: OrgConnection,
        client_tag: str = "forcelink",
        origin: str = "forcelink",
    ) -> None:
        self.name = f"sf_to_pg[{org}]"
        self.org = org
        self.by_object = {
            m.object.lower(): m for m in mappings if m.mode != "write_only"
        }
        self.database_url = database_url
        self.connection = connection
        self.echo_marker = f"client={client_tag}"
        self.origin = origin
        self._db: psycopg.Connection[dict[str, Any]] | None = None
        self._sf: Salesforce | None = None

    async def handle(self, events: Sequence[Event]) -> None:
        await asyncio.to_thread(self._handle, list(events))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- one batch ------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        decoded, undecodable = self._decode_all(events)
        changes = self._expand(decoded)
        db = self._database()
        try:
            with db.transaction():
                for event, error in undecodable:
                    self._dead_letter(db, None, event, error)
                applied = self._apply_batch(db, changes)
        except psycopg.OperationalError as error:
            self.close()
            raise SourceUnavailable(
                f"Postgres unreachable while applying: {error}", org=self.org
            ) from error
        now = datetime.now(UTC)
        for mapping, change, operation in applied:
            delay = max((now - change.committed_at).total_seconds(), 0.0)
            METRICS.event_applied(
                self.org, DIRECTION, mapping.object, operation, delay_seconds=delay
            )

    def _apply_batch(
        self, db: psycopg.Connection[dict[str, Any]], changes: list[Change]
    ) -> list[tuple[Mapping, Change, str]]:
        """Apply ``changes`` in order; a refused record goes to the dead letters.

        The fast path locks the batch's rows with one query per object and
        pipelines the writes. Only when Postgres refuses something is the
        batch applied again one change at a time, each under a savepoint,
        to set the refused record aside alone.
        """
        try:
            with db.transaction():
                rows = _prefetch(db, self.by_object, changes)
                with db.pipeline():
                    return [
                        (m, c, op)
                        for m, c in self._with_mappings(changes)
                        if (op := self._apply(db, m, c, rows))
                    ]
        except (RecordRejected, psycopg.DataError, psycopg.IntegrityError) as error:
            log.debug(
                "org %s: batch refused (%s); applying one by one", self.org, error
            )
        applied = []
        for mapping, change in self._with_mappings(changes):
            operation = self._apply_safely(db, mapping, change)
            if operation:
                applied.append((mapping, change, operation))
        return applied

    def _with_mappings(self, changes: list[Change]) -> list[tuple[Mapping, Change]]:
        return [(self.by_object[c.entity.lower()], c) for c in changes]

    def _decode_all(
        self, events: list[Event]
    ) -> tuple[list[Change], list[tuple[Event, ForcelinkError]]]:
        decoded: list[Change] = []
        bad: list[tuple[Event, ForcelinkError]] = []
        for event in events:
            try:
                change = decode(event)
            except (ValueError, KeyError, TypeError) as error:
                bad.append(
                    (
                        event,
                        TerminalError(
                            f"undecodable change event: {error}", org=self.org
                        ),
                    )
                )
                continue
            if change.entity.lower() in self.by_object:
                decoded.append(change)
        return decoded, bad

    def _apply_safely(
        self, db: psycopg.Connection[dict[str, Any]], mapping: Mapping, change: Change
    ) -> str | None:
        try:
            with db.transaction():
                rows = _prefetch(db, self.by_object, [change])
                return self._apply(db, mapping, change, rows)
        except (RecordRejected, psycopg.DataError, psycopg.IntegrityError) as error:
            failure = (
                error
                if isinstance(error, ForcelinkError)
                else RecordRejected(
                    f"Postgres refused the record: {error}".strip(),
                    org=self.org,
                    object=mapping.object,
                    record=change.record_id,
                )
            )
            self._dead_letter(db, mapping, change.event, failure)
            return None

    def _dead_letter(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping | None,
        event: Event,
        error: ForcelinkError,
    ) -> None:
        object_name = mapping.object if mapping else "?"
        deadletters.add_sync(
            db,
            org=self.org,
            direction="to_postgres",
            object_name=object_name,
            record_key=event.key.decode("utf-8", "replace"),
            event=event,
            error=error,
        )
        METRICS.apply_error(self.org, DIRECTION, object_name, error)
        log.warning(
            "org %s: %s set aside as a dead letter: %s",
            self.org,
            event.key.decode("utf-8", "replace"),
            error,
        )

    # -- one change -----------------------------------------------------------

    def _apply(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        change: Change,
        rows: RowCache,
    ) -> str | None:
        """Apply one change; return the operation counted, None if skipped.

        ``rows`` holds the locked rows of the batch by (object, sfid) and is
        kept up to date, so later changes to the same record see the earlier.
        """
        key = (mapping.object.lower(), change.record_id)
        row = rows.get(key)
        if row is not None and _is_stale(row, change):
            return None
        echo = self.echo_marker in change.origin
        if change.change_type == "DELETE":
            return self._delete(db, mapping, change, row, echo)
        if row is None:
            if echo:
                return None
            operation = self._insert(db, mapping, change, rows)
            return operation
        if echo and row["_sync_state"] != "synced":
            _touch(db, mapping, row, change.committed_at)
            return None
        if not echo and row["_sync_state"] == "pending":
            return self._conflict(db, mapping, change, row)
        values = self._values(mapping, change)
        _update(db, mapping, row, values, "synced")
        self._remember(db, mapping, change.record_id, change.committed_at, values)
        return _operation(change)

    def _delete(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        change: Change,
        row: dict[str, Any] | None,
        echo: bool,
    ) -> str | None:
        if row is None:
            return None
        if not echo and row["_sync_state"] == "pending":
            self._record_conflict(
                db,
                mapping,
                change,
                row,
                conflicts.Decision(
                    conflicts.Outcome.SALESFORCE_WON, "deleted in Salesforce"
                ),
                set(),
                set(),
            )
        values = {"isdeleted": True, "systemmodstamp": change.committed_at}
        _update(db, mapping, row, values, "synced")
        return "delete"

    def _insert(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        change: Change,
        rows: RowCache,
    ) -> str | None:
        if not change.whole:
            fetched = self._fetch(mapping, [change.record_id]).get(change.record_id)
            if fetched is None:
                return None
            change = replace(change, change_type="RESYNC", fields=fetched)
        values = self._values(mapping, change)
        _upsert(db, mapping, values)
        rows[(mapping.object.lower(), change.record_id)] = {
            "id": None,
            "_sync_state": "synced",
            "_sync_at": None,
            **values,
        }
        self._remember(db, mapping, change.record_id, change.committed_at, values)
        return _operation(change)

    def _values(self, mapping: Mapping, change: Change) -> dict[str, Any]:
        """Column values of ``change``: its fields plus the system columns."""
        values = mapping.to_columns(change.fields)
        values["sfid"] = change.record_id
        values["systemmodstamp"] = values.get("systemmodstamp") or change.committed_at
        if change.change_type in ("CREATE", "UNDELETE"):
            values["isdeleted"] = False
        return {
            c: v for c, v in values.items() if mapping.column(c) or c in SYSTEM_COLUMNS
        }

    # -- conflicts --------------------------------------------------------------

    def _conflict(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        change: Change,
        row: dict[str, Any],
    ) -> str:
        before = dict(row)  # the Postgres version as it was, for the record
        incoming = self._values(mapping, change)
        sf_changed = set(incoming) - set(SYSTEM_COLUMNS)
        current = {c: row[c] for c in _data_columns(mapping)}
        pg_changed = conflicts.changed_columns(
            current, _last_values(db, self.org, mapping, change.record_id)
        )
        decision = conflicts.decide(
            mapping.conflict_policy,
            salesforce_time=change.committed_at,
            postgres_time=row["_sync_at"],
            salesforce_changed=sf_changed,
            postgres_changed=pg_changed,
        )
        if decision.outcome is conflicts.Outcome.SALESFORCE_WON:
            whole = self._fetch(mapping, [change.record_id]).get(change.record_id)
            if whole is not None:
                incoming = self._values(
                    mapping, replace(change, fields=whole, change_type="RESYNC")
                )
            _update(db, mapping, row, incoming, "synced")
            self._remember(db, mapping, change.record_id, change.committed_at, incoming)
        elif decision.outcome is conflicts.Outcome.MERGED:
            _update(db, mapping, row, incoming, "pending")
        else:
            _touch(db, mapping, row, change.committed_at)
        self._record_conflict(
            db, mapping, change, before, decision, sf_changed, pg_changed
        )
        return _operation(change)

    def _record_conflict(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        change: Change,
        row: dict[str, Any],
        decision: conflicts.Decision,
        sf_changed: set[str],
        pg_changed: set[str],
    ) -> None:
        db.execute(
            """
            INSERT INTO forcelink.conflicts
                (org, object, sfid, record_key, policy, outcome,
                 salesforce_version, postgres_version, result)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                self.org,
                mapping.object,
                change.record_id,
                str(row.get("id")),
                mapping.conflict_policy,
                decision.outcome.value,
                _jsonb(
                    {
                        "fields": change.fields,
                        "committed_at": change.committed_at,
                        "change_type": change.change_type,
                    }
                ),
                _jsonb(
                    {c: row[c] for c in _data_columns(mapping)}
                    | {"_sync_at": row["_sync_at"]}
                ),
                _jsonb(
                    {
                        "reason": decision.reason,
                        "salesforce_changed": sorted(sf_changed),
                        "postgres_changed": sorted(pg_changed),
                    }
                ),
            ),
        )
        METRICS.conflict(
            self.org, mapping.object, mapping.conflict_policy, decision.outcome.value
        )
        log.info(
            "org %s: conflict on %s %s: %s (%s)",
            self.org,
            mapping.object,
            change.record_id,
            decision.outcome.value,
            decision.reason,
        )

    def _remember(
        self,
        db: psycopg.Connection[dict[str, Any]],
        mapping: Mapping,
        sfid: str,
        stamp: datetime,
        values: dict[str, Any],
    ) -> None:
        """Keep what both sides now hold (``merge_fields`` compares against it)."""
        data = {c: v for c, v in values.items() if c not in SYSTEM_COLUMNS}
        db.execute(
            """
            INSERT INTO forcelink.sync_records
                (org, object, sfid, last_synced_at, last_systemmodstamp, last_values)
            VALUES (%s, %s, %s, now(), %s, %s)
            ON CONFLICT (org, object, sfid) DO UPDATE SET
                last_synced_at = now(),
                last_systemmodstamp = EXCLUDED.last_systemmodstamp,
                last_values = coalesce(forcelink.sync_records.last_values, '{}'::jsonb)
                              || EXCLUDED.last_values
            """,
            (self.org, mapping.object, sfid, stamp, _jsonb(data)),
        )

    # -- gaps, overflows and fetching ---------------------------------------------

    def _expand(self, changes: list[Change]) -> list[Change]:
        """Replace gap and overflow markers by the records they stand for."""
        gaps: dict[str, list[str]] = {}
        for change in changes:
            if (
                change.change_type.startswith("GAP_")
                and change.change_type != "GAP_OVERFLOW"
            ):
                gaps.setdefault(change.entity.lower(), []).append(change.record_id)
        fetched: dict[str, dict[str, Any] | None] = {}
        for entity, ids in gaps.items():
            found = self._fetch(self.by_object[entity], ids)
            fetched.update({i: found.get(i) for i in ids})
        out: list[Change] = []
        for change in changes:
            if change.change_type == "GAP_OVERFLOW":
                out.extend(self._overflow(change))
            elif change.change_type.startswith("GAP_"):
                out.append(_from_fetched(change, fetched.get(change.record_id)))
            else:
                out.append(change)
        return out

    def _overflow(self, change: Change) -> list[Change]:
        mapping = self.by_object[change.entity.lower()]
        since = change.committed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        where = f"SystemModstamp >= {since}"
        if mapping.soql_filter:
            where = f"({mapping.soql_filter}) AND {where}"
        rows = self._query(f"{_select(mapping)} WHERE {where}")
        log.info(
            "org %s: GAP_OVERFLOW on %s: re-read %d record(s) since %s",
            self.org,
            mapping.object,
            len(rows),
            since,
        )
        return [_from_fetched(replace(change, record_id=str(r["Id"])), r) for r in rows]

    def _fetch(self, mapping: Mapping, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The current records ``ids`` (deleted ones included), by id."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = ids[start : start + FETCH_CHUNK]
            quoted = ", ".join("'" + i.replace("'", "") + "'" for i in chunk)
            for row in self._query(f"{_select(mapping)} WHERE Id IN ({quoted})"):
                found[str(row["Id"])[:15]] = row
        return {i: found[i[:15]] for i in ids if i[:15] in found}

    def _query(self, soql: str) -> list[dict[str, Any]]:
        for attempt in (1, 2):
            try:
                result = self._client().query_all(soql, include_deleted=True)
                METRICS.api_call(self.org, "query")
                rows: list[dict[str, Any]] = result["records"]
                for row in rows:
                    row.pop("attributes", None)
                return rows
            except SalesforceExpiredSession as error:
                self._sf = None
                if attempt == 2:
                    raise SessionExpired(
                        "the org refused our token twice", org=self.org
                    ) from error
            except requests.RequestException as error:
                raise SourceUnavailable(
                    f"org unreachable: {error}", org=self.org
                ) from error
            except SalesforceError as error:
                raise SourceUnavailable(
                    f"org refused a query: {error}", org=self.org
                ) from error
        raise AssertionError("unreachable")

    def _client(self) -> Salesforce:
        if self._sf is None:
            token = fetch_token(self.connection)
            self._sf = salesforce_client(self.connection, token, client_tag="forcelink")
        return self._sf

    def _database(self) -> psycopg.Connection[dict[str, Any]]:
        if self._db is None or self._db.closed:
            try:
                db = psycopg.connect(self.database_url, row_factory=dict_row)
            except psycopg.OperationalError as error:
                raise SourceUnavailable(
                    f"Postgres unreachable: {error}", org=self.org
                ) from error
            apply_session_origin(db, self.origin)  # type: ignore[arg-type]
            db.commit()
            self._db = db
        return self._db


# -- decoding ---------------------------------------------------------------------


def decode(event: Event) -> Change:
    """An event-log record of ``forcelink.sf.<org>.changes`` as a ``Change``."""
    body = json.loads(event.value)
    payload = dict(body["payload"])
    header = payload.pop("ChangeEventHeader", None) or {}
    change_type = str(body["change_type"])
    if change_type == "RESYNC":
        committed = _parse_time(payload.get("SystemModstamp")) or datetime.now(UTC)
    else:
        committed = datetime.fromtimestamp(int(header["commitTimestamp"]) / 1000, UTC)
    return Change(
        event=event,
        entity=str(body["entity"]),
        record_id=str(body["record_id"]),
        change_type=change_type,
        fields=payload,
        origin=str(header.get("changeOrigin") or ""),
        committed_at=committed,
    )


def _from_fetched(change: Change, record: dict[str, Any] | None) -> Change:
    if record is None or record.get("IsDeleted"):
        return replace(change, change_type="DELETE", fields={})
    stamp = _parse_time(record.get("SystemModstamp")) or change.committed_at
    return replace(change, change_type="RESYNC", fields=record, committed_at=stamp)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    if text.endswith("+0000"):
        text = text[:-5] + "+00:00"
    return datetime.fromisoformat(text)


def _operation(change: Change) -> str:
    kind = change.change_type.lower()
    return kind if kind in ("create", "update", "delete", "undelete") else "update"


# -- SQL --------------------------------------------------------------------------


def _select(mapping: Mapping) -> str:
    paths = ["Id", "SystemModstamp", "IsDeleted"]
    paths += [f.salesforce_path for f in mapping.fields if f.reads]
    return f"SELECT {', '.join(dict.fromkeys(paths))} FROM {mapping.object}"


def _data_columns(mapping: Mapping) -> list[str]:
    return [
        f.column for f in mapping.fields if f.reads and f.column not in SYSTEM_COLUMNS
    ]


def _table(mapping: Mapping) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(mapping.schema), sql.Identifier(mapping.table_name)
    )


RowCache = dict[tuple[str, str], dict[str, Any]]
"""Locked rows of a batch by (lower-case object, sfid)."""


def _prefetch(
    db: psycopg.Connection[dict[str, Any]],
    by_object: dict[str, Mapping],
    changes: Sequence[Change],
) -> RowCache:
    """Lock and read the rows ``changes`` touch: one query per object.

    Rows are locked in sfid order, the same order every batch uses, so two
    appliers never wait on each other in a circle.
    """
    wanted: dict[str, set[str]] = {}
    for change in changes:
        wanted.setdefault(change.entity.lower(), set()).add(change.record_id)
    rows: RowCache = {}
    for entity, sfids in wanted.items():
        mapping = by_object[entity]
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in _data_columns(mapping))
        query = sql.SQL(
            "SELECT id, sfid, _sync_state, _sync_at, systemmodstamp, {} FROM {} "
            "WHERE sfid = ANY(%s) ORDER BY sfid FOR UPDATE"
        ).format(columns, _table(mapping))
        for found in db.execute(query, (sorted(sfids),)).fetchall():
            rows[(entity, found["sfid"])] = found
    return rows


def _is_stale(row: dict[str, Any], change: Change) -> bool:
    stamp = row["systemmodstamp"]
    return stamp is not None and change.committed_at < stamp


def _update(
    db: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    row: dict[str, Any],
    values: dict[str, Any],
    state: str,
) -> None:
    """Set ``values`` on ``row`` (found by sfid) and keep the cached copy equal."""
    assignments: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder())
        for c in values
        if c != "sfid"
    ]
    assignments.append(sql.SQL("_sync_state = {}").format(sql.Literal(state)))
    assignments.append(sql.SQL("_sync_error = NULL, _sync_at = now()"))
    query = sql.SQL("UPDATE {} SET {} WHERE sfid = %s").format(
        _table(mapping), sql.SQL(", ").join(assignments)
    )
    db.execute(query, [*(v for c, v in values.items() if c != "sfid"), row["sfid"]])
    row.update(values)
    row["_sync_state"] = state


def _upsert(
    db: psycopg.Connection[dict[str, Any]], mapping: Mapping, values: dict[str, Any]
) -> None:
    """Insert a row; a row that appeared meanwhile is overwritten only by newer data."""
    columns = list(values)
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
        for c in columns
        if c != "sfid"
    )
    query = sql.SQL(
        "INSERT INTO {table} ({columns}, _sync_state, _sync_at) "
        "VALUES ({values}, 'synced', now()) "
        "ON CONFLICT (sfid) DO UPDATE SET {updates}, _sync_state = 'synced', "
        "_sync_error = NULL, _sync_at = now() "
        "WHERE {table}.systemmodstamp IS NULL "
        "OR {table}.systemmodstamp <= EXCLUDED.systemmodstamp"
    ).format(
        table=_table(mapping),
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        updates=updates,
    )
    db.execute(query, list(values.values()))


def _touch(
    db: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    row: dict[str, Any],
    stamp: datetime,
) -> None:
    """Move only the row's version: its data stays as the local side left it."""
    query = sql.SQL(
        "UPDATE {} SET systemmodstamp = greatest(systemmodstamp, %s) WHERE sfid = %s"
    ).format(_table(mapping))
    db.execute(query, (stamp, row["sfid"]))
    if row["systemmodstamp"] is None or row["systemmodstamp"] < stamp:
        row["systemmodstamp"] = stamp


def _last_values(
    db: psycopg.Connection[dict[str, Any]], org: str, mapping: Mapping, sfid: str
) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT last_values FROM forcelink.sync_records "
        "WHERE org = %s AND object = %s AND sfid = %s",
        (org, mapping.object, sfid),
    ).fetchone()
    return None if row is None else _by_column(mapping, row["last_values"])


def _by_column(mapping: Mapping, last: dict[str, Any]) -> dict[str, Any]:
    """``last_values`` keyed by column.

    The Postgres→Salesforce writer (and ``push``) keep the values they sent,
    keyed by field name in Salesforce's JSON form; this applier keeps column
    values keyed by column, merged on top, so a column key is the newer one.
    """
    out: dict[str, Any] = {}
    for key, value in last.items():
        found = mapping.field(key) if mapping.column(key) is None else None
        if found is not None and not found.system:
            try:
                out[found.column] = found.to_column(value)
            except ConversionError:
                continue  # not comparable: the column then counts as changed
    out.update({k: v for k, v in last.items() if mapping.column(k) is not None})
    return out


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: json.dumps(v, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)
