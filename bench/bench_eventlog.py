"""Event log throughput: publish and consume small events, print events/s.

    .venv/bin/python bench/bench_eventlog.py [--backend embedded|kafka|both]
        [--events 200000] [--batch 1000] [--size 200]

Uses FORCELINK_DATABASE_URL (embedded: a scratch database is created next to
it and dropped afterwards) and FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS.
Events carry 40 distinct keys and a ``--size``-byte value. One publisher
awaits each batch (durably accepted) before sending the next; one consumer
of a new group then reads everything, committing each polled batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import psycopg

from forcelink.config import Config
from forcelink.db import migrate
from forcelink.eventlog import EventLog, EventRecord, open_event_log


async def run(log: EventLog, events: int, batch: int, size: int) -> tuple[float, float]:
    await log.ensure_topic("bench", partitions=6)
    payload = os.urandom(size // 2).hex().encode()
    batches = [
        [
            EventRecord(f"Account/{(start + i) % 40:04d}".encode(), payload)
            for i in range(min(batch, events - start))
        ]
        for start in range(0, events, batch)
    ]

    began = time.perf_counter()
    for records in batches:
        await log.publish("bench", records)
    publish_rate = events / (time.perf_counter() - began)

    consumer = await log.consumer(f"bench-{uuid.uuid4().hex[:6]}", ["bench"])
    began = time.perf_counter()
    seen = 0
    while seen < events:
        got = await consumer.poll(max_records=5000, timeout=5.0)
        if not got:
            raise SystemExit(f"consumer stalled after {seen} of {events} events")
        await consumer.commit(got)
        seen += len(got)
    consume_rate = seen / (time.perf_counter() - began)
    await consumer.close()
    return publish_rate, consume_rate


def scratch_database(base_url: str) -> tuple[str, str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, base_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(base_url: str, name: str) -> None:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def bench(backend: str, args: argparse.Namespace) -> None:
    config = Config()
    config.eventlog.backend = "kafka" if backend == "kafka" else "embedded"
    scratch = None
    if backend == "embedded":
        base = os.environ["FORCELINK_DATABASE_URL"]
        scratch, config.database.url = scratch_database(base)
        migrate(config.database.url)
    else:
        config.eventlog.kafka.bootstrap_servers = os.environ[
            "FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS"
        ]
        config.eventlog.kafka.topic_prefix = f"bench{uuid.uuid4().hex[:6]}."
    try:
        async with open_event_log(config) as log:
            publish, consume = await run(log, args.events, args.batch, args.size)
    finally:
        if scratch:
            drop_database(os.environ["FORCELINK_DATABASE_URL"], scratch)
    print(
        f"{backend:9s} {args.events} events of {args.size} B, batches of "
        f"{args.batch}: publish {publish:,.0f} events/s, "
        f"consume+commit {consume:,.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", default="both", choices=["embedded", "kafka", "both"]
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    backends = ["embedded", "kafka"] if args.backend == "both" else [args.backend]
    for backend in backends:
        asyncio.run(bench(backend, args))


if __name__ == "__main__":
    main()
