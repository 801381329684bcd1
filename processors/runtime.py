"""The consume loop every processor runs: poll, handle, commit.

A processor is a :class:`Handler`. The loop gives it a batch of events and
commits the batch's positions only after ``handle`` has returned, which
means every event in the batch is *safe*: applied to the target, or written
to the dead letters (invariant 1). A crash anywhere before the commit makes
the next owner of the partition see those events again, so handlers apply
idempotently (invariant 2).

Failures, decided by class (invariant 6):

* ``handle`` raising a :class:`~forcelink.errors.TransientError` means "the
  target is unreachable or busy, nothing of this batch is lost": the loop
  keeps the same batch and calls ``handle`` again after a backoff (0.5 s,
  1 s, 2 s ... 30 s), committing nothing meanwhile. Records of other
  partitions owned by other consumers keep flowing.
* Per-record terminal failures are the handler's business: it dead-letters
  the record and carries on with the rest of the batch.
* Any other exception is a bug: it propagates and stops the service.

Worked example, one partition::

    poll -> offsets 10..14       handle() ok              commit 14 (position 15)
    poll -> offsets 15..19       handle() TransientError  (nothing committed)
    ... 0.5 s ...                handle(15..19) again ok  commit 19 (position 20)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from forcelink.errors import TransientError
from forcelink.eventlog.base import Consumer, Event, EventLog

log = logging.getLogger("forcelink.processors")

MAX_BACKOFF = 30.0


class Handler(Protocol):
    """What a processor implements."""

    name: str

    async def handle(self, events: Sequence[Event]) -> None:
        """Make every event safe (applied or dead-lettered), or raise.

        Raise ``TransientError`` to have the same batch handed back later.
        """
        ...


async def run_consumer(
    eventlog: EventLog,
    group: str,
    topics: Sequence[str],
    handler: Handler,
    stop: asyncio.Event,
    *,
    max_records: int = 1000,
    poll_timeout: float = 0.5,
) -> None:
    """Consume ``topics`` as a member of ``group`` until ``stop`` is set."""
    for topic in topics:
        await eventlog.ensure_topic(topic)
    consumer = await eventlog.consumer(group, topics)
    log.info("%s consuming %s as group %s", handler.name, ", ".join(topics), group)
    try:
        while not stop.is_set():
            events = await consumer.poll(max_records=max_records, timeout=poll_timeout)
            if not events:
                continue
            if not await _handle_until_safe(handler, events, stop):
                break  # stopped while the batch was held: it is re-read later
            await consumer.commit(events)
    finally:
        await _close(consumer)
        log.info("%s stopped", handler.name)


async def _handle_until_safe(
    handler: Handler, events: list[Event], stop: asyncio.Event
) -> bool:
    """True once ``handler`` made the batch safe; False if stopped first."""
    backoff = 0.5
    while True:
        try:
            await handler.handle(events)
            return True
        except TransientError as error:
            log.warning(
                "%s: batch of %d held (%s); retrying in %.1f s",
                handler.name,
                len(events),
                error,
                backoff,
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        if stop.is_set():
            return False
        backoff = min(backoff * 2, MAX_BACKOFF)


async def _close(consumer: Consumer) -> None:
    with contextlib.suppress(Exception):
        await consumer.close()
