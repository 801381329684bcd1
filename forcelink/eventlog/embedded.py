"""The embedded event log: the contract of ``base.py`` kept in Postgres.

For one machine with no Kafka; the default. The tables (migration
``0002_eventlog``) live in forcelink's own database, schema ``forcelink``.

Publishing. One ``publish`` call is one transaction: it locks the counter row
of every partition it writes (``eventlog_partitions``, in partition order so
two publishers never deadlock), takes ``next_offset`` as the first offset,
moves the counter on by the number of records, COPYs the records in and
commits. Example: partition 2 has ``next_offset = 7``; a batch with three
records for partition 2 stores them at 7, 8, 9 and leaves ``next_offset =
10``. The commit also sends a NOTIFY naming the topic, which wakes waiting
consumers.

Why a locked counter and not a sequence: a sequence hands out numbers at
insert time, not at commit time. Publisher A takes offset 7, publisher B
takes 8, B commits first; a consumer polling then sees 8 and moves its
position to 9, and when A commits 7 a moment later nobody ever reads it.
With the counter row locked until commit, B cannot get an offset until A
has committed, so offsets become visible in order and a consumer that has
seen offset N has seen everything below N.

Consuming. A member of a group owns partitions through rows in
``eventlog_leases``; it keeps its own fetch position per owned partition,
starting at the group's committed position (``eventlog_positions``, the
next offset to process; 0 if the group never committed there). ``poll``
reads from the fetch positions and moves them; ``commit`` writes the
committed position, but only for partitions this member still owns, in one
statement that checks the lease and the member's liveness.

Membership. Every member heartbeats (each third of its session timeout) by
running ``_rebalance`` in one transaction under the group's advisory lock:
drop members whose ``expires_at`` passed (and their leases), extend its own
``expires_at``, compute the target assignment (``assign``: round robin of
the partitions over the live members, sorted by id -- every member computes
the same one), release the leases it holds but should not, and take the
free ones it should have. A partition held by a live member is never taken:
its holder releases it at its own next rebalance. A NOTIFY on the groups
channel makes the other members rebalance at once instead of at their next
heartbeat, so a join or a clean leave settles within a round trip; a
SIGKILLed member's partitions move after its session timeout.

Retention. ``purge`` deletes records older than ``retention_seconds`` that
every group reading the topic has committed past. Consumers run it about
once a minute; an advisory lock keeps it to one process at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from forcelink.config import EmbeddedLogConfig
from forcelink.errors import SourceUnavailable
from forcelink.eventlog.base import (
    DEFAULT_SESSION_TIMEOUT,
    Closing,
    Event,
    EventRecord,
    Position,
    TopicPartition,
    UnknownTopic,
    last_positions,
    partition_for,
)

log = logging.getLogger("forcelink.eventlog.embedded")

TOPICS_CHANNEL = "forcelink_eventlog"
"""NOTIFY channel: payload is a topic that got new records."""

GROUPS_CHANNEL = "forcelink_eventlog_groups"
"""NOTIFY channel: payload is a group whose membership or leases changed."""

LOCK_CLASS = 0x464C4547
"""First key of every advisory lock taken here (the second is a name's hash)."""

PURGE_INTERVAL = 60.0

Conn = psycopg.AsyncConnection[Any]


def assign(
    members: Mapping[str, Sequence[str]], partitions: Mapping[str, int]
) -> dict[TopicPartition, str]:
    """Which member should own each partition: round robin over sorted members.

    ``members`` maps member id -> subscribed topics; ``partitions`` maps
    topic -> partition count. One counter runs across topics so that members
    subscribed to the same topics get equal shares (6 + 6 partitions over 4
    members: 3 each). Pure and deterministic: every member computes it alike.
    """
    owners: dict[TopicPartition, str] = {}
    turn = 0
    for topic in sorted(partitions):
        eligible = sorted(m for m, topics in members.items() if topic in topics)
        if not eligible:
            continue
        for partition in range(partitions[topic]):
            owners[TopicPartition(topic, partition)] = eligible[turn % len(eligible)]
            turn += 1
    return owners


@asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    """Turn connection failures into SourceUnavailable (retryable)."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise SourceUnavailable(
            f"event log database unavailable while {what}: {error}"
        ) from error


async def _connect(url: str) -> Conn:
    async with _translated("connecting"):
        return await psycopg.AsyncConnection.connect(url, autocommit=True)


class _Link:
    """One connection, reopened after it breaks, used by one task at a time.

    The connection is in autocommit mode: a lone statement commits at once
    and ``conn.transaction()`` is a real BEGIN/COMMIT. (Without autocommit a
    lone statement would leave a transaction open, and every later
    ``transaction()`` block would only be a savepoint inside it, holding its
    locks forever.)
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Conn | None = None
        self.lock = asyncio.Lock()

    @asynccontextmanager
    async def use(self, what: str) -> AsyncIterator[Conn]:
        """The open connection, lock held; a broken one is dropped on failure."""
        async with self.lock:
            if self._conn is None or self._conn.closed:
                self._conn = await _connect(self._url)
            try:
                async with _translated(what):
                    yield self._conn
            except SourceUnavailable:
                await self.close()
                raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()


class EmbeddedEventLog(Closing):
    """The event log in Postgres; see the module docstring for how."""

    def __init__(
        self,
        database_url: str,
        config: EmbeddedLogConfig | None = None,
    ) -> None:
        self._url = database_url
        self._config = config or EmbeddedLogConfig()
        self._link = _Link(database_url)
        self._partitions: dict[str, int] = {}

    async def close(self) -> None:
        await self._link.close()

    async def ensure_topic(self, name: str, partitions: int | None = None) -> None:
        count = partitions or self._config.partitions
        if count < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1 (got {count})")
        async with self._link.use("creating a topic") as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, name)
            )
            cur = await conn.execute(
                "SELECT count(*) FROM forcelink.eventlog_partitions WHERE topic = %s",
                (name,),
            )
            row = await cur.fetchone()
            if row and row[0]:
                self._partitions[name] = int(row[0])
                return
            await conn.execute(
                "INSERT INTO forcelink.eventlog_partitions (topic, partition)"
                " SELECT %s, generate_series(0, %s - 1)",
                (name, count),
            )
        self._partitions[name] = count
        log.info("created topic %s with %d partitions", name, count)

    async def partitions(self, topic: str) -> int:
        if topic in self._partitions:
            return self._partitions[topic]
        async with self._link.use("reading a topic") as conn:
            counts = await _partition_counts(conn, [topic])
        self._partitions[topic] = counts[topic]
        return counts[topic]

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        if not records:
            return
        count = await self.partitions(topic)
        batches: dict[int, list[EventRecord]] = {}
        for record in records:
            batches.setdefault(partition_for(record.key, count), []).append(record)

        async with self._link.use("publishing") as conn, conn.transaction():
            firsts = await _reserve_offsets(conn, topic, batches)
            await _copy_records(conn, topic, batches, firsts)
            await conn.execute("SELECT pg_notify(%s, %s)", (TOPICS_CHANNEL, topic))
        log.debug("published %d records to %s", len(records), topic)

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    ) -> EmbeddedConsumer:
        consumer = EmbeddedConsumer(self, group, list(topics), session_timeout)
        try:
            await consumer.start()
        except BaseException:
            await consumer.close()
            raise
        return consumer

    async def purge(self) -> int:
        """Delete records past retention that every reading group has processed.

        Returns how many were deleted (0 if another process is purging).
        """
        async with self._link.use("purging old records") as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext('purge'))", (LOCK_CLASS,)
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                return 0
            cur = await conn.execute(PURGE, (self._config.retention_seconds,))
            deleted = cur.rowcount
        if deleted:
            log.info("purged %d records past retention", deleted)
        return deleted


# Floors per partition: the lowest committed position among the groups that
# have ever committed on the topic (a group with no row for one partition has
# not processed anything there: its floor is 0). Partitions of topics no
# group reads have no floor: only age limits them.
PURGE = """
WITH readers AS (
    SELECT DISTINCT group_id, topic FROM forcelink.eventlog_positions
), floors AS (
    SELECT p.topic, p.partition, min(coalesce(pos.next_offset, 0)) AS floor
    FROM forcelink.eventlog_partitions p
    JOIN readers g ON g.topic = p.topic
    LEFT JOIN forcelink.eventlog_positions pos
        ON pos.group_id = g.group_id AND pos.topic = p.topic
        AND pos.partition = p.partition
    GROUP BY p.topic, p.partition
)
DELETE FROM forcelink.eventlog_records r
WHERE r.created_at < now() - make_interval(secs => %s)
AND r."offset" < coalesce(
    (SELECT f.floor FROM floors f
     WHERE f.topic = r.topic AND f.partition = r.partition),
    9223372036854775807)
"""


async def _partition_counts(conn: Conn, topics: Sequence[str]) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT topic, count(*) FROM forcelink.eventlog_partitions"
        " WHERE topic = ANY(%s) GROUP BY topic",
        (list(topics),),
    )
    counts = {str(topic): int(n) for topic, n in await cur.fetchall()}
    missing = [t for t in topics if t not in counts]
    if missing:
        raise UnknownTopic(f"no such topic: {', '.join(missing)} (ensure_topic first)")
    return counts


async def _reserve_offsets(
    conn: Conn, topic: str, batches: Mapping[int, Sequence[EventRecord]]
) -> dict[int, int]:
    """Lock the partitions' counters (in order) and move them past the batch.

    Returns the first offset of each partition's records. The locks are held
    until the caller's transaction ends.
    """
    partitions = sorted(batches)
    cur = await conn.execute(
        "SELECT partition, next_offset FROM forcelink.eventlog_partitions"
        " WHERE topic = %s AND partition = ANY(%s) ORDER BY partition FOR UPDATE",
        (topic, partitions),
    )
    firsts = {int(p): int(n) for p, n in await cur.fetchall()}
    await conn.execute(
        "UPDATE forcelink.eventlog_partitions c SET next_offset = c.next_offset + b.n"
        " FROM unnest(%s::int[], %s::bigint[]) AS b(partition, n)"
        " WHERE c.topic = %s AND c.partition = b.partition",
        (partitions, [len(batches[p]) for p in partitions], topic),
    )
    return firsts


async def _copy_records(
    conn: Conn,
    topic: str,
    batches: Mapping[int, Sequence[EventRecord]],
    firsts: Mapping[int, int],
) -> None:
    copy_sql = (
        "COPY forcelink.eventlog_records"
        ' (topic, partition, "offset", key, value, headers) FROM STDIN (FORMAT BINARY)'
    )
    async with conn.cursor().copy(copy_sql) as copy:
        copy.set_types(["text", "int4", "int8", "bytea", "bytea", "jsonb"])
        for partition, records in batches.items():
            offset = firsts[partition]
            for record in records:
                headers = dict(record.headers) if record.headers else None
                await copy.write_row(
                    (topic, partition, offset, record.key, record.value, headers)
                )
                offset += 1


class EmbeddedConsumer(Closing):
    """One member of a consumer group of the embedded log."""

    def __init__(
        self,
        log_: EmbeddedEventLog,
        group: str,
        topics: list[str],
        session_timeout: float,
    ) -> None:
        self._log = log_
        self._group = group
        self._topics = topics
        self._session_timeout = session_timeout
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._link = _Link(log_._url)
        self._listen = _Link(log_._url)
        self._listening_on: Conn | None = None
        self._fetch: dict[TopicPartition, int] = {}
        self._rebalance_due = True
        self._heartbeat: asyncio.Task[None] | None = None
        self._last_purge = time.monotonic()
        self._closed = False

    @property
    def group(self) -> str:
        return self._group

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._fetch)

    async def start(self) -> None:
        async with self._link.use("joining a group") as conn:
            await _partition_counts(conn, self._topics)
        await self._rebalance()
        self._heartbeat = asyncio.create_task(
            self._heartbeat_loop(), name=f"eventlog heartbeat {self.member_id}"
        )
        log.info(
            "member %s joined group %s for %s",
            self.member_id,
            self._group,
            self._topics,
        )

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            if self._rebalance_due:
                await self._rebalance()
            events = await self._read(max_records)
            if events:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self._wait(remaining)

    async def commit(self, done: Iterable[Event | Position]) -> None:
        highest = last_positions(done)
        if not highest:
            return
        tps = list(highest)
        async with self._link.use("committing") as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))",
                (LOCK_CLASS, self._group),
            )
            cur = await conn.execute(
                COMMIT,
                (
                    [tp.topic for tp in tps],
                    [tp.partition for tp in tps],
                    [highest[tp] + 1 for tp in tps],
                    self._group,
                    self.member_id,
                ),
            )
            stored = {TopicPartition(t, p) for t, p in await cur.fetchall()}
        dropped = set(tps) - stored
        if dropped:
            log.info(
                "group %s: dropped commits for partitions %s no longer owned by %s",
                self._group,
                sorted((tp.topic, tp.partition) for tp in dropped),
                self.member_id,
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        try:
            await self._leave()
        except SourceUnavailable as error:
            log.warning("member %s left without saying so: %s", self.member_id, error)
        await self._link.close()
        await self._listen.close()
        self._fetch.clear()

    async def _leave(self) -> None:
        async with self._link.use("leaving a group") as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (LOCK_CLASS, self._group),
            )
            for table in ("eventlog_leases", "eventlog_members"):
                query = (
                    "DELETE FROM forcelink.{} WHERE group_id = %s AND member_id = %s"
                )
                await conn.execute(
                    sql.SQL(query).format(sql.Identifier(table)),
                    (self._group, self.member_id),
                )
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (GROUPS_CHANNEL, self._group)
            )
        log.info("member %s left group %s", self.member_id, self._group)

    async def _heartbeat_loop(self) -> None:
        interval = self._session_timeout / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._rebalance()
                if time.monotonic() - self._last_purge > PURGE_INTERVAL:
                    self._last_purge = time.monotonic()
                    await self._log.purge()
            except SourceUnavailable as error:
                log.warning("member %s: heartbeat failed: %s", self.member_id, error)
            except Exception:
                # Keep beating: a member that stops silently loses its
                # partitions while its owner still thinks it consumes.
                log.exception("member %s: heartbeat failed", self.member_id)

    async def _rebalance(self) -> None:
        async with self._link.use("rebalancing") as conn, conn.transaction():
            owned, rejoined, changed = await _rebalance(
                conn, self._group, self.member_id, self._topics, self._session_timeout
            )
            if changed:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (GROUPS_CHANNEL, self._group)
                )
            gained = owned - set(self._fetch) if not rejoined else owned
            starts = await _committed(conn, self._group, gained)
        self._rebalance_due = False
        self._apply_assignment(owned, starts)

    def _apply_assignment(
        self, owned: set[TopicPartition], starts: Mapping[TopicPartition, int]
    ) -> None:
        before = set(self._fetch)
        for tp in before - owned:
            del self._fetch[tp]
        self._fetch.update(starts)
        if before != owned:
            log.info(
                "member %s of group %s now owns %s",
                self.member_id,
                self._group,
                sorted((tp.topic, tp.partition) for tp in owned),
            )

    async def _read(self, max_records: int) -> list[Event]:
        if not self._fetch:
            return []
        # An equal share per partition: reading max_records from each and
        # dropping the surplus cost six times the rows on six partitions.
        tps = list(self._fetch)
        async with self._link.use("polling") as conn:
            cur = await conn.execute(
                READ,
                (
                    [tp.topic for tp in tps],
                    [tp.partition for tp in tps],
                    [self._fetch[tp] for tp in tps],
                    -(-max_records // len(tps)),
                ),
            )
            rows = await cur.fetchall()
        events = _interleave(rows, max_records)
        for event in events:
            tp = TopicPartition(event.topic, event.partition)
            if tp in self._fetch:
                self._fetch[tp] = event.offset + 1
        return events

    async def _wait(self, timeout: float) -> None:
        """Sleep until a NOTIFY for our topics or group arrives, or ``timeout``."""
        async with self._listen.use("waiting for records") as conn:
            if conn is not self._listening_on:
                # A new connection (the first, or one after a failure) listens
                # from now on; records may have come before: read again first.
                for channel in (TOPICS_CHANNEL, GROUPS_CHANNEL):
                    await conn.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(channel))
                    )
                self._listening_on = conn
                return
            async for notify in conn.notifies(timeout=timeout, stop_after=1):
                if notify.channel == GROUPS_CHANNEL and notify.payload == self._group:
                    self._rebalance_due = True


COMMIT = """
INSERT INTO forcelink.eventlog_positions (group_id, topic, partition, next_offset)
SELECT l.group_id, c.topic, c.partition, c.next_offset
FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS c(topic, partition, next_offset)
JOIN forcelink.eventlog_leases l
    ON l.group_id = %s AND l.topic = c.topic AND l.partition = c.partition
JOIN forcelink.eventlog_members m
    ON m.group_id = l.group_id AND m.member_id = l.member_id
WHERE l.member_id = %s AND m.expires_at > now()
ON CONFLICT (group_id, topic, partition)
DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()
RETURNING topic, partition
"""

READ = """
SELECT r.topic, r.partition, r."offset", r.key, r.value, r.headers,
       extract(epoch FROM r.created_at)::float8
FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS w(topic, partition, start)
CROSS JOIN LATERAL (
    SELECT * FROM forcelink.eventlog_records x
    WHERE x.topic = w.topic AND x.partition = w.partition AND x."offset" >= w.start
    ORDER BY x."offset"
    LIMIT %s
) r
"""


def _interleave(rows: Sequence[Any], max_records: int) -> list[Event]:
    """Take up to ``max_records`` rows, fairly across partitions, in offset order.

    ``rows`` holds each partition's rows in offset order; the result keeps a
    prefix of each partition's rows, so fetch positions stay contiguous.
    """
    queues: dict[tuple[str, int], list[Any]] = {}
    for row in rows:
        queues.setdefault((row[0], row[1]), []).append(row)
    taken: list[Event] = []
    depth = 0
    while len(taken) < max_records and any(len(q) > depth for q in queues.values()):
        for queue in queues.values():
            if depth < len(queue) and len(taken) < max_records:
                topic, partition, offset, key, value, headers, ts = queue[depth]
                taken.append(
                    Event(topic, partition, offset, key, value, headers or {}, ts)
                )
        depth += 1
    return taken


async def _rebalance(
    conn: Conn, group: str, member: str, topics: list[str], session_timeout: float
) -> tuple[set[TopicPartition], bool, bool]:
    """One heartbeat, in the caller's transaction: see the module docstring.

    Returns (partitions owned now, whether this member had to join afresh,
    whether the group changed in a way other members should react to).
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, group)
    )
    cur = await conn.execute(
        "DELETE FROM forcelink.eventlog_members"
        " WHERE group_id = %s AND expires_at < now()",
        (group,),
    )
    expired = cur.rowcount
    await conn.execute(
        "DELETE FROM forcelink.eventlog_leases l WHERE group_id = %s AND NOT EXISTS"
        " (SELECT 1 FROM forcelink.eventlog_members m"
        "  WHERE m.group_id = l.group_id AND m.member_id = l.member_id)",
        (group,),
    )
    cur = await conn.execute(
        "INSERT INTO forcelink.eventlog_members"
        " (group_id, member_id, topics, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (group_id, member_id) DO UPDATE"
        " SET expires_at = excluded.expires_at, topics = excluded.topics"
        " RETURNING xmax = 0",
        (group, member, topics, session_timeout),
    )
    row = await cur.fetchone()
    joined = bool(row and row[0])

    cur = await conn.execute(
        "SELECT member_id, topics FROM forcelink.eventlog_members WHERE group_id = %s",
        (group,),
    )
    members = {str(m): list(t) for m, t in await cur.fetchall()}
    wanted_topics = sorted({t for ts in members.values() for t in ts})
    counts = await _partition_counts(conn, wanted_topics)
    mine = [tp for tp, owner in assign(members, counts).items() if owner == member]

    cur = await conn.execute(
        "DELETE FROM forcelink.eventlog_leases"
        " WHERE group_id = %s AND member_id = %s AND (topic, partition) NOT IN"
        " (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (group, member, [tp.topic for tp in mine], [tp.partition for tp in mine]),
    )
    released = cur.rowcount
    await conn.execute(
        "INSERT INTO forcelink.eventlog_leases (group_id, topic, partition, member_id)"
        " SELECT %s, t, p, %s FROM unnest(%s::text[], %s::int[]) AS u(t, p)"
        " ON CONFLICT DO NOTHING",
        (group, member, [tp.topic for tp in mine], [tp.partition for tp in mine]),
    )
    cur = await conn.execute(
        "SELECT topic, partition FROM forcelink.eventlog_leases"
        " WHERE group_id = %s AND member_id = %s",
        (group, member),
    )
    owned = {TopicPartition(t, p) for t, p in await cur.fetchall()}
    return owned, joined, bool(joined or expired or released)


async def _committed(
    conn: Conn, group: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed position for each of ``tps`` (0 when none)."""
    wanted = list(tps)
    if not wanted:
        return {}
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM forcelink.eventlog_positions"
        " WHERE group_id = %s AND (topic, partition) IN"
        " (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (group, [tp.topic for tp in wanted], [tp.partition for tp in wanted]),
    )
    found = {TopicPartition(t, p): int(n) for t, p, n in await cur.fetchall()}
    return {tp: found.get(tp, 0) for tp in wanted}
