"""The Postgres change reader: a logical slot streamed into the event log.

Data flow::

    WAL ─ walsender (pgoutput) ─▶ stream thread ─▶ batches ─▶ run() ─▶ EventLog
                       ▲            (psycopg2)    (bounded)  (asyncio)    │
                       └──── standby feedback: flush LSN ◀── acknowledged ┘

The stream thread owns the psycopg2 replication connection: it decodes each
message, drops transactions carrying forcelink's own replication origin,
turns every row change into an ``EventRecord`` keyed
``<schema>.<table>:<primary key>`` and hands batches to the asyncio side,
which publishes them. A batch is handed over when the publisher is free
(after ``batch_max_delay`` if changes keep streaming in) or when it holds
``batch_max_changes``; while a publish is under way the next batch grows, so
batches get larger exactly when the event log is the bottleneck. At most
``max_batches_in_flight`` batches exist at once, so memory is bounded
however large a transaction is.

**When the slot's position moves.** Each batch carries ``safe_lsn``: the end
of the last commit whose changes are all in this batch or an earlier one.
Only after ``EventLog.publish`` has returned for a batch may its
``safe_lsn`` be confirmed to the server (``flush_lsn`` of the standby status
update); the server then may recycle WAL before it and will never send those
transactions again. Worked example (LSNs shortened to decimals)::

    T1: B(final 100) I I C(end 120)  T2: B(final 300) I*5000 C(end 340)
    batch 1 = T1's 2 changes + T2's first 1998  safe_lsn = 120
    batch 2 = T2's next 2000                     safe_lsn = None (T2 still open)
    batch 3 = T2's last 1002                     safe_lsn = 340
    publish(batch 1) ok  → confirm 120
    publish(batch 2) ok  → nothing to confirm (T2 not complete)
    crash (SIGKILL) before batch 3 is published
    restart: the server resends from confirmed 120, i.e. all of T2 again;
    the 3998 changes of T2 already published arrive twice downstream.

So the reader is at-least-once; appliers make it exactly-once in effect by
applying idempotently (invariant 2). A position is never confirmed past a
change that the event log has not accepted (invariant 1).

The acknowledged position is sent to the server every
``feedback_interval`` seconds (and when the reader stops), not per batch.

**Event format.** Key ``<schema>.<table>:<key values>`` (several key
columns joined by ``,``; a backslash or a comma inside a value is escaped by a
backslash; the primary key, else the replica identity). Value, UTF-8 JSON::

    {"commit_lsn": "0/16B3F08", "xid": 741, "commit_time": "2024-03-01T10:00:00.5Z",
     "lsn": "0/16B3D48", "op": "update", "table": "public.account",
     "key": {"id": 42},
     "new": {"id": 42, "name": "Zoë", "amount": "12.30"},   # null for delete
     "old": {"id": 42, "name": "Zoe", "amount": "12.30"},   # null for insert
     "unchanged_toast": ["notes"],   # columns absent from "new": NOT changed
     "tx_seq": 0, "tx_size": 1}      # tx_size only on a transaction's last

``(commit_lsn, tx_seq)`` orders changes totally; repeats after a crash carry
the same pair, so a consumer can drop them. ``old`` is the whole old row
with REPLICA IDENTITY FULL (the default here), only the key columns
otherwise, and for an update only when one of those exists. An update that
changed the primary key is keyed by the new key; ``old`` holds the old
one. ``op: "truncate"`` has an empty key and ``new``/``old`` null; it is
keyed by the table alone, so it is not ordered against row changes. Values
are converted as ``values.py`` describes (numeric as a string, timestamps
ISO UTC, json parsed, bytea base64).

**Why one streaming connection and no ``streaming 'on'``.** psycopg2's
replication protocol pushes each change as soon as the server decodes it
(no polling delay, one decoding pass), and the walsender already spills a
large transaction to disk on the server (``logical_decoding_work_mem``) and
sends it only after it commits. Measured on this machine, a 200,000-row
transaction: psycopg2 stream 225,000 messages/s, psycopg 3
``pg_logical_slot_peek_binary_changes`` through a server-side cursor
250,000 messages/s, but the peek returned its first row only after
decoding the whole transaction (0.44 s; seconds for millions) and re-decodes
from the slot's restart LSN on every poll. Protocol 2 streaming would hand
us uncommitted changes that we would have to hold or retract on abort: it
saves server disk, not reader memory, so it is not requested.

**Heartbeats.** When nothing is received for ``heartbeat_interval``
seconds, the reader writes a non-transactional logical message
(``pg_logical_emit_message``); when it comes back through the slot, and
whenever the server's keepalive reports its WAL end while no transaction is
open and everything received has been published, that position is
confirmed too, so an idle publication never pins WAL.

**Errors.** A lost connection raises ``SourceUnavailable`` inside, and
``run`` reconnects with backoff, resuming at the slot's confirmed position
(batches not yet published are dropped and read again). A missing slot or
removed WAL raises ``PositionLost`` out of ``run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from forcelink.connector.postgres.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputDecoder,
    Relation,
    Truncate,
    Tuple,
    Update,
    format_lsn,
    format_pg_time,
)
from forcelink.connector.postgres.setup import (
    emit_heartbeat,
    ensure_slot,
    is_own_origin,
    retained_wal_bytes,
    sync_publication,
)
from forcelink.errors import PositionLost, SourceUnavailable, TransientError
from forcelink.eventlog import EventRecord

log = logging.getLogger("forcelink.connector.postgres")

HEARTBEAT_PREFIX = "forcelink.heartbeat"
_SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3"
_HEADERS = {"source": "postgres"}


class Publisher(Protocol):
    """The part of ``forcelink.eventlog.EventLog`` the reader needs."""

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None: ...


@dataclass
class ReaderSettings:
    dsn: str
    """Database holding the mapped tables; the slot lives in it."""
    tables: list[str]
    """Mapped ``read_write`` / ``write_only`` tables (``schema.table``)."""
    topic: str = "forcelink.pg.changes"
    slot: str = "forcelink"
    publication: str = "forcelink"
    origin: str = "forcelink"
    """Transactions whose origin ``is_own_origin(..., origin)`` are skipped."""
    replica_identity_full: bool = True
    batch_max_changes: int = 2000
    batch_max_delay: float = 0.005
    max_batches_in_flight: int = 4
    heartbeat_interval: float = 10.0
    feedback_interval: float = 0.5
    reconnect_max_delay: float = 10.0


@dataclass
class Batch:
    records: list[EventRecord] = field(default_factory=list)
    safe_lsn: int | None = None
    """Confirmable once this batch and all before it are published."""
    started: float = 0.0


@dataclass
class ReaderStats:
    changes: int = 0
    transactions: int = 0
    skipped_transactions: int = 0
    confirmed_lsn: int = 0
    batches: int = 0


class PostgresChangeReader:
    """Streams the slot into ``publisher`` until ``stop()``; see the module doc.

    ``setup()`` creates the slot and publication (idempotent); ``run()``
    streams and reconnects on transient failures. Both must be awaited from
    one event loop.
    """

    def __init__(self, settings: ReaderSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.stats = ReaderStats()
        self._stopping = threading.Event()

    async def setup(self) -> None:
        """Create the slot and the publication; align the publication's tables."""
        await asyncio.to_thread(self._setup_sync)

    def _setup_sync(self) -> None:
        with _connect(self.settings.dsn) as conn:
            sync_publication(
                conn,
                self.settings.publication,
                self.settings.tables,
                replica_identity_full=self.settings.replica_identity_full,
            )
            ensure_slot(conn, self.settings.slot)

    async def sync_publication(self, tables: list[str]) -> tuple[list[str], list[str]]:
        """Publish exactly ``tables`` from now on; returns (added, removed)."""
        self.settings.tables = list(tables)

        def work() -> tuple[list[str], list[str]]:
            with _connect(self.settings.dsn) as conn:
                return sync_publication(
                    conn,
                    self.settings.publication,
                    self.settings.tables,
                    replica_identity_full=self.settings.replica_identity_full,
                )

        return await asyncio.to_thread(work)

    async def retained_wal_bytes(self) -> int | None:
        """WAL the slot keeps (bytes); None if the slot is gone."""

        def work() -> int | None:
            with _connect(self.settings.dsn) as conn:
                return retained_wal_bytes(conn, self.settings.slot)

        return await asyncio.to_thread(work)

    def stop(self) -> None:
        """Ask ``run`` to return after the batch being published (thread-safe)."""
        self._stopping.set()

    async def run(self) -> None:
        """Stream until ``stop()``; reconnect on SourceUnavailable.

        Raises PositionLost when the slot or the WAL it needs is gone.
        """
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._run_session()
                delay = 0.5
            except TransientError as error:
                log.warning("capture interrupted, retrying in %.1fs: %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_delay)

    async def _run_session(self) -> None:
        loop = asyncio.get_running_loop()
        session = _StreamSession(self.settings, self.stats, loop, self._stopping)
        thread = threading.Thread(target=session.run, name="pg-capture", daemon=True)
        thread.start()
        try:
            await self._publish_batches(session)
        finally:
            session.cancel()
            await asyncio.to_thread(thread.join)

    async def _publish_batches(self, session: _StreamSession) -> None:
        while True:
            item = await session.batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if item.records:
                await self.publisher.publish(self.settings.topic, item.records)
                self.stats.changes += len(item.records)
            self.stats.batches += 1
            session.acknowledge(item)


class _StreamSession:
    """One replication connection, run in its own thread (see module doc)."""

    def __init__(
        self,
        settings: ReaderSettings,
        stats: ReaderStats,
        loop: asyncio.AbstractEventLoop,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.loop = loop
        self.stopping = stopping
        self.batches: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()
        self._slots = threading.Semaphore(settings.max_batches_in_flight)
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._acknowledged_lsn = 0
        self._sent_lsn = 0
        self._last_feedback = 0.0
        self._builder = _ChangeBuilder(settings.origin, stats)
        self._batch = Batch()

    def cancel(self) -> None:
        self._cancelled.set()

    def acknowledge(self, batch: Batch) -> None:
        """Called from the event loop once ``batch`` is durably published."""
        with self._lock:
            self._in_flight -= 1
            if batch.safe_lsn is not None:
                self._acknowledged_lsn = max(self._acknowledged_lsn, batch.safe_lsn)
        self._slots.release()

    def run(self) -> None:
        try:
            self._stream()
            self._hand_over(None)
        except BaseException as error:  # handed to run(): it decides
            self._hand_over(_translate(error, self.settings.slot))

    def _hand_over(self, item: Batch | BaseException | None) -> None:
        self.loop.call_soon_threadsafe(self.batches.put_nowait, item)

    def _stream(self) -> None:
        with _connect(self.settings.dsn) as aux:
            self._builder.primary_keys = _PrimaryKeys(aux)
            conn = psycopg2.connect(
                self.settings.dsn,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                options=_SESSION_OPTIONS,
            )
            try:
                cursor = conn.cursor()
                self._start(cursor)
                self._loop(cursor, aux)
            finally:
                conn.close()

    def _start(self, cursor: psycopg2.extras.ReplicationCursor) -> None:
        cursor.start_replication(
            slot_name=self.settings.slot,
            decode=False,
            options={
                "proto_version": "1",
                "publication_names": self.settings.publication,
                "messages": "true",
            },
        )
        log.info(
            "streaming slot %s (publication %s)",
            self.settings.slot,
            self.settings.publication,
        )

    def _loop(
        self, cursor: psycopg2.extras.ReplicationCursor, aux: psycopg.Connection[Any]
    ) -> None:
        builder = self._builder
        settings = self.settings
        last_received = time.monotonic()
        while not (self._cancelled.is_set() or self.stopping.is_set()):
            message = cursor.read_message()
            if message is not None:
                last_received = time.monotonic()
                records = self._batch.records
                if not records:
                    self._batch.started = last_received
                builder.feed(message.payload, message.data_start, records)
                if builder.safe_lsn > (self._batch.safe_lsn or 0):
                    self._batch.safe_lsn = builder.safe_lsn
                if len(records) >= settings.batch_max_changes or (
                    self._in_flight == 0
                    and records
                    and last_received - self._batch.started >= settings.batch_max_delay
                ):
                    self._flush(cursor)
                continue
            self._when_idle(cursor)
            if time.monotonic() - last_received > settings.heartbeat_interval:
                emit_heartbeat(aux, HEARTBEAT_PREFIX)
                last_received = time.monotonic()
            timeout = settings.batch_max_delay if self._batch.records else 0.2
            select.select([cursor], [], [], timeout)
        self._drain(cursor)

    def _when_idle(self, cursor: psycopg2.extras.ReplicationCursor) -> None:
        """Nothing to read now: flush a due batch, confirm and send feedback."""
        # Adaptive batching: hand a batch over at once when the publisher is
        # free (lowest latency); while it is busy, let the batch grow (up to
        # batch_max_changes), so a slow event log gets fewer, larger batches.
        batch = self._batch
        if (batch.records or batch.safe_lsn) and self._in_flight == 0:
            self._flush(cursor)
        # Caught up, no transaction open, nothing unpublished: the server's
        # WAL end (from its keepalive or the last commit) is safe to confirm.
        with self._lock:
            idle = self._in_flight == 0 and not self._batch.records
            if idle and not self._builder.in_transaction and cursor.wal_end:
                self._acknowledged_lsn = max(self._acknowledged_lsn, cursor.wal_end)
        self._feedback(cursor)

    def _flush(self, cursor: psycopg2.extras.ReplicationCursor) -> None:
        batch, self._batch = self._batch, Batch()
        # Wait for a free slot, still talking to the server so that a slow
        # event log does not trip wal_sender_timeout.
        while not self._slots.acquire(timeout=1.0):
            if self._cancelled.is_set():
                return
            self._feedback(cursor)
        with self._lock:
            self._in_flight += 1
        self._hand_over(batch)
        self._feedback(cursor)  # a busy stream is never idle: confirm here too

    def _drain(self, cursor: psycopg2.extras.ReplicationCursor) -> None:
        """On stop: let in-flight batches finish, then confirm what they covered."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not self._cancelled.is_set():
            with self._lock:
                if self._in_flight == 0:
                    break
            time.sleep(0.01)
        self._feedback(cursor, now=True)

    def _feedback(
        self, cursor: psycopg2.extras.ReplicationCursor, *, now: bool = False
    ) -> None:
        """Send the acknowledged position: every ``feedback_interval`` seconds.

        Not on every batch: each confirmation that moves the slot can make
        the walsender write the slot's state to disk, and measured at 2,000
        single-row transactions a second that alone made capture lag.
        """
        with self._lock:
            lsn = self._acknowledged_lsn
        moment = time.monotonic()
        due = moment - self._last_feedback >= self.settings.feedback_interval
        if due or (now and lsn > self._sent_lsn):
            # types-psycopg2 leaves send_feedback unannotated.
            cursor.send_feedback(  # type: ignore[no-untyped-call]
                flush_lsn=lsn, write_lsn=lsn, apply_lsn=lsn, force=True
            )
            self._sent_lsn = lsn
            self._last_feedback = moment
            self.stats.confirmed_lsn = lsn


class _PrimaryKeys:
    """Primary key columns per relation id, read from the catalog once."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._cache: dict[int, list[str]] = {}

    def forget(self, relation_id: int) -> None:
        self._cache.pop(relation_id, None)

    def columns(self, relation: Relation) -> list[str]:
        found = self._cache.get(relation.relation_id)
        if found is not None:
            return found
        rows = self.conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (relation.relation_id,),
        ).fetchall()
        names = [str(name) for (name,) in rows]
        if not names:
            # No primary key: the replica identity columns, else every column.
            names = [c.name for c in relation.columns if c.in_identity]
            names = names or [c.name for c in relation.columns]
        self._cache[relation.relation_id] = names
        return names


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _ChangeBuilder:
    """pgoutput messages → event records, one transaction at a time.

    The last change of a transaction is held back until the next message, so
    that at the Commit it can carry ``tx_size``: a consumer then knows when it
    has seen a whole transaction. Values are JSON objects assembled from
    pieces (the transaction's fields are encoded once per transaction) and
    held without their closing brace until it is known whether ``tx_size``
    goes in: encoding is most of the per-change cost.
    """

    def __init__(self, origin: str, stats: ReaderStats) -> None:
        self.decoder = PgOutputDecoder()
        self.origin = origin
        self.stats = stats
        self.primary_keys: _PrimaryKeys | None = None
        self.in_transaction = False
        self.safe_lsn = 0
        self._skip = False
        self._seq = 0
        self._tx = ""
        self._held: tuple[bytes, str] | None = None

    def feed(self, payload: bytes, lsn: int, out: list[EventRecord]) -> None:
        """Decode one message; append finished records to ``out``."""
        message = self.decoder.decode(payload)
        # Exact type tests, most frequent first: the decoder makes no subclasses.
        kind = type(message)
        if kind is Insert or kind is Update or kind is Delete:
            if not self._skip:
                self._change(message, lsn, out)  # type: ignore[arg-type]  # narrowed by type() above
        elif isinstance(message, Begin):
            self._begin(message)
        elif isinstance(message, Commit):
            self._commit(message, out)
        elif isinstance(message, Origin):
            self._skip = is_own_origin(message.name, self.origin)
        elif isinstance(message, Relation):
            if self.primary_keys is not None:
                self.primary_keys.forget(message.relation_id)
        elif isinstance(message, Truncate):
            if not self._skip:
                self._truncate(message, lsn, out)
        elif (
            isinstance(message, LogicalMessage)
            and not message.transactional
            and not self.in_transaction
        ):
            # A heartbeat: every commit before it has been received.
            self.safe_lsn = max(self.safe_lsn, message.lsn)

    def _begin(self, begin: Begin) -> None:
        self.in_transaction = True
        self._skip = False
        self._seq = 0
        self._tx = (
            f'{{"commit_lsn":"{format_lsn(begin.final_lsn)}","xid":{begin.xid},'
            f'"commit_time":"{format_pg_time(begin.commit_micros)}"'
        )

    def _commit(self, commit: Commit, out: list[EventRecord]) -> None:
        if self._held is not None:
            key, body = self._held
            value = f'{body},"tx_size":{self._seq}}}'
            out.append(EventRecord(key, value.encode(), _HEADERS))
            self._held = None
        if self._skip:
            self.stats.skipped_transactions += 1
        else:
            self.stats.transactions += 1
        self.in_transaction = False
        self._skip = False
        self.safe_lsn = commit.end_lsn

    def _change(
        self, change: Insert | Update | Delete, lsn: int, out: list[EventRecord]
    ) -> None:
        relation = change.relation
        if isinstance(change, Insert):
            op, new, old = "insert", change.new, None
        elif isinstance(change, Update):
            op, new, old = "update", change.new, change.old
        else:
            op, new, old = "delete", None, change.old
        assert self.primary_keys is not None
        names = self.primary_keys.columns(relation)
        if new is None:
            assert old is not None  # a delete always carries the old key
            source = old.values
        elif old is None:
            source = new.values
        else:
            source = _key_source(new, old, names)
        key = {name: source.get(name) for name in names}
        # One encoder call per change: each call has a fixed cost.
        row = _ENCODE(
            {
                "table": relation.qualified_name,
                "key": key,
                "new": None if new is None else new.values,
                "old": None if old is None else old.values,
                "unchanged_toast": [] if new is None else new.unchanged,
            }
        )
        body = (
            f'{self._tx},"lsn":"{format_lsn(lsn)}","op":"{op}",'
            f'{row[1:-1]},"tx_seq":{self._seq}'
        )
        self._seq += 1
        self._hold(_record_key(relation.qualified_name, key), body, out)

    def _truncate(self, truncate: Truncate, lsn: int, out: list[EventRecord]) -> None:
        # Keyed by the table alone: its partition is not that of the rows, so
        # a truncate is not ordered against row changes of other keys.
        for relation in truncate.relations:
            body = (
                f'{self._tx},"lsn":"{format_lsn(lsn)}",'
                f'"table":{_ENCODE(relation.qualified_name)},"op":"truncate",'
                f'"key":{{}},"new":null,"old":null,"unchanged_toast":[],'
                f'"tx_seq":{self._seq}'
            )
            self._seq += 1
            self._hold(_record_key(relation.qualified_name, {}), body, out)

    def _hold(self, key: bytes, body: str, out: list[EventRecord]) -> None:
        if self._held is not None:
            held_key, held_body = self._held
            out.append(EventRecord(held_key, (held_body + "}").encode(), _HEADERS))
        self._held = (key, body)


def _key_source(new: Tuple, old: Tuple, names: list[str]) -> dict[str, Any]:
    """Key values of an update: the new row's, unless a key column is TOASTed."""
    values = new.values
    for name in names:
        if name not in values:
            return old.values
    return values


def _record_key(table: str, key: dict[str, Any]) -> bytes:
    """``public.account:42``; several key columns joined by ``,`` (escaped)."""
    if len(key) == 1:
        (value,) = key.values()
        if type(value) is int:  # the usual key: nothing to escape
            return f"{table}:{value}".encode()
    parts = []
    for value in key.values():
        text = "" if value is None else str(value)
        parts.append(text.replace("\\", "\\\\").replace(",", "\\,"))
    return f"{table}:{','.join(parts)}".encode()


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit connection: no transaction left open to hold back xmin."""
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        raise SourceUnavailable("cannot connect to Postgres") from error


def _translate(error: BaseException, slot: str) -> BaseException:
    """Foreign errors from the stream → forcelink's tree (see module doc)."""
    if isinstance(error, (psycopg2.Error, psycopg.Error)):
        code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        text = str(error)
        lost = (
            code == "42704"
            or "has already been removed" in text
            or ("can no longer get changes" in text)
        )
        if lost:
            translated: BaseException = PositionLost(
                "replication slot or the WAL it needs is gone", slot=slot
            )
        elif isinstance(
            error,
            (
                psycopg2.OperationalError,
                psycopg2.InterfaceError,
                psycopg.OperationalError,
            ),
        ) or (isinstance(error, psycopg2.DatabaseError) and code is None):
            # An error with no server SQLSTATE comes from the client's side of
            # a broken connection (psycopg2 says "no COPY in progress" once
            # the server has shut down mid-stream): reconnecting fixes it.
            translated = SourceUnavailable(
                "Postgres replication stream lost", slot=slot
            )
        else:
            return error
        translated.__cause__ = error
        return translated
    return error
