"""Fuller batches for processors whose every call to the target costs quota.

``run_consumer`` hands a handler whatever one poll returned, which under a
steady trickle is a few events at a time. A processor paying one Salesforce
API call per batch and object would then spend one call per few changes.
``lingering(eventlog, ...)`` wraps an event log so that its consumers'
``poll`` waits for a fuller batch, without touching ``run_consumer``:

* it keeps polling until it holds ``target`` events, or ``linger`` seconds
  have passed since the oldest event it holds arrived, or it holds
  ``max_records`` (when a backlog is there to drain);
* it then returns the longest prefix whose length is a multiple of
  ``target`` (all of it when fewer than ``target``), keeping the rest for
  the next poll.

Worked example, target 200, events arriving 500 a second in polls of ~10:
after 0.4 s it holds 205 and returns 200 (one full collections call); the 5
kept start the next batch. At 20 a second it returns ~20 events every
``linger`` seconds: latency wins over quota when changes are rare.

Commit safety: the events returned are a prefix of what was fetched, and
fetches come in offset order within a partition, so committing the
returned events (``run_consumer`` does, after the handler) never covers an
event that was kept back. Kept events of a partition the consumer loses in
a rebalance may still be handled here while the new owner handles them
again: the at-least-once overlap the event log contract already allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from forcelink.eventlog.base import (
    DEFAULT_SESSION_TIMEOUT,
    Closing,
    Consumer,
    Event,
    EventLog,
    Position,
    TopicPartition,
)


class LingeringConsumer(Closing):
    """A ``Consumer`` whose ``poll`` returns fuller batches (module doc)."""

    def __init__(
        self, inner: Consumer, *, target: int, linger: float, max_records: int
    ) -> None:
        self.inner = inner
        self.target = target
        self.linger = linger
        self.max_records = max_records
        self._held: list[Event] = []
        self._oldest = 0.0
        self._drained = False
        """The last fetch returned less than asked: no backlog waiting."""

    @property
    def group(self) -> str:
        return self.inner.group

    def assignment(self) -> frozenset[TopicPartition]:
        return self.inner.assignment()

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Event]:
        """Up to ``self.max_records`` events; ``max_records`` of the caller is
        ignored (the wrapper decides the batch size), ``timeout`` only bounds
        the wait when nothing at all is held."""
        clock = asyncio.get_running_loop().time
        while len(self._held) < self.max_records:
            if not self._held:
                got = await self.inner.poll(self.max_records, timeout)
                if not got:
                    return []
                self._oldest = clock()
                self._drained = len(got) < self.max_records
                self._held.extend(got)
                continue
            if len(self._held) >= self.target and self._drained:
                break
            left = self._oldest + self.linger - clock()
            if left <= 0:
                break
            wanted = self.max_records - len(self._held)
            got = await self.inner.poll(wanted, min(left, timeout))
            self._drained = len(got) < wanted
            self._held.extend(got)
        return self._take(clock())

    def _take(self, now: float) -> list[Event]:
        count = len(self._held)
        if count >= self.target:
            count -= count % self.target
        batch, self._held = self._held[:count], self._held[count:]
        self._oldest = now
        return batch

    async def commit(self, done: Iterable[Event | Position]) -> None:
        await self.inner.commit(done)

    async def close(self) -> None:
        self._held = []
        await self.inner.close()


class LingeringEventLog(Closing):
    """An ``EventLog`` whose consumers are ``LingeringConsumer``s."""

    def __init__(
        self,
        inner: EventLog,
        *,
        target: int = 200,
        linger: float = 1.0,
        max_records: int = 10_000,
    ) -> None:
        self.inner = inner
        self.options: dict[str, Any] = {
            "target": target,
            "linger": linger,
            "max_records": max_records,
        }

    async def ensure_topic(self, name: str, partitions: int | None = None) -> None:
        await self.inner.ensure_topic(name, partitions)

    async def partitions(self, topic: str) -> int:
        return await self.inner.partitions(topic)

    async def publish(self, topic: str, records: Sequence[Any]) -> None:
        await self.inner.publish(topic, records)

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    ) -> Consumer:
        inner = await self.inner.consumer(
            group, topics, session_timeout=session_timeout
        )
        return LingeringConsumer(inner, **self.options)

    async def close(self) -> None:
        """The wrapped log belongs to the caller: it is not closed here."""


def lingering(
    eventlog: EventLog,
    *,
    target: int = 200,
    linger: float = 1.0,
    max_records: int = 10_000,
) -> EventLog:
    """``eventlog`` with lingering consumers (module doc)."""
    wrapped: EventLog = LingeringEventLog(
        eventlog, target=target, linger=linger, max_records=max_records
    )
    return wrapped
