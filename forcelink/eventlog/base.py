"""The event log contract: what connectors publish to and processors consume from.

Every backend (``embedded`` in Postgres, ``kafka``) keeps the same promises:

* **Topics and partitions.** A topic has a fixed number of partitions, set
  when it is created (``ensure_topic``). A record goes to partition
  ``partition_for(key, partitions)`` -- Kafka's own murmur2 partitioner, the
  same function in both backends -- so one key always lands in one
  partition and its records keep the order they were published in.
* **Durable publish.** ``publish`` returns only when every record is durably
  accepted (Kafka ``acks=all``; Postgres transaction committed). If it
  raises, some records may have been stored anyway: the caller publishes the
  batch again, and consumers see duplicates, never gaps.
* **Offsets.** Within a partition each record gets the next offset:
  0, 1, 2, ... A consumer sees a partition's records in offset order.
* **Consumer groups and committed positions.** Consumers that share a group
  name split the partitions of their topics between them; each partition
  has at most one owner at a time (apart from the hand-over window below).
  The group remembers, per partition, the *committed position*: the offset
  of the next record to hand out. ``commit`` moves it.
* **At-least-once.** A consumer that dies without committing loses nothing:
  whoever owns the partition next starts again at the committed position,
  so uncommitted records are delivered again. Processors therefore apply
  events idempotently (invariant 2).

Worked example, one partition, one group ``g``::

    publish a, b, c, d, e          -> offsets 0 1 2 3 4
    consumer X polls               -> events at offsets 0 1 2 (max_records=3)
    X processes 0 and 1, commits the event at offset 1
                                   -> committed position of g = 2
    X polls again                  -> 3 4   (X's own fetch position was 3)
    X is SIGKILLed before committing anything else
    after the session timeout, consumer Y of g owns the partition
    Y polls                        -> 2 3 4 (from the committed position 2:
                                      offset 2 is delivered twice in total,
                                      3 and 4 a second time)
    Y commits the event at offset 4
                                   -> committed position of g = 5

``commit`` takes the *last processed* record of a partition (an ``Event`` or
a ``Position`` naming its offset) and stores that offset plus one, as Kafka
does. Committing several events of one partition keeps the highest. A
commit for a partition the consumer no longer owns (the group rebalanced
meanwhile) is dropped with an INFO log: the new owner redelivers from the
committed position, which is exactly what at-least-once needs.

Hand-over: when a consumer joins or dies, partitions move. A consumer that
loses a partition stops returning its records at its next poll; records it
already returned may still be processed by it while the new owner processes
them again. That overlap is the price of at-least-once and is harmless when
applying is idempotent.

Errors: an unreachable broker or database raises ``SourceUnavailable``
(retryable: the caller backs off and repeats the call); publishing to a
topic that was never created raises ``UnknownTopic`` (terminal).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from forcelink.errors import TerminalError

DEFAULT_SESSION_TIMEOUT = 10.0
"""Seconds without a heartbeat after which a consumer's partitions move on."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One record to publish: the key decides the partition, hence the order."""

    key: bytes
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A processed record's place: commit it to mark it and all before it done."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Event:
    """One stored record as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: Mapping[str, str]
    timestamp: float
    """When the log accepted it, seconds since the Unix epoch."""

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)


class Closing:
    """``async with`` support for anything with an ``async close()``."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class UnknownTopic(TerminalError):
    """Publishing to, or consuming from, a topic that was never created."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (as its Java client computes it), unsigned 32 bits."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length & ~3
    for k in struct.unpack_from(f"<{end >> 2}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    tail = length - end
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key``: the same as Kafka's default partitioner picks.

    Using Kafka's function keeps a key's partition the same whether the
    embedded log or Kafka stores it, and whether forcelink or another Kafka
    producer wrote it.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def last_positions(done: Iterable[Event | Position]) -> dict[TopicPartition, int]:
    """Per partition, the highest processed offset among ``done``."""
    highest: dict[TopicPartition, int] = {}
    for item in done:
        tp = TopicPartition(item.topic, item.partition)
        if item.offset > highest.get(tp, -1):
            highest[tp] = item.offset
    return highest


@runtime_checkable
class Consumer(Protocol):
    """A member of a consumer group; get one from ``EventLog.consumer``."""

    @property
    def group(self) -> str: ...

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns right now (may change at each poll)."""
        ...

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Event]:
        """Up to ``max_records`` events, in offset order within each partition.

        Waits up to ``timeout`` seconds for something to arrive; returns an
        empty list if nothing did. Successive polls continue where the last
        one stopped, whether or not it was committed.
        """
        ...

    async def commit(self, done: Iterable[Event | Position]) -> None:
        """Mark, per partition, everything up to the highest of ``done`` processed.

        Returns once the group's position is durably stored.
        """
        ...

    async def close(self) -> None:
        """Leave the group (partitions move at once) without committing."""
        ...

    async def __aenter__(self) -> Consumer: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class EventLog(Protocol):
    """A backend: create with ``forcelink.eventlog.open_event_log(config)``."""

    async def ensure_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` with ``partitions`` (default: the configured count).

        Does nothing if it exists; an existing topic keeps its partitions.
        """
        ...

    async def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has; ``UnknownTopic`` if none."""
        ...

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        """Store ``records``; return only once every one is durably accepted."""
        ...

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    ) -> Consumer:
        """Join ``group`` as a new member consuming ``topics``.

        A member whose heartbeats stop for ``session_timeout`` seconds (its
        process died, its connection broke) loses its partitions to the
        surviving members.
        """
        ...

    async def close(self) -> None:
        """Release connections; consumers made by this log must be closed first."""
        ...

    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
