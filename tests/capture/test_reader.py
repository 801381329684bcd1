"""The reader end to end: a real slot streamed into the embedded event log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from forcelink.connector.postgres import setup
from forcelink.connector.postgres.pgoutput import parse_lsn
from forcelink.connector.postgres.reader import PostgresChangeReader, ReaderSettings
from forcelink.connector.postgres.setup import (
    apply_session_origin,
    apply_session_origin_async,
)
from forcelink.db import migrate
from forcelink.errors import PositionLost, SourceUnavailable
from forcelink.eventlog import EventRecord
from forcelink.eventlog.embedded import EmbeddedEventLog

TOPIC = "pg.changes"
BIG = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)"


@pytest.fixture
def db(fresh_database: str) -> str:
    migrate(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.account (id int PRIMARY KEY, name text,"
            " amount numeric, notes text, sfid varchar(18))"
        )
        conn.execute("CREATE TABLE public.contact (a int, b text, PRIMARY KEY (a, b))")
        conn.execute("CREATE TABLE public.unmapped (id serial PRIMARY KEY, x text)")
    return fresh_database


@pytest.fixture
async def event_log(db: str) -> AsyncIterator[EmbeddedEventLog]:
    async with EmbeddedEventLog(db) as log:
        await log.ensure_topic(TOPIC, 3)
        yield log


def slot_of(db: str) -> str:
    """Slots are cluster-wide: one per test database keeps tests apart."""
    return "forcelink_" + db.rsplit("/", 1)[1]


def settings(db: str, **overrides: Any) -> ReaderSettings:
    values: dict[str, Any] = {
        "tables": ["account", "public.contact"],
        "topic": TOPIC,
        "slot": slot_of(db),
    }
    values.update(overrides)
    return ReaderSettings(dsn=db, **values)


class Tap:
    """Passes batches to the real event log; lets a test hold or fail them."""

    def __init__(self, log: EmbeddedEventLog) -> None:
        self.log = log
        self.calls: list[int] = []
        self.gate: asyncio.Event | None = None
        self.fail_on: set[int] = set()
        self.before: Callable[[], None] | None = None

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        self.calls.append(len(records))
        if self.before is not None:
            self.before()
        if len(self.calls) in self.fail_on:
            raise SourceUnavailable("event log cut by the test")
        if self.gate is not None:
            await self.gate.wait()
        await self.log.publish(topic, records)


@asynccontextmanager
async def running(reader: PostgresChangeReader) -> AsyncIterator[asyncio.Task[None]]:
    await reader.setup()
    task = asyncio.create_task(reader.run())
    try:
        yield task
    finally:
        reader.stop()
        await asyncio.wait_for(task, 20)


async def consume(log: EmbeddedEventLog, count: int, timeout: float = 15) -> list[Any]:
    """At least ``count`` events' values (fewer only if the time runs out)."""
    values: list[Any] = []
    async with await log.consumer("test", [TOPIC]) as consumer:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(values) < count and asyncio.get_running_loop().time() < deadline:
            events = await consumer.poll(timeout=0.5)
            for event in events:
                value = json.loads(event.value)
                value["_key"] = event.key.decode()
                values.append(value)
            await consumer.commit(events)
    return values


def execute(db: str, *statements: str) -> int:
    """Run statements in one transaction; return the WAL position after it."""
    with psycopg.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(row[0])


def confirmed_lsn(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot_of(db),),
        ).fetchone()
    assert row is not None
    return parse_lsn(row[0])


def retained_wal_bytes(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as conn:
        found = setup.retained_wal_bytes(conn, slot_of(db))
    assert found is not None
    return found


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def test_reader__publishes_changes_keyed_by_table_and_key(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db), event_log)
    async with running(reader):
        execute(
            db,
            "INSERT INTO account (id, name, amount) VALUES (1, 'Zoë', 12.30)",
            "INSERT INTO account (id, name) VALUES (2, 'b')",
            "INSERT INTO contact VALUES (5, 'x,y')",
        )
        execute(db, f"UPDATE account SET notes = {BIG} WHERE id = 1")
        execute(db, "UPDATE account SET name = 'Zoé' WHERE id = 1")
        execute(db, "DELETE FROM account WHERE id = 2")
        execute(db, "INSERT INTO unmapped (x) VALUES ('not published')")
        events = await consume(event_log, 6)

    events.sort(key=lambda e: (parse_lsn(e["commit_lsn"]), e["tx_seq"]))
    first, second, contact, toasted, renamed, deleted = events
    assert [e["op"] for e in events] == ["insert"] * 3 + ["update"] * 2 + ["delete"]
    assert first["_key"] == "public.account:1" and first["key"] == {"id": 1}
    assert first["new"]["name"] == "Zoë" and first["new"]["amount"] == "12.30"
    assert contact["_key"] == "public.contact:5,x\\,y"
    assert {e["commit_lsn"] for e in (first, second, contact)} == {first["commit_lsn"]}
    assert [e["tx_seq"] for e in (first, second, contact)] == [0, 1, 2]
    assert "tx_size" not in first and "tx_size" not in second
    assert contact["tx_size"] == 3
    assert len(toasted["new"]["notes"]) == 12800
    assert renamed["unchanged_toast"] == ["notes"]
    assert "notes" not in renamed["new"]
    assert renamed["old"]["name"] == "Zoë"
    assert deleted["_key"] == "public.account:2" and deleted["new"] is None
    assert deleted["old"]["name"] == "b"
    assert renamed["commit_time"].endswith("Z")
    assert reader.stats.transactions == 4  # the unmapped insert sends nothing


async def test_reader__skips_transactions_of_forcelink_origin(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db), event_log)
    async with running(reader):
        with psycopg.connect(db, autocommit=True) as applier:
            apply_session_origin(applier)
            applier.execute("INSERT INTO account (id, name) VALUES (1, 'echo')")
            async with await psycopg.AsyncConnection.connect(db) as second_applier:
                taken = await apply_session_origin_async(second_applier)
                await second_applier.execute("UPDATE account SET name = 'e2'")
                await second_applier.commit()
            assert taken == "forcelink_1"
        execute(db, "INSERT INTO account (id, name) VALUES (2, 'user')")
        events = await consume(event_log, 1)
        await eventually(lambda: reader.stats.transactions >= 1)
        await asyncio.sleep(0.3)
        more = await consume(event_log, 1, timeout=0.5)

    assert [e["key"] for e in events] == [{"id": 2}]
    assert more == []
    assert reader.stats.skipped_transactions == 2


async def test_reader__confirms_position_only_after_publish(
    db: str, event_log: EmbeddedEventLog
) -> None:
    tap = Tap(event_log)
    tap.gate = asyncio.Event()
    reader = PostgresChangeReader(settings(db), tap)
    async with running(reader):
        await eventually(lambda: confirmed_lsn(db) > 0)
        end = execute(db, "INSERT INTO account (id) VALUES (1)")
        await eventually(lambda: len(tap.calls) == 1)
        await asyncio.sleep(0.5)  # several feedback rounds while held
        held_at = confirmed_lsn(db)
        tap.gate.set()
        await eventually(lambda: confirmed_lsn(db) >= end)

    assert held_at < end


async def test_reader__large_transaction_in_bounded_batches(
    db: str, event_log: EmbeddedEventLog
) -> None:
    tap = Tap(event_log)
    reader = PostgresChangeReader(
        settings(db, batch_max_changes=100, max_batches_in_flight=2), tap
    )
    confirmed_at_publish: list[int] = []
    tap.before = lambda: confirmed_at_publish.append(reader.stats.confirmed_lsn)
    async with running(reader):
        end = execute(
            db,
            "INSERT INTO account (id, name)"
            " SELECT g, 'n' || g FROM generate_series(1, 5000) g",
        )
        events = await consume(event_log, 5000)
        await eventually(lambda: confirmed_lsn(db) >= end)

    assert max(tap.calls) <= 100 and sum(tap.calls) == 5000
    # While its batches were being published, the slot was never confirmed
    # as far as the transaction's commit.
    commit_lsn = parse_lsn(events[0]["commit_lsn"])
    assert len(confirmed_at_publish) == len(tap.calls)
    assert all(lsn < commit_lsn for lsn in confirmed_at_publish)
    assert len({e["key"]["id"] for e in events}) == 5000
    assert [e["tx_size"] for e in events if "tx_size" in e] == [5000]


async def test_reader__republishes_after_failed_publish(
    db: str, event_log: EmbeddedEventLog
) -> None:
    tap = Tap(event_log)
    tap.fail_on = {2}
    reader = PostgresChangeReader(
        settings(db, batch_max_changes=50, reconnect_max_delay=0.5), tap
    )
    async with running(reader):
        execute(
            db,
            "INSERT INTO account (id) SELECT g FROM generate_series(1, 300) g",
        )
        events = await consume(event_log, 300)
        execute(db, "UPDATE account SET name = 'after' WHERE id = 1")
        events += await consume(event_log, 1)

    ids = [e["key"]["id"] for e in events if e["op"] == "insert"]
    assert set(ids) == set(range(1, 301))  # none lost
    assert len(ids) >= 300  # the first batch may arrive twice
    assert any(e["op"] == "update" for e in events)


async def test_reader__reconnects_when_walsender_is_killed(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db, reconnect_max_delay=0.5), event_log)
    async with running(reader):
        execute(db, "INSERT INTO account (id) VALUES (1)")
        events = await consume(event_log, 1)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (slot_of(db),),
            )
        execute(db, "INSERT INTO account (id) VALUES (2)")
        # Row 1 may come again first: its commit may not have been confirmed.
        for _ in range(5):
            events += await consume(event_log, 1)
            if any(e["key"]["id"] == 2 for e in events):
                break

    assert {e["key"]["id"] for e in events} == {1, 2}


async def test_reader__missing_slot_is_position_lost(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db, slot="never_created"), event_log)

    with pytest.raises(PositionLost, match="never_created"):
        await asyncio.wait_for(reader.run(), 10)


async def test_reader__heartbeat_releases_wal_on_idle_publication(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db, heartbeat_interval=0.2), event_log)
    async with running(reader):
        end = execute(
            db,
            "INSERT INTO unmapped (x) SELECT repeat('w', 500)"
            " FROM generate_series(1, 2000)",
        )
        await eventually(lambda: confirmed_lsn(db) >= end)
        # The slot's restart point follows at the next running-transactions
        # record, which a checkpoint writes.
        execute(db, "CHECKPOINT")
        await eventually(lambda: retained_wal_bytes(db) < 64 * 1024)
        retained = await reader.retained_wal_bytes()

    assert retained is not None and retained < 1024 * 1024
    assert reader.stats.changes == 0


async def test_sync_publication__follows_the_mapped_tables(
    db: str, event_log: EmbeddedEventLog
) -> None:
    reader = PostgresChangeReader(settings(db), event_log)
    await reader.setup()

    added, removed = await reader.sync_publication(["account", "unmapped"])

    assert (added, removed) == (["public.unmapped"], ["public.contact"])
    with psycopg.connect(db) as conn:
        tables = conn.execute(
            "SELECT tablename, relreplident FROM pg_publication_tables p"
            " JOIN pg_class c ON c.relname = p.tablename WHERE pubname = 'forcelink'"
            " ORDER BY 1"
        ).fetchall()
    assert tables == [("account", "f"), ("unmapped", "f")]
    assert await reader.sync_publication(["account", "unmapped"]) == ([], [])
