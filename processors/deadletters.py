"""Dead letters: records that failed terminally, kept with how to replay them.

A processor that cannot apply one record (Salesforce rejected it, a value
cannot be converted) calls :func:`add` in the same database transaction
that records the batch's other outcomes, so the failure is stored exactly
when the batch becomes safe (invariant 1) and the rest keeps flowing
(invariant 6).

Each dead letter keeps the event-log record it came from (topic, key and
value) in ``payload``. ``retry`` publishes that record again on its topic
with its key, so it goes through the same processor, in order with any later
change to the same record; the row moves to ``retrying``, and the processor
calls :func:`resolve` when the record finally applies. ``drop`` marks rows
``discarded``; nothing is ever deleted, so the history stays visible.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forcelink.errors import ForcelinkError
from forcelink.eventlog.base import Event, EventLog, EventRecord

log = logging.getLogger("forcelink.processors.deadletters")

Direction = Literal["to_salesforce", "to_postgres"]


@dataclass(frozen=True)
class DeadLetter:
    id: int
    org: str
    direction: str
    object: str
    record_key: str | None
    payload: dict[str, Any]
    error: dict[str, Any]
    error_class: str
    attempts: int
    state: str
    created_at: datetime


def error_body(error: BaseException) -> dict[str, Any]:
    """The JSON kept for an error: class, message and its identifiers."""
    body: dict[str, Any] = {"class": type(error).__name__, "message": str(error)}
    if isinstance(error, ForcelinkError):
        body["message"] = error.message
        body.update({k: str(v) for k, v in error.context.items()})
    return body


_INSERT = """
    INSERT INTO forcelink.dead_letters
        (org, direction, object, record_key, payload, error, error_class)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
"""


def _row(
    org: str,
    direction: Direction,
    object_name: str,
    record_key: str | None,
    event: Event,
    error: BaseException,
) -> tuple[Any, ...]:
    payload = {
        "topic": event.topic,
        "key": event.key.decode("utf-8", "replace"),
        "value": event.value.decode("utf-8", "replace"),
        "headers": dict(event.headers),
    }
    log.debug("dead letter: %s %s %s: %s", org, object_name, record_key, error)
    return (
        org,
        direction,
        object_name,
        record_key,
        Jsonb(payload),
        Jsonb(error_body(error)),
        type(error).__name__,
    )


_REOPEN = """
    UPDATE forcelink.dead_letters SET state = 'open', error = %s
    WHERE org = %s AND object = %s AND record_key = %s AND state = 'retrying'
    RETURNING id
"""


async def add(
    conn: psycopg.AsyncConnection[Any],
    *,
    org: str,
    direction: Direction,
    object_name: str,
    record_key: str | None,
    event: Event,
    error: BaseException,
    reopen: bool = False,
) -> None:
    """Store ``event`` as a dead letter (in the caller's transaction).

    With ``reopen`` (the event came from ``dlq retry``), the record's letter
    being retried is opened again with the new error instead of a new one.
    """
    if reopen:
        cur = await conn.execute(
            _REOPEN, (Jsonb(error_body(error)), org, object_name, record_key)
        )
        if await cur.fetchone() is not None:
            return
    row = _row(org, direction, object_name, record_key, event, error)
    await conn.execute(_INSERT, row)


def add_sync(
    conn: psycopg.Connection[Any],
    *,
    org: str,
    direction: Direction,
    object_name: str,
    record_key: str | None,
    event: Event,
    error: BaseException,
) -> None:
    """``add`` for code that holds a synchronous connection."""
    conn.execute(_INSERT, _row(org, direction, object_name, record_key, event, error))


async def resolve(
    conn: psycopg.AsyncConnection[Any], org: str, object_name: str, record_key: str
) -> None:
    """Mark the record's dead letters being retried as resolved."""
    await conn.execute(
        """
        UPDATE forcelink.dead_letters SET state = 'resolved'
        WHERE org = %s AND object = %s AND record_key = %s AND state = 'retrying'
        """,
        (org, object_name, record_key),
    )


def list_letters(
    database_url: str,
    *,
    org: str | None = None,
    states: Sequence[str] = ("open", "retrying"),
    limit: int = 100,
) -> list[DeadLetter]:
    """Dead letters, newest first."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            """
            SELECT id, org, direction, object, record_key, payload, error,
                   error_class, attempts, state, created_at
            FROM forcelink.dead_letters
            WHERE (%(org)s::text IS NULL OR org = %(org)s) AND state = ANY(%(states)s)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"org": org, "states": list(states), "limit": limit},
        ).fetchall()
    return [DeadLetter(**row) for row in rows]


async def retry(database_url: str, eventlog: EventLog, ids: Sequence[int]) -> int:
    """Publish the dead letters ``ids`` again; return how many went out.

    The rows move to ``retrying`` only after the event log accepted them, so
    a crash in between leaves them ``open`` to retry again.
    """
    async with await psycopg.AsyncConnection.connect(
        database_url, row_factory=dict_row
    ) as conn:
        cur = await conn.execute(
            """
            SELECT id, payload FROM forcelink.dead_letters
            WHERE id = ANY(%s) AND state IN ('open', 'retrying') ORDER BY id
            """,
            (list(ids),),
        )
        rows = await cur.fetchall()
        by_topic: dict[str, list[EventRecord]] = {}
        for row in rows:
            p = row["payload"]
            record = EventRecord(
                p["key"].encode(),
                p["value"].encode(),
                {**p.get("headers", {}), "forcelink-retry": "1"},
            )
            by_topic.setdefault(p["topic"], []).append(record)
        for topic, records in by_topic.items():
            await eventlog.publish(topic, records)
        await conn.execute(
            """
            UPDATE forcelink.dead_letters
            SET state = 'retrying', attempts = attempts + 1, retried_at = now()
            WHERE id = ANY(%s)
            """,
            ([row["id"] for row in rows],),
        )
        await conn.commit()
    log.info("republished %d dead letter(s)", len(rows))
    return len(rows)


def drop(database_url: str, ids: Sequence[int]) -> int:
    """Mark dead letters discarded; return how many changed."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            """
            UPDATE forcelink.dead_letters SET state = 'discarded'
            WHERE id = ANY(%s) AND state IN ('open', 'retrying')
            """,
            (list(ids),),
        )
        return cur.rowcount


def describe(letter: DeadLetter) -> str:
    """One line for ``forcelink dlq list``."""
    message = letter.error.get("message", "")
    return (
        f"{letter.id:>6}  {letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.org:<10} "
        f"{letter.direction:<13} {letter.object:<16} {letter.record_key or '-':<24} "
        f"{letter.state:<8} x{letter.attempts}  {letter.error_class}: {message}"
    )


def as_json(letter: DeadLetter) -> str:
    return json.dumps(
        {**letter.__dict__, "created_at": letter.created_at.isoformat()}, default=str
    )
