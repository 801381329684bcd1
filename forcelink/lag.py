"""How far behind forcelink is: lag read from the event log, and its history.

Every change crosses the event log, so the log is where waiting work shows.
For each consumer group forcelink runs (one per org and direction), the
*waiting* records of a partition are those at or past the group's committed
position: read from the source, not yet made safe by the applier.

* ``forcelink_eventlog_consumer_lag_events`` is the number of waiting
  records: per partition ``end - committed``, summed.
* ``forcelink_replication_lag_seconds`` is the age of the oldest waiting
  record: ``now - (when the log accepted it)``, 0 when nothing waits.

Worked example, embedded log, group ``forcelink.pg_to_sf.acme``::

    partition 0: next_offset 120, committed 120 -> 0 waiting
    partition 1: next_offset 57,  committed 50  -> 7 waiting, the record at
                 offset 50 was accepted at 12:00:00
    at 12:00:42 -> consumer lag 7 events, replication lag 42 s

The age counts from the log's acceptance, not the source commit: a change
still in the WAL or in the org's stream (not yet read) does not count here;
the slot's retained WAL and the replay position age cover that stretch.

Kafka: committed offsets come from the group coordinator, end offsets from
the brokers, and the timestamp of the record at each lagging partition's
committed offset from one fetch of one record (the producer's create time).
That costs a fetch per lagging partition per sample and nothing when
caught up.

``LagSampler`` runs inside ``forcelink run`` and sets the gauges every few
seconds, together with the dead letters waiting, the slot's retained WAL and
the Postgres connector's state; it also keeps an hour of lag and throughput
points in memory (``HISTORY``) for the status page. It makes no Salesforce
call: the API allowance gauges are set by the clients from the
``Sforce-Limit-Info`` header of calls they make anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from forcelink import topics
from forcelink.config import Config
from forcelink.errors import SourceUnavailable
from forcelink.mapping import Mapping
from forcelink.metrics import DIRECTIONS, Metrics

log = logging.getLogger("forcelink.lag")

SAMPLE_SECONDS = 5.0
HISTORY_STEP_SECONDS = 10.0
HISTORY_SECONDS = 3600.0

DEAD_LETTER_DIRECTIONS = {"to_salesforce": "pg_to_sf", "to_postgres": "sf_to_pg"}


@dataclass(frozen=True)
class Group:
    """One consumer group forcelink runs: an org, a direction, a topic."""

    org: str
    direction: str
    group_id: str
    topic: str


def groups_for(mappings: Iterable[Mapping]) -> list[Group]:
    """The consumer groups ``forcelink run`` starts for ``mappings``.

    Names come from ``forcelink.topics``, as the runner's do.
    """
    found: set[Group] = set()
    for m in mappings:
        if m.mode != "write_only":
            found.add(
                Group(
                    m.org,
                    "sf_to_pg",
                    topics.consumer_group("sf_to_pg", m.org),
                    topics.salesforce_changes(m.org),
                )
            )
        if m.mode != "read_only":
            found.add(
                Group(
                    m.org,
                    "pg_to_sf",
                    topics.consumer_group("pg_to_sf", m.org),
                    topics.PG_CHANGES,
                )
            )
    return sorted(found, key=lambda g: (g.org, g.direction))


@dataclass(frozen=True)
class GroupLag:
    group: Group
    waiting: int
    """Records at or past the committed position, all partitions."""
    committed: int
    """Sum of committed positions: its growth is the group's throughput."""
    oldest: float | None
    """When the log accepted the oldest waiting record (epoch seconds)."""

    def seconds(self, now: float) -> float:
        if self.waiting <= 0 or self.oldest is None:
            return 0.0
        return max(now - self.oldest, 0.0)


_EMBEDDED = """
SELECT p.next_offset, coalesce(pos.next_offset, 0),
    (SELECT extract(epoch FROM r.created_at)::float8
     FROM forcelink.eventlog_records r
     WHERE r.topic = p.topic AND r.partition = p.partition
       AND r."offset" >= coalesce(pos.next_offset, 0)
     ORDER BY r."offset" LIMIT 1)
FROM forcelink.eventlog_partitions p
LEFT JOIN forcelink.eventlog_positions pos
    ON pos.group_id = %s AND pos.topic = p.topic AND pos.partition = p.partition
WHERE p.topic = %s
"""


def embedded_lag(database_url: str, groups: Sequence[Group]) -> list[GroupLag]:
    """Lag of ``groups`` in the embedded log; SourceUnavailable if unreachable."""
    result: list[GroupLag] = []
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            for group in groups:
                rows = conn.execute(_EMBEDDED, (group.group_id, group.topic))
                result.append(_summed(group, rows.fetchall()))
    except psycopg.Error as error:
        raise SourceUnavailable(
            f"cannot read event log positions: {type(error).__name__}"
        ) from error
    return result


def _summed(group: Group, rows: Sequence[tuple[Any, ...]]) -> GroupLag:
    waiting = committed = 0
    oldest: float | None = None
    for end, position, accepted in rows:
        committed += int(position)
        if int(end) > int(position):
            waiting += int(end) - int(position)
            if accepted is not None:
                stamp = float(accepted)
                oldest = stamp if oldest is None else min(oldest, stamp)
    return GroupLag(group, waiting, committed, oldest)


async def kafka_lag(config: Config, groups: Sequence[Group]) -> list[GroupLag]:
    """Lag of ``groups`` on Kafka; SourceUnavailable if the brokers are not."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    kafka = config.eventlog.kafka
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=5000
    )
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=5000,
    )
    try:
        await admin.start()
        await reader.start()
        return [
            await _kafka_group(admin, reader, kafka.topic_prefix, g) for g in groups
        ]
    except KafkaError as error:
        raise SourceUnavailable(f"cannot read Kafka offsets: {error!r}") from error
    finally:
        with contextlib.suppress(Exception):
            await reader.stop()
        with contextlib.suppress(Exception):
            await admin.close()


async def _kafka_group(admin: Any, reader: Any, prefix: str, group: Group) -> GroupLag:
    from aiokafka import TopicPartition as KafkaTP

    topic = prefix + group.topic
    # The reader is subscribed to nothing, so its own metadata never lists a
    # topic's partitions: ask the cluster through the admin client.
    described = await admin.describe_topics([topic])
    partitions = {
        p["partition"]
        for t in described
        if t.get("error_code") == 0
        for p in t.get("partitions", [])
    }
    tps = [KafkaTP(topic, p) for p in sorted(partitions)]
    if not tps:
        return GroupLag(group, 0, 0, None)
    ends = await reader.end_offsets(tps)
    offsets = await admin.list_consumer_group_offsets(group.group_id, partitions=tps)
    rows = []
    for tp in tps:
        meta = offsets.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else 0
        accepted = None
        if ends[tp] > position:
            accepted = await _record_time(reader, tp, position)
        rows.append((ends[tp], position, accepted))
    return _summed(group, rows)


async def _record_time(reader: Any, tp: Any, offset: int) -> float | None:
    """The create time of the record at ``offset`` (or the first after it)."""
    reader.assign([tp])
    reader.seek(tp, offset)
    batch = await reader.getmany(tp, timeout_ms=1000, max_records=1)
    records = batch.get(tp) or []
    return records[0].timestamp / 1000.0 if records else None


async def sample_lag(config: Config, groups: Sequence[Group]) -> list[GroupLag]:
    """The lag of every group, from whichever event log the config names."""
    if config.eventlog.backend == "kafka":
        return await kafka_lag(config, groups)
    return await asyncio.to_thread(embedded_lag, config.database.url, groups)


@dataclass(frozen=True)
class Point:
    """One history sample: per (org, direction), lag seconds and events/s."""

    at: float
    lag: dict[tuple[str, str], float]
    rate: dict[tuple[str, str], float]


@dataclass
class History:
    """The last hour of lag and throughput, one point per ~10 s, in memory.

    Throughput is the growth of the groups' committed positions between two
    samples divided by the time between them: events made safe per second.
    """

    step: float = HISTORY_STEP_SECONDS
    window: float = HISTORY_SECONDS
    points: deque[Point] = field(default_factory=deque)
    _last: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, lags: Sequence[GroupLag], now: float | None = None) -> bool:
        """Add a point unless the last one is younger than ``step``."""
        now = time.time() if now is None else now
        with self._lock:
            if self.points and now - self.points[-1].at < self.step * 0.9:
                return False
            lag: dict[tuple[str, str], float] = {}
            rate: dict[tuple[str, str], float] = {}
            for item in lags:
                key = (item.group.org, item.group.direction)
                lag[key] = max(lag.get(key, 0.0), item.seconds(now))
                rate[key] = rate.get(key, 0.0) + self._rate(key, item, now)
            self.points.append(Point(now, lag, rate))
            while self.points and now - self.points[0].at > self.window:
                self.points.popleft()
            return True

    def _rate(self, key: tuple[str, str], item: GroupLag, now: float) -> float:
        before = self._last.get(key)
        self._last[key] = (now, item.committed)
        if before is None or now <= before[0]:
            return 0.0
        return max(item.committed - before[1], 0) / (now - before[0])

    def stale(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            return not self.points or now - self.points[-1].at >= self.step

    def series(self) -> list[dict[str, Any]]:
        """The points as JSON-ready dicts, oldest first."""
        with self._lock:
            points = list(self.points)
        return [
            {
                "at": round(p.at, 3),
                "lag": {f"{o}/{d}": round(v, 3) for (o, d), v in p.lag.items()},
                "rate": {f"{o}/{d}": round(v, 3) for (o, d), v in p.rate.items()},
            }
            for p in points
        ]


HISTORY = History()
"""The process-wide history the status page draws."""


class LagSampler:
    """Sets the position gauges every ``interval`` seconds until stopped.

    Errors reading a source are logged (once per kind of error, then at
    DEBUG) and the gauges keep their last values: a database outage shows
    on ``/readyz``, not as a crash of the sampler.
    """

    def __init__(
        self,
        config: Config,
        mappings: Sequence[Mapping],
        metrics: Metrics,
        *,
        slot: str | None = None,
        history: History = HISTORY,
        interval: float = SAMPLE_SECONDS,
    ) -> None:
        self.config = config
        self.orgs = sorted(o.name for o in config.orgs)
        mappings = [m for m in mappings if m.org in self.orgs]
        self.groups = groups_for(mappings)
        self.writers = sorted({m.org for m in mappings if m.mode != "read_only"})
        self.metrics = metrics
        self.slot = slot
        self.history = history
        self.interval = interval
        self._last_error = ""

    async def run(self, stop: asyncio.Event) -> None:
        log.info("sampling lag of %d consumer groups", len(self.groups))
        while not stop.is_set():
            await self.sample_once()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def sample_once(self) -> None:
        for step in (self._eventlog, self._bookkeeping):
            try:
                await step()
            except SourceUnavailable as error:
                self._warn(error)

    async def _eventlog(self) -> None:
        lags = await sample_lag(self.config, self.groups)
        now = time.time()
        for item in lags:
            labels = {"org": item.group.org, "direction": item.group.direction}
            self.metrics.replication_lag.labels(**labels).set(item.seconds(now))
            self.metrics.eventlog_consumer_lag.labels(**labels).set(item.waiting)
        self.history.record(lags, now)

    async def _bookkeeping(self) -> None:
        waiting, slot = await asyncio.to_thread(self._read_database)
        for org in self.orgs:
            for direction in DIRECTIONS:
                count = waiting.get((org, direction), 0)
                self.metrics.dead_letters_waiting.labels(
                    org=org, direction=direction
                ).set(count)
        if slot is None:
            return
        retained, active = slot
        for org in self.writers:
            self.metrics.slot_retained_wal.labels(org=org).set(retained)
            self.metrics.set_connector_up(org, "postgres", active)

    def _read_database(
        self,
    ) -> tuple[dict[tuple[str, str], int], tuple[int, bool] | None]:
        try:
            with psycopg.connect(self.config.database.url, connect_timeout=5) as conn:
                waiting = dead_letters_waiting(conn)
                slot = slot_state(conn, self.slot) if self.slot else None
        except psycopg.Error as error:
            raise SourceUnavailable(
                f"cannot read bookkeeping: {type(error).__name__}"
            ) from error
        return waiting, slot

    def _warn(self, error: SourceUnavailable) -> None:
        kind = f"{type(error).__name__}: {error}"
        if kind != self._last_error:
            log.warning("lag sample incomplete: %s", error)
        else:
            log.debug("lag sample incomplete: %s", error)
        self._last_error = kind


def dead_letters_waiting(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    """Open and retrying dead letters per (org, direction)."""
    rows = conn.execute(
        "SELECT org, direction, count(*) FROM forcelink.dead_letters"
        " WHERE state IN ('open', 'retrying') GROUP BY org, direction"
    ).fetchall()
    return {
        (org, DEAD_LETTER_DIRECTIONS.get(direction, direction)): int(count)
        for org, direction, count in rows
    }


def slot_state(conn: psycopg.Connection[Any], slot: str) -> tuple[int, bool] | None:
    """(retained WAL bytes, reader attached) of ``slot``; None if it is absent."""
    row = conn.execute(
        "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)"
        "::bigint, active FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), bool(row[1])
