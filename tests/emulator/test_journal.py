"""The emulator's change event journal: replay ids, retention, waking, files."""

from __future__ import annotations

import asyncio
import itertools
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from forcelink.emulator.journal import REPLAY_ALL, REPLAY_NEW, Journal


class ManualClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def _filled(clock: ManualClock, entities: list[str]) -> tuple[Journal, list[int]]:
    journal = Journal(clock, seed=7)
    ids = [journal.append(name, {"n": i}) for i, name in enumerate(entities)]
    return journal, ids


def test_journal__ids_grow_with_gaps() -> None:
    journal, ids = _filled(ManualClock(), ["Account"] * 200)

    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert ids == sorted(ids)
    assert steps <= {1, 2, 3}
    assert steps != {1}, "ids must not be contiguous"
    assert journal.latest() == ids[-1]


@pytest.mark.parametrize(
    ("start", "entities", "expected"),
    [
        (REPLAY_ALL, None, [0, 1, 2, 3]),
        (REPLAY_NEW, None, []),
        ("id0", None, [1, 2, 3]),
        ("id2", None, [3]),
        ("id3", None, []),
        (REPLAY_ALL, {"Account"}, [0, 2]),
        ("id0", {"Contact", "WorkOrder"}, [1, 3]),
    ],
)
def test_journal__after(
    start: int | str, entities: set[str] | None, expected: list[int]
) -> None:
    journal, ids = _filled(
        ManualClock(), ["Account", "Contact", "Account", "WorkOrder"]
    )
    replay_id = ids[int(start[2:])] if isinstance(start, str) else start

    found = journal.after(replay_id, entities)

    assert [event.replay_id for event in found] == [ids[i] for i in expected]
    assert [event.payload["n"] for event in found] == expected


def test_journal__after_limit_reads_in_batches() -> None:
    journal, ids = _filled(ManualClock(), ["Account"] * 10)

    first = journal.after(REPLAY_ALL, None, limit=4)
    rest = journal.after(first[-1].replay_id, None, limit=100)

    assert [e.replay_id for e in first + rest] == ids
    assert len(first) == 4


def test_journal__validity_and_expiry() -> None:
    clock = ManualClock()
    journal, ids = _filled(clock, ["Account"])
    clock.advance(hours=1)
    ids += [journal.append("Account", {"n": 1}), journal.append("Account", {"n": 2})]
    unissued = [i for i in range(ids[0], ids[-1]) if i not in ids]

    assert all(journal.is_valid(i) for i in [REPLAY_NEW, REPLAY_ALL, *ids])
    assert not any(journal.is_valid(i) for i in unissued)
    assert not journal.is_valid(ids[-1] + 1)
    assert not journal.is_valid(0)

    clock.advance(hours=71, minutes=30)  # the first event is now 72.5 h old
    assert [e.replay_id for e in journal.after(REPLAY_ALL)] == ids[1:]
    assert journal.is_valid(ids[0]), "nothing after it was lost"

    clock.advance(hours=1)  # all three have expired
    assert journal.after(REPLAY_ALL) == []
    assert not journal.is_valid(ids[0])
    assert not journal.is_valid(ids[1])
    assert journal.is_valid(ids[2])
    assert journal.after(ids[2]) == []


def test_journal__clear_keeps_numbering() -> None:
    journal, ids = _filled(ManualClock(), ["Account"] * 3)

    journal.clear()
    new_id = journal.append("Account", {})

    assert new_id > ids[-1]
    assert not journal.is_valid(ids[-1])
    assert [e.replay_id for e in journal.after(REPLAY_ALL)] == [new_id]


def test_journal__dump_and_load(tmp_path: Path) -> None:
    clock = ManualClock()
    journal, ids = _filled(clock, ["Account", "Contact", "Site_Photo__c"])
    path = tmp_path / "journal.jsonl"

    journal.dump(path)
    restored = Journal(clock)
    restored.load(path)

    assert restored.latest() == journal.latest()
    assert restored.after(REPLAY_ALL) == journal.after(REPLAY_ALL)
    assert restored.append("Account", {}) > ids[-1]


def test_journal__load_names_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"version": 1, "last_id": 3, "floor": null}\n{"replay_id": 1}\n')

    with pytest.raises(ValueError, match=r"journal.jsonl:2: bad journal event"):
        Journal(ManualClock()).load(path)


async def test_journal__wait_for_new_wakes_from_another_thread() -> None:
    journal = Journal(ManualClock())
    before = journal.latest()

    assert not await journal.wait_for_new(before, timeout=0.05)

    timer = threading.Timer(0.05, journal.append, args=("Account", {}))
    timer.start()
    woke = await journal.wait_for_new(before, timeout=5)
    timer.join()

    assert woke
    assert await journal.wait_for_new(before, timeout=0), "already there"


async def test_journal__many_waiters_all_wake() -> None:
    journal = Journal(ManualClock())
    waits = [asyncio.create_task(journal.wait_for_new(0, timeout=5)) for _ in range(5)]
    await asyncio.sleep(0.01)

    journal.append("Contact", {})

    assert await asyncio.gather(*waits) == [True] * 5
