"""The event log contract (forcelink/eventlog/base.py), run against both backends.

Every test runs twice: ``embedded`` on a fresh Postgres database migrated with
``forcelink.db.migrate``, ``kafka`` on the real broker with topics and groups
named for the test. The crash tests use real processes: a consumer that is
SIGKILLed mid-batch, a broker or database restarted by scripts/services.py
under a running producer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from forcelink.config import Config
from forcelink.db import migrate
from forcelink.errors import SourceUnavailable
from forcelink.eventlog import (
    Consumer,
    Event,
    EventLog,
    EventRecord,
    TopicPartition,
    UnknownTopic,
    open_event_log,
    partition_for,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Backend:
    name: str
    url: str
    """Database URL (embedded) or bootstrap servers (kafka)."""
    prefix: str
    session_timeout: float

    def config(self) -> Config:
        config = Config()
        config.eventlog.backend = "kafka" if self.name == "kafka" else "embedded"
        config.database.url = self.url
        config.eventlog.kafka.bootstrap_servers = self.url
        config.eventlog.kafka.topic_prefix = self.prefix
        return config

    def open(self) -> EventLog:
        return open_event_log(self.config())

    def restart_server(self) -> None:
        """Restart this backend's server with scripts/services.py."""
        service = "kafka" if self.name == "kafka" else "postgres"
        script = os.path.join(ROOT, "scripts", "services.py")
        env = subprocess.run(
            [sys.executable, script, "env", "--only", service],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if self.url.split("@")[-1].split("/")[0] not in env:
            pytest.skip(f"the {service} under test is not the one services.py runs")
        subprocess.run(
            [sys.executable, script, "restart", "--only", service],
            check=True,
            capture_output=True,
        )


@pytest.fixture(params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        prefix = f"t{uuid.uuid4().hex[:8]}."
        yield Backend("kafka", bootstrap, prefix, session_timeout=6.0)
    else:
        url = request.getfixturevalue("fresh_database")
        migrate(url)
        yield Backend("embedded", url, "", session_timeout=2.0)


@pytest.fixture
async def event_log(backend: Backend) -> AsyncIterator[EventLog]:
    async with backend.open() as log:
        yield log


def records(count: int, keys: int, start: int = 0) -> list[EventRecord]:
    """``count`` records over ``keys`` keys; value = "<key>:<sequence>"."""
    return [
        EventRecord(f"k{i % keys}".encode(), f"k{i % keys}:{i}".encode())
        for i in range(start, start + count)
    ]


async def drain(
    consumer: Consumer, count: int, timeout: float = 30.0, idle: float = 0.0
) -> list[Event]:
    """Poll until ``count`` events arrived (then ``idle`` more seconds)."""
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += await consumer.poll(max_records=500, timeout=0.5)
    quiet_until = time.monotonic() + idle
    while time.monotonic() < quiet_until:
        got += await consumer.poll(max_records=500, timeout=0.2)
    return got


def values(events: list[Event]) -> set[bytes]:
    return {e.value for e in events}


async def test_publish__each_key_keeps_its_order_and_partition(
    event_log: EventLog,
) -> None:
    await event_log.ensure_topic("orders", partitions=4)
    for batch in range(5):
        await event_log.publish("orders", records(40, keys=7, start=batch * 40))

    async with await event_log.consumer("g", ["orders"]) as consumer:
        events = await drain(consumer, 200)

    assert len(events) == 200
    by_key: dict[bytes, list[int]] = {}
    by_partition: dict[int, list[int]] = {}
    for event in events:
        assert event.partition == partition_for(event.key, 4)
        sequence = int(event.value.split(b":")[1])
        by_key.setdefault(event.key, []).append(sequence)
        by_partition.setdefault(event.partition, []).append(event.offset)
    assert all(seqs == sorted(seqs) for seqs in by_key.values())
    assert all(offs == list(range(len(offs))) for offs in by_partition.values())
    assert len(by_key) == 7


async def test_publish__headers_and_timestamps_survive(event_log: EventLog) -> None:
    await event_log.ensure_topic("h", partitions=1)
    before = time.time()
    await event_log.publish("h", [EventRecord(b"k", b"v", {"origin": "pg", "n": "1"})])

    async with await event_log.consumer("g", ["h"]) as consumer:
        [event] = await drain(consumer, 1)

    assert (event.key, event.value) == (b"k", b"v")
    assert dict(event.headers) == {"origin": "pg", "n": "1"}
    assert before - 5 < event.timestamp < time.time() + 5


async def test_publish__unknown_topic_is_refused(event_log: EventLog) -> None:
    with pytest.raises(UnknownTopic):
        await event_log.publish("never-created", records(1, keys=1))


async def test_ensure_topic__existing_topic_keeps_its_partitions(
    event_log: EventLog,
) -> None:
    await event_log.ensure_topic("t", partitions=3)
    await event_log.ensure_topic("t", partitions=5)
    assert await event_log.partitions("t") == 3


async def test_commit__new_member_resumes_after_the_committed_event(
    backend: Backend, event_log: EventLog
) -> None:
    await event_log.ensure_topic("t", partitions=1)
    await event_log.publish("t", records(10, keys=3))

    first = await event_log.consumer(
        "g", ["t"], session_timeout=backend.session_timeout
    )
    events = await drain(first, 10)
    await first.commit(events[:4])
    await first.close()

    async with await event_log.consumer(
        "g", ["t"], session_timeout=backend.session_timeout
    ) as second:
        again = await drain(second, 6, idle=0.5)

    assert [e.offset for e in again] == [4, 5, 6, 7, 8, 9]


async def test_sigkill__uncommitted_batch_is_delivered_again(
    backend: Backend, event_log: EventLog
) -> None:
    await event_log.ensure_topic("t", partitions=3)
    await event_log.publish("t", records(90, keys=9))
    group = f"g{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.eventlog._sigkill_consumer",
            *(backend.name, backend.url, backend.prefix, "t", group),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    taken: set[tuple[str, int, int]] = set()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "READY":
                break
            topic, partition, offset = json.loads(line)
            taken.add((topic, partition, offset))
    finally:
        proc.kill()
        proc.wait()
    assert taken, "the doomed consumer received nothing"

    async with await event_log.consumer(
        group, ["t"], session_timeout=backend.session_timeout
    ) as survivor:
        events = await drain(survivor, 90, timeout=backend.session_timeout * 6)

    delivered = {(e.topic, e.partition, e.offset) for e in events}
    assert taken <= delivered
    assert len(delivered) == 90


async def wait_for_split(a: Consumer, b: Consumer, partitions: int) -> None:
    """Poll both until they own disjoint, non-empty sets covering everything."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        await asyncio.gather(a.poll(timeout=0.2), b.poll(timeout=0.2))
        mine, theirs = a.assignment(), b.assignment()
        if mine and theirs and not mine & theirs and len(mine | theirs) == partitions:
            return
    raise AssertionError(
        f"no split: {sorted(a.assignment())} / {sorted(b.assignment())}"
    )


async def test_group__two_members_split_partitions_then_survivor_takes_all(
    backend: Backend, event_log: EventLog
) -> None:
    await event_log.ensure_topic("t", partitions=6)
    timeout = backend.session_timeout
    a = await event_log.consumer("g", ["t"], session_timeout=timeout)
    b = await event_log.consumer("g", ["t"], session_timeout=timeout)
    try:
        await wait_for_split(a, b, 6)
        assert len(a.assignment()) == len(b.assignment()) == 3

        await event_log.publish("t", records(120, keys=30))
        got_a, got_b = await asyncio.gather(drain(a, 40), drain(b, 40))
        got_a += await drain(a, 0, idle=1.0)
        got_b += await drain(b, 0, idle=1.0)
        assert {(e.topic, e.partition) for e in got_a} <= {
            (tp.topic, tp.partition) for tp in a.assignment()
        }
        assert values(got_a).isdisjoint(values(got_b))
        assert len(values(got_a) | values(got_b)) == 120
        await a.commit(got_a)
        await b.commit(got_b)
    finally:
        await b.close()

    deadline = time.monotonic() + 40
    while len(a.assignment()) < 6 and time.monotonic() < deadline:
        await a.poll(timeout=0.2)
    assert a.assignment() == {TopicPartition("t", p) for p in range(6)}
    await event_log.publish("t", records(12, keys=12, start=1000))
    assert len(await drain(a, 12)) == 12
    await a.close()


async def publish_until(
    log: EventLog, stop: asyncio.Event, acked: list[bytes], failures: list[str]
) -> None:
    """Publish small batches until ``stop``; record what was acknowledged."""
    sequence = 0
    while not stop.is_set():
        batch = records(10, keys=5, start=sequence)
        try:
            await log.publish("t", batch)
        except SourceUnavailable as error:
            failures.append(str(error))
            await asyncio.sleep(0.2)
            continue
        acked.extend(r.value for r in batch)
        sequence += 10
        await asyncio.sleep(0.01)


async def consume_until(
    consumer: Consumer, stop: asyncio.Event, seen: set[bytes]
) -> None:
    """Poll until ``stop``, riding out the outage (retrying SourceUnavailable)."""
    while not stop.is_set():
        try:
            seen.update(e.value for e in await consumer.poll(timeout=0.3))
        except SourceUnavailable:
            await asyncio.sleep(0.2)


async def test_restart__nothing_acknowledged_is_lost(
    backend: Backend, event_log: EventLog
) -> None:
    await event_log.ensure_topic("t", partitions=3)
    consumer = await event_log.consumer(
        "g", ["t"], session_timeout=backend.session_timeout
    )
    acked: list[bytes] = []
    failures: list[str] = []
    seen: set[bytes] = set()
    stop_publishing, stop_consuming = asyncio.Event(), asyncio.Event()
    producer = asyncio.create_task(
        publish_until(event_log, stop_publishing, acked, failures)
    )
    reader = asyncio.create_task(consume_until(consumer, stop_consuming, seen))
    await asyncio.sleep(1.0)
    before = len(acked)

    await asyncio.to_thread(backend.restart_server)
    during = len(acked)
    deadline = time.monotonic() + 60
    while len(acked) < during + 50 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop_publishing.set()
    await producer
    while not set(acked) <= seen and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stop_consuming.set()
    await reader
    await consumer.close()

    assert before > 0 and len(acked) >= during + 50, (before, during, len(acked))
    assert set(acked) <= seen, f"{len(set(acked) - seen)} acknowledged records lost"
