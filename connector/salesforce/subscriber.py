"""Salesforce Change Data Capture into the event log.

Data flow::

    org ─ CometD /data/ChangeEvents ─▶ StreamingClient ─▶ batch ─▶ EventLog
                                                          │         │ acked
                      forcelink.offsets (replay id) ◀─────┴─────────┘

One subscription per org on ``/data/ChangeEvents``, so one replay id says
where the org's whole stream has got to. Each change event becomes one
event-log record per record id it names (an UPDATE that touched 3 records
identically arrives once with 3 ``recordIds``), keyed by the record id, so
changes to one record keep their order in one partition. Events of objects
no mapping reads are dropped here, but still move the replay id.

**When the replay id moves** (invariant 1). Messages are read in batches;
a batch is published, and only after ``EventLog.publish`` has returned is
the batch's last replay id written to ``forcelink.offsets``. Worked
example::

    stored replay id 41
    receive 43, 44, 47          publish 3 records ok   store 47
    receive 48, 52              crash before publish    (47 still stored)
    restart: subscribe with 47  the org sends 48, 52 again

So the subscriber is at least once; the applier is idempotent. A first start
with nothing stored subscribes with -2 (every event the org still holds),
which overlaps the backfill rather than leaving a hole after it.

**When the org no longer holds the replay id** (events older than 72 hours,
or a restored org), the subscription fails with ``PositionLost``. The
subscriber then subscribes with -1 (new events from now on) *first*, and
only then re-reads every mapped object from the last SystemModstamp
Postgres has seen, publishing each record as a ``RESYNC`` change. Events
committed while the re-read runs arrive through the new subscription, so
there is no hole between the two; overlaps are settled by the applier,
which keeps the newer version of a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiosfstream_ng.replay import ReplayMarker, ReplayOption

from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    salesforce_client,
)
from forcelink.connector.salesforce.streaming import (
    ALL_CHANGES,
    StreamingClient,
    streaming_client,
)
from forcelink.errors import PositionLost, SourceUnavailable
from forcelink.eventlog.base import EventLog, EventRecord
from forcelink.mapping import Mapping
from forcelink.metrics import METRICS

log = logging.getLogger("forcelink.connector.salesforce.subscriber")

OFFSET_SOURCE = "cometd"
RESYNC = "RESYNC"


@dataclass
class SubscriberSettings:
    org: str
    conn: OrgConnection
    database_url: str
    topic: str
    mappings: Sequence[Mapping]
    """The org's mappings that read from Salesforce (read_only, read_write)."""
    channel: str = ALL_CHANGES
    batch_max: int = 500
    batch_delay: float = 0.02
    """Seconds to wait for more messages before publishing a batch."""


class ChangeSubscriber:
    """Streams one org's change events into the event log; see the module doc."""

    def __init__(self, settings: SubscriberSettings, eventlog: EventLog) -> None:
        self.settings = settings
        self.eventlog = eventlog
        self.objects = {m.object.lower() for m in settings.mappings}
        self.published = 0
        self._db: psycopg.Connection[Any] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe and publish until ``stop``; errors propagate to the caller.

        ``SourceUnavailable`` and ``SessionExpired`` are transient: the service
        restarts the subscriber, which resumes from the stored replay id.
        """
        s = self.settings
        await self.eventlog.ensure_topic(s.topic)
        markers = await asyncio.to_thread(self._load_marker)
        try:
            client = await self._open(markers, ReplayOption.ALL_EVENTS)
        except PositionLost:
            log.warning("org %s: stored replay id expired; resyncing", s.org)
            markers.clear()
            await asyncio.to_thread(self._forget_marker)
            client = await self._open(markers, ReplayOption.NEW_EVENTS)
            await self._resync()
        try:
            await self._stream(client, markers, stop)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            self._forget_offsets_db()
            METRICS.set_connector_up(s.org, "salesforce", False)

    async def _open(
        self, markers: dict[str, ReplayMarker], default: ReplayOption
    ) -> StreamingClient:
        client = streaming_client(self.settings.conn, markers, default_replay=default)
        await client.open()
        try:
            await client.subscribe(self.settings.channel)
        except BaseException:
            # A refused subscription (an expired replay id) leaves an open
            # client with a long poll in flight: close it before going on.
            with contextlib.suppress(Exception):
                await client.close()
            raise
        METRICS.set_connector_up(self.settings.org, "salesforce", True)
        return client

    async def _stream(
        self,
        client: StreamingClient,
        markers: dict[str, ReplayMarker],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            batch = await self._next_batch(client, stop)
            if not batch:
                continue
            await self._publish(batch)
            last = batch[-1]
            async with client.replay_storage(last):
                pass
            await asyncio.to_thread(self._store_marker, markers)

    async def _next_batch(
        self, client: StreamingClient, stop: asyncio.Event
    ) -> list[dict[str, Any]]:
        """Wait for one message, then take what else is already queued.

        Only the first ``receive`` may be cancelled (by ``stop``): a message
        lost that way was never marked, so the org sends it again.
        """
        first = asyncio.create_task(client.receive())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {first, stopper}, return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        if first not in done:
            first.cancel()
            return []
        batch = [first.result()]
        deadline = time.monotonic() + self.settings.batch_delay
        while len(batch) < self.settings.batch_max:
            if client.pending_count:
                batch.append(await client.receive())
            elif time.monotonic() >= deadline:
                break
            else:
                await asyncio.sleep(0.002)
        return batch

    async def _publish(self, batch: list[dict[str, Any]]) -> None:
        records: list[EventRecord] = []
        for message in batch:
            records.extend(self._records(message))
        if records:
            await self.eventlog.publish(self.settings.topic, records)
            self.published += len(records)
        log.debug("org %s: published %d change(s)", self.settings.org, len(records))

    def _records(self, message: dict[str, Any]) -> list[EventRecord]:
        payload = message["data"]["payload"]
        header = payload["ChangeEventHeader"]
        entity = str(header.get("entityName", ""))
        if entity.lower() not in self.objects:
            return []
        replay_id = message["data"]["event"]["replayId"]
        change_type = str(header.get("changeType", ""))
        ids = list(header.get("recordIds") or []) or [f"{entity}:*"]
        operation = _operation(change_type)
        METRICS.event_read(self.settings.org, "salesforce", entity, operation, len(ids))
        out = []
        for record_id in ids:
            value = {
                "org": self.settings.org,
                "entity": entity,
                "record_id": record_id,
                "replay_id": replay_id,
                "change_type": change_type,
                "payload": payload,
            }
            out.append(
                EventRecord(
                    record_id.encode(),
                    json.dumps(value, separators=(",", ":")).encode(),
                    {"source": "salesforce", "org": self.settings.org},
                )
            )
        return out

    # -- replay id bookkeeping --------------------------------------------------

    def _load_marker(self) -> dict[str, ReplayMarker]:
        s = self.settings
        with psycopg.connect(s.database_url) as conn:
            row = conn.execute(
                "SELECT position, details FROM forcelink.offsets "
                "WHERE org = %s AND source = %s AND key = %s",
                (s.org, OFFSET_SOURCE, s.channel),
            ).fetchone()
        if row is None:
            log.info(
                "org %s: no stored replay id; replaying all retained events", s.org
            )
            return {}
        details = row[1] or {}
        log.info("org %s: resuming %s after replay id %s", s.org, s.channel, row[0])
        return {s.channel: ReplayMarker(details.get("date", ""), int(row[0]))}

    def _store_marker(self, markers: dict[str, ReplayMarker]) -> None:
        s = self.settings
        marker = markers.get(s.channel)
        if marker is None:
            return
        try:
            self._offsets_db().execute(
                """
                INSERT INTO forcelink.offsets (org, source, key, position, details)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (org, source, key) DO UPDATE
                SET position = EXCLUDED.position, details = EXCLUDED.details,
                    updated_at = now()
                """,
                (
                    s.org,
                    OFFSET_SOURCE,
                    s.channel,
                    str(marker.replay_id),
                    json.dumps({"date": marker.date}),
                ),
            )
        except psycopg.OperationalError as error:
            self._forget_offsets_db()
            raise SourceUnavailable(
                f"Postgres unreachable storing the replay id: {error}", org=s.org
            ) from error
        METRICS.replay_position_age.labels(org=s.org).set(_age_seconds(marker.date))

    def _offsets_db(self) -> psycopg.Connection[Any]:
        """One autocommit connection for replay ids, kept between batches."""
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.settings.database_url, autocommit=True)
        return self._db

    def _forget_offsets_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def _forget_marker(self) -> None:
        s = self.settings
        with psycopg.connect(s.database_url) as conn:
            conn.execute(
                "DELETE FROM forcelink.offsets"
                " WHERE org = %s AND source = %s AND key = %s",
                (s.org, OFFSET_SOURCE, s.channel),
            )

    # -- resync after a lost position -------------------------------------------

    async def _resync(self) -> None:
        total = 0
        for mapping in self.settings.mappings:
            since = await asyncio.to_thread(
                _last_seen, self.settings.database_url, mapping
            )
            for chunk in await asyncio.to_thread(self._query_since, mapping, since):
                await self.eventlog.publish(self.settings.topic, chunk)
                total += len(chunk)
        log.info("org %s: resync published %d record(s)", self.settings.org, total)

    def _query_since(
        self, mapping: Mapping, since: datetime | None
    ) -> list[list[EventRecord]]:
        conn = self.settings.conn
        client = salesforce_client(conn, fetch_token(conn))
        query = _with_since(mapping, since)
        chunks: list[list[EventRecord]] = []
        chunk: list[EventRecord] = []
        for row in client.query_all_iter(query, include_deleted=True):
            row.pop("attributes", None)
            value = {
                "org": self.settings.org,
                "entity": mapping.object,
                "record_id": row["Id"],
                "replay_id": None,
                "change_type": RESYNC,
                "payload": row,
            }
            chunk.append(
                EventRecord(str(row["Id"]).encode(), json.dumps(value).encode())
            )
            if len(chunk) >= 1000:
                chunks.append(chunk)
                chunk = []
        if chunk:
            chunks.append(chunk)
        return chunks


def _operation(change_type: str) -> str:
    kind = change_type.removeprefix("GAP_").lower()
    return kind if kind in ("create", "update", "delete", "undelete") else "update"


def _age_seconds(date: str) -> float:
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(date.replace("Z", "+00:00"))
        return max(0.0, (datetime.now(UTC) - when).total_seconds())
    return 0.0


def _last_seen(database_url: str, mapping: Mapping) -> datetime | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT max(systemmodstamp) FROM {mapping.table}"
        ).fetchone()
    return row[0] if row else None


def _with_since(mapping: Mapping, since: datetime | None) -> str:
    """The mapping's query restricted to records modified at or after ``since``."""
    paths = [f.salesforce_path for f in mapping.fields if f.reads]
    query = f"SELECT {', '.join(dict.fromkeys(paths))} FROM {mapping.object}"
    conditions = [f"({mapping.soql_filter})"] if mapping.soql_filter else []
    if since is not None:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions.append(f"SystemModstamp >= {stamp}")
    return f"{query} WHERE {' AND '.join(conditions)}" if conditions else query
