"""Reverse backfill: send rows that never reached Salesforce (no ``sfid``).

The Postgres reader only sees changes made after forcelink's slot existed;
rows written before that (an application that ran alone, a bulk load) have
no ``sfid`` and no change in the slot. ``push`` sends them:

1. read the next ``chunk`` rows of the table with ``sfid IS NULL`` (not
   deleted, not ``failed`` unless asked), in ``id`` order: one chunk in
   memory at a time (invariant 7);
2. upsert them with ONE Bulk API 2.0 ingest job on the mapping's external
   id (``SalesforceWriter.bulk``): a record the org already has under that
   external id is updated, not created twice;
3. write the outcome back in one transaction, in a session carrying
   forcelink's replication origin (the capture reader skips it, so nothing
   echoes, and the pending trigger leaves the rows alone): ``sfid`` set,
   ``_sync_state='synced'`` where the row is still the version that was
   read (same ``xmin``), ``forcelink.sync_records`` filled as the writer
   fills it; a rejected record gets ``failed``, the error, and a dead letter
   that ``forcelink dlq retry`` replays through the Postgres→Salesforce
   writer.

Resumable by construction: a row whose sfid was written back is never
selected again, and a crash between the upsert and the write-back sends the
same rows again to the same records (upsert by external id). A row without
an external id value cannot be upserted, so it is marked ``failed`` with a
message saying so instead of being created blindly (a blind create repeated
after a crash would duplicate the record).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forcelink.connector.postgres.setup import apply_session_origin
from forcelink.connector.salesforce.writer import (
    CallRejected,
    RecordResult,
    SalesforceWriter,
)
from forcelink.errors import ConfigError, RecordRejected, SourceUnavailable
from forcelink.eventlog.base import Event
from forcelink.mapping import Mapping, types
from forcelink.processors import deadletters

log = logging.getLogger("forcelink.processors.push")

CHUNK_ROWS = 10_000
"""Rows per Bulk API 2.0 job (and per write-back transaction)."""


@dataclass
class PushResult:
    object: str
    table: str
    sent: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    jobs: int = 0


@dataclass
class _Outcome:
    row: dict[str, Any]
    payload: dict[str, Any]
    """JSON form, as kept in ``sync_records.last_values``."""
    result: RecordResult | None = None
    error: BaseException | None = None


def push(
    database_url: str,
    writer: SalesforceWriter,
    mapping: Mapping,
    *,
    topic: str,
    chunk_rows: int = CHUNK_ROWS,
    include_failed: bool = False,
    origin: str = "forcelink",
    progress: Callable[[int], object] | None = None,
) -> PushResult:
    """Send every row of ``mapping``'s table that has no sfid (module doc).

    ``topic`` is the Postgres change topic (``forcelink.topics.PG_CHANGES``): dead
    letters name it, so ``dlq retry`` replays them through the writer.
    ``progress`` is called with the number of rows settled after each job.
    Raises ``ConfigError`` for a mapping that cannot be pushed, and the
    writer's ``TransientError`` when the org stays unreachable (what was
    written back stays; run again to resume).
    """
    _check_pushable(mapping)
    result = PushResult(mapping.object, mapping.table)
    try:
        conn = psycopg.connect(database_url, row_factory=dict_row)
    except psycopg.OperationalError as error:
        raise SourceUnavailable(f"cannot reach the database: {error}") from error
    with conn:
        apply_session_origin(conn, origin)  # type: ignore[arg-type]  # any row type
        conn.commit()
        after = 0
        while True:
            rows = _pending_rows(conn, mapping, after, chunk_rows, include_failed)
            if not rows:
                break
            after = int(rows[-1]["id"])
            outcomes = _send(writer, mapping, rows)
            result.jobs += 1
            _write_back(conn, mapping, outcomes, topic, result)
            if progress is not None:
                progress(len(rows))
    log.info(
        "%s: pushed %d row(s): %d created, %d updated, %d failed",
        mapping.object,
        result.sent,
        result.created,
        result.updated,
        result.failed,
    )
    return result


def count_unsent(
    database_url: str, mapping: Mapping, include_failed: bool = False
) -> int:
    """How many rows ``push`` would send."""
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                _table(mapping), _unsent_condition(include_failed)
            )
        ).fetchone()
    return int(found[0]) if found else 0


def _check_pushable(mapping: Mapping) -> None:
    if mapping.mode == "read_only":
        raise ConfigError(
            f"{mapping.object} is mapped read_only: nothing is sent to Salesforce",
            file=mapping.file,
            line=mapping.line,
            key="mode",
        )
    if not mapping.upsert_key or not mapping.upsert_column:
        raise ConfigError(
            f"{mapping.object}: push upserts by external id, and the mapping has"
            " no upsert_key (add one so a rerun finds the records it created)",
            file=mapping.file,
            line=mapping.line,
            key="upsert_key",
        )


def _unsent_condition(include_failed: bool) -> sql.Composable:
    states = "" if include_failed else " AND _sync_state IS DISTINCT FROM 'failed'"
    return sql.SQL("sfid IS NULL AND isdeleted IS NOT TRUE" + states)


def _table(mapping: Mapping) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(mapping.schema), sql.Identifier(mapping.table_name)
    )


def _pending_rows(
    conn: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    after: int,
    limit: int,
    include_failed: bool,
) -> list[dict[str, Any]]:
    rows = conn.execute(
        sql.SQL(
            "SELECT t.*, t.xmin::text AS _xmin FROM {} AS t WHERE id > %s AND {}"
            " ORDER BY id LIMIT %s"
        ).format(_table(mapping), _unsent_condition(include_failed)),
        (after, limit),
    ).fetchall()
    conn.commit()
    return rows


# ----------------------------------------------------------------- sending


def _send(
    writer: SalesforceWriter, mapping: Mapping, rows: list[dict[str, Any]]
) -> list[_Outcome]:
    """One Bulk upsert for the rows that can be sent; every row's outcome."""
    outcomes: list[_Outcome] = []
    sendable: list[_Outcome] = []
    csv_rows: list[dict[str, str]] = []
    for row in rows:
        record = {k: v for k, v in row.items() if k != "_xmin"}
        try:
            payload = mapping.to_salesforce(record)
            cells = mapping.to_salesforce(record, form="csv")
        except RecordRejected as error:
            outcomes.append(_Outcome(row, {}, error=error))
            continue
        outcome = _Outcome(row, payload)
        outcomes.append(outcome)
        if payload.get(mapping.upsert_key or "") is None:
            outcome.error = RecordRejected(
                f"no {mapping.upsert_key} value: push upserts by external id;"
                f" set {mapping.upsert_column} and run push again",
                org=mapping.org,
                object=mapping.object,
                record=_record_key(mapping, row),
                field=mapping.upsert_key,
            )
            continue
        sendable.append(outcome)
        csv_rows.append(cells)
    if not sendable:
        return outcomes
    try:
        results = writer.bulk(mapping.object, "upsert", csv_rows, mapping.upsert_key)
    except CallRejected as error:
        for outcome in sendable:
            outcome.error = error
        return outcomes
    for outcome, record_result in zip(sendable, results, strict=True):
        outcome.result = record_result
    return outcomes


def _failure(mapping: Mapping, outcome: _Outcome) -> BaseException | None:
    if outcome.error is not None:
        return outcome.error
    result = outcome.result
    if result is None or result.ok:
        return None
    first = result.errors[0] if result.errors else {}
    code = first.get("statusCode") or first.get("errorCode")
    return RecordRejected(
        f"{code}: {first.get('message')}",
        org=mapping.org,
        object=mapping.object,
        record=_record_key(mapping, outcome.row),
    )


# -------------------------------------------------------------- write-back


def _write_back(
    conn: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    outcomes: list[_Outcome],
    topic: str,
    result: PushResult,
) -> None:
    """Every outcome of one job in one transaction (origin-tagged session)."""
    done = [o for o in outcomes if o.result is not None and o.result.ok]
    failed = [(o, e) for o in outcomes if (e := _failure(mapping, o)) is not None]
    with conn.transaction():
        if done:
            _mark_synced(conn, mapping, done)
            _remember_sent(conn, mapping, done)
        for outcome, error in failed:
            _mark_failed(conn, mapping, outcome, error, topic)
    conn.commit()
    result.sent += len(outcomes)
    result.created += sum(1 for o in done if o.result and o.result.created)
    result.updated += sum(1 for o in done if o.result and not o.result.created)
    result.failed += len(failed)


def _mark_synced(
    conn: psycopg.Connection[dict[str, Any]], mapping: Mapping, done: list[_Outcome]
) -> None:
    """sfid always; ``synced`` only where the row is still as it was read (a
    row the application changed meanwhile stays ``pending`` for the writer)."""
    conn.execute(
        sql.SQL(
            """
            UPDATE {} AS t
            SET sfid = v.sfid,
                _sync_state = CASE WHEN t.xmin::text = v.xmin
                                   THEN 'synced' ELSE t._sync_state END,
                _sync_error = CASE WHEN t.xmin::text = v.xmin
                                   THEN NULL ELSE t._sync_error END,
                _sync_at = now()
            FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, xmin, sfid)
            WHERE t.id = v.id
            """
        ).format(_table(mapping)),
        (
            [o.row["id"] for o in done],
            [o.row["_xmin"] for o in done],
            [o.result.id if o.result else None for o in done],
        ),
    )


def _remember_sent(
    conn: psycopg.Connection[dict[str, Any]], mapping: Mapping, done: list[_Outcome]
) -> None:
    """``sync_records`` as the Postgres→Salesforce writer keeps it: the values
    sent, by field name, so a later change to the row is written by upsert."""
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO forcelink.sync_records
                (org, object, sfid, last_synced_at, last_values_hash, last_values)
            VALUES (%s, %s, %s, now(), %s, %s::jsonb)
            ON CONFLICT (org, object, sfid) DO UPDATE
            SET last_synced_at = excluded.last_synced_at,
                last_values_hash = excluded.last_values_hash,
                last_values = excluded.last_values
            """,
            [
                (mapping.org, mapping.object, o.result.id, *_fingerprint(o.payload))
                for o in done
                if o.result is not None and o.result.id
            ],
        )


def _fingerprint(payload: dict[str, Any]) -> tuple[str, str]:
    text = types.dumps(payload)
    return hashlib.sha256(text.encode()).hexdigest(), text


def _mark_failed(
    conn: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    outcome: _Outcome,
    error: BaseException,
    topic: str,
) -> None:
    body = deadletters.error_body(error)
    conn.execute(
        sql.SQL(
            "UPDATE {} SET _sync_state = 'failed', _sync_error = %s, _sync_at = now()"
            " WHERE id = %s"
        ).format(_table(mapping)),
        (Jsonb(body), outcome.row["id"]),
    )
    key = _record_key(mapping, outcome.row)
    deadletters.add_sync(
        conn,
        org=mapping.org,
        direction="to_salesforce",
        object_name=mapping.object,
        record_key=key,
        event=_replay_event(mapping, outcome.row, topic, key),
        error=error,
    )
    log.debug("%s %s rejected: %s", mapping.object, key, error)


def _record_key(mapping: Mapping, row: dict[str, Any]) -> str:
    """The Postgres reader's event key of the row: ``salesforce.account:42``."""
    return f"{mapping.table}:{row['id']}"


def _replay_event(mapping: Mapping, row: dict[str, Any], topic: str, key: str) -> Event:
    """A change event as the Postgres reader writes it, so that ``dlq retry``
    hands the row to the writer (which re-reads it and sends it)."""
    value = {
        "op": "update",
        "table": mapping.table,
        "key": {"id": row["id"]},
        "new": None,
        "old": None,
        "source": "push",
    }
    return Event(
        topic=topic,
        partition=0,
        offset=-1,
        key=key.encode(),
        value=json.dumps(value).encode(),
        headers={},
        timestamp=time.time(),
    )
