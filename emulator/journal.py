"""The local org's change event journal: what CometD subscribers replay from.

Every committed change the org makes is appended here with the entity it
concerns; the CometD server (``cometd.py``) reads it back by replay id.

Replay ids behave like Salesforce's: they only grow, but they are not
contiguous, so a client that does arithmetic on them (``last + 1``) is caught
here rather than in production. A worked example, with gaps of 1 to 3::

    append(Account)  -> 2
    append(Contact)  -> 5
    append(Account)  -> 6
    after(2, None)          -> [5, 6]
    after(2, {"Account"})   -> [6]
    after(-2, None)         -> [2, 5, 6]      (everything retained)
    after(-1, None)         -> []             (only what comes next)

Events are retained for ``retention_seconds`` of the org's clock (72 hours,
as Salesforce keeps them). Expiry is applied lazily, whenever the journal is
read. Once event 2 has expired, a subscriber that stored 2 has missed
nothing (the next event it needs, 5, is still here), so 2 stays a valid
replay id; a subscriber that stored anything older has lost events, and its
id is refused::

    expire 2        -> is_valid(2) is True   (the floor: last expired id)
    expire 2 and 5  -> is_valid(2) is False, is_valid(5) is True
    is_valid(4)     -> False                  (never issued)
    is_valid(7)     -> False                  (not issued yet)

``clear()`` empties the journal but never restarts the numbering, so a replay
id stored before a reset can never name a different event after it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("forcelink.emulator.journal")

REPLAY_NEW = -1
"""Replay id asking for events appended after the subscription only."""

REPLAY_ALL = -2
"""Replay id asking for every retained event."""

DEFAULT_RETENTION_SECONDS = 72 * 3600.0

_FORMAT_VERSION = 1


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


@dataclass(frozen=True)
class StoredEvent:
    replay_id: int
    entity_name: str
    payload: dict[str, Any]
    stored_at: datetime


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] = field(repr=False)


class Journal:
    """Thread-safe, append-only (until it expires) log of change events.

    Appends may come from any thread (the org commits in worker threads);
    readers are asyncio coroutines in the server's loop, woken through
    ``loop.call_soon_threadsafe``.
    """

    def __init__(
        self,
        clock: Clock,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        *,
        seed: int | None = None,
    ) -> None:
        self._clock = clock
        self._retention = timedelta(seconds=retention_seconds)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._events: list[StoredEvent] = []
        self._ids: list[int] = []
        self._last_id = 0
        self._floor: int | None = None
        self._waiters: set[_Waiter] = set()

    def append(self, entity_name: str, payload: dict[str, Any]) -> int:
        """Store one event and return its replay id; wakes every waiter."""
        with self._lock:
            self._last_id += self._random.randint(1, 3)
            replay_id = self._last_id
            event = StoredEvent(replay_id, entity_name, payload, self._clock.now())
            self._events.append(event)
            self._ids.append(replay_id)
            waiters, self._waiters = self._waiters, set()

        log.debug("event %d appended for %s", replay_id, entity_name)
        for waiter in waiters:
            _wake(waiter)
        return replay_id

    def after(
        self,
        replay_id: int,
        entities: set[str] | None = None,
        *,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Retained events with an id above ``replay_id``, oldest first.

        ``REPLAY_ALL`` (-2) means every retained event, ``REPLAY_NEW`` (-1)
        none. ``entities`` keeps only those entity names (None: all).
        ``limit`` caps the answer so that a burst is read a batch at a time:
        call again with the last id returned.
        """
        if replay_id == REPLAY_NEW:
            return []

        with self._lock:
            self._expire()
            start = 0
            if replay_id != REPLAY_ALL:
                start = bisect.bisect_right(self._ids, replay_id)
            candidates = self._events[start:]

        found: list[StoredEvent] = []
        for event in candidates:
            if entities is not None and event.entity_name not in entities:
                continue
            found.append(event)
            if limit is not None and len(found) >= limit:
                break
        return found

    def is_valid(self, replay_id: int) -> bool:
        """Whether a subscriber may resume from ``replay_id`` without loss.

        True for -1, -2, a retained event's id, and the id of the last
        expired event (nothing after it is lost). False for an id the org
        never issued or whose successor has expired.
        """
        if replay_id in (REPLAY_NEW, REPLAY_ALL):
            return True

        with self._lock:
            self._expire()
            if replay_id == self._floor:
                return True
            index = bisect.bisect_left(self._ids, replay_id)
            return index < len(self._ids) and self._ids[index] == replay_id

    def latest(self) -> int:
        """The last replay id issued (0 before the first append)."""
        with self._lock:
            return self._last_id

    async def wait_for_new(self, after_id: int, timeout: float) -> bool:
        """Wait until an event with an id above ``after_id`` exists.

        Returns True as soon as one does (at once if one already does),
        False when ``timeout`` seconds pass first. The event may have been
        filtered out or expired by the time the caller reads: callers loop.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._last_id > after_id:
                return True
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.add(waiter)

        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return True

    def clear(self) -> None:
        """Forget every event; the numbering carries on from where it was."""
        with self._lock:
            self._events.clear()
            self._ids.clear()
            self._floor = None
        log.info("journal cleared at replay id %d", self._last_id)

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write the journal as JSON lines, atomically (a header line first)."""
        with self._lock:
            self._expire()
            events = list(self._events)
            header = {
                "version": _FORMAT_VERSION,
                "last_id": self._last_id,
                "floor": self._floor,
            }

        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        with partial.open("w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            for event in events:
                out.write(json.dumps(_event_to_json(event)) + "\n")
        os.replace(partial, target)
        log.info("journal of %d events written to %s", len(events), target)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace the journal with one written by ``dump``."""
        source = Path(path)
        with source.open(encoding="utf-8") as lines:
            header = _parse_line(source, 1, next(lines, ""))
            if header.get("version") != _FORMAT_VERSION:
                raise ValueError(f"{source}:1: unknown journal format {header!r}")
            events = [
                _event_from_json(source, number, _parse_line(source, number, line))
                for number, line in enumerate(lines, start=2)
                if line.strip()
            ]

        with self._lock:
            self._events = events
            self._ids = [event.replay_id for event in events]
            self._last_id = int(header["last_id"])
            self._floor = header.get("floor")
        log.info("journal of %d events read from %s", len(events), source)

    def _expire(self) -> None:
        """Drop events older than the retention; the caller holds the lock."""
        cutoff = self._clock.now() - self._retention
        expired = 0
        while expired < len(self._events):
            if self._events[expired].stored_at >= cutoff:
                break
            expired += 1
        if not expired:
            return

        self._floor = self._ids[expired - 1]
        del self._events[:expired]
        del self._ids[:expired]
        log.debug("%d events expired, floor is now %d", expired, self._floor)


def _wake(waiter: _Waiter) -> None:
    def resolve() -> None:
        if not waiter.future.done():
            waiter.future.set_result(None)

    # A closed loop raises RuntimeError: nobody is left there to wake.
    with contextlib.suppress(RuntimeError):
        waiter.loop.call_soon_threadsafe(resolve)


def _event_to_json(event: StoredEvent) -> dict[str, Any]:
    return {
        "replay_id": event.replay_id,
        "entity": event.entity_name,
        "payload": event.payload,
        "stored_at": event.stored_at.isoformat(),
    }


def _event_from_json(source: Path, number: int, raw: dict[str, Any]) -> StoredEvent:
    try:
        return StoredEvent(
            replay_id=int(raw["replay_id"]),
            entity_name=str(raw["entity"]),
            payload=dict(raw["payload"]),
            stored_at=datetime.fromisoformat(raw["stored_at"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{source}:{number}: bad journal event: {error}") from error


def _parse_line(source: Path, number: int, line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}:{number}: not JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{source}:{number}: expected a JSON object")
    return parsed
