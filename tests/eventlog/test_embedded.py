"""What only the embedded (Postgres) backend promises: offsets, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from forcelink.config import EmbeddedLogConfig
from forcelink.db import migrate
from forcelink.eventlog import EventRecord
from forcelink.eventlog.embedded import EmbeddedEventLog


@pytest.fixture
async def database(fresh_database: str) -> AsyncIterator[str]:
    migrate(fresh_database)
    yield fresh_database


async def test_publish__concurrent_publishers_leave_no_gap_in_offsets(
    database: str,
) -> None:
    logs = [EmbeddedEventLog(database) for _ in range(4)]
    await logs[0].ensure_topic("t", partitions=2)

    async def publish(log: EmbeddedEventLog, n: int) -> None:
        for i in range(20):
            await log.publish(
                "t",
                [
                    EventRecord(f"k{j}".encode(), f"{n}-{i}-{j}".encode())
                    for j in range(5)
                ],
            )

    await asyncio.gather(*(publish(log, n) for n, log in enumerate(logs)))
    for log in logs:
        await log.close()

    with psycopg.connect(database) as conn:
        rows = conn.execute(
            'SELECT partition, array_agg("offset" ORDER BY "offset"), count(*)'
            " FROM forcelink.eventlog_records GROUP BY partition"
        ).fetchall()
        counters = dict(
            conn.execute(
                "SELECT partition, next_offset FROM forcelink.eventlog_partitions"
            ).fetchall()
        )
    assert sum(count for _, _, count in rows) == 400
    for partition, offsets, count in rows:
        assert offsets == list(range(count))
        assert counters[partition] == count


async def test_purge__deletes_only_old_records_every_group_has_passed(
    database: str,
) -> None:
    log = EmbeddedEventLog(database, EmbeddedLogConfig(retention_seconds=0))
    await log.ensure_topic("t", partitions=1)
    await log.publish("t", [EventRecord(b"k", str(i).encode()) for i in range(10)])

    fast = await log.consumer("fast", ["t"])
    slow = await log.consumer("slow", ["t"])
    events = await fast.poll(max_records=10, timeout=5)
    await fast.commit(events)
    await slow.commit((await slow.poll(max_records=3, timeout=5))[:3])
    await fast.close()
    await slow.close()

    assert await log.purge() == 3

    reader = await log.consumer("slow", ["t"])
    remaining = await reader.poll(max_records=100, timeout=5)
    assert [e.offset for e in remaining] == list(range(3, 10))
    await reader.close()
    await log.close()


async def test_purge__keeps_records_younger_than_retention(database: str) -> None:
    log = EmbeddedEventLog(database, EmbeddedLogConfig(retention_seconds=3600))
    await log.ensure_topic("t", partitions=1)
    await log.publish("t", [EventRecord(b"k", b"v")])
    consumer = await log.consumer("g", ["t"])
    await consumer.commit(await consumer.poll(timeout=5))
    await consumer.close()

    assert await log.purge() == 0
    await log.close()
