"""Capture throughput and latency: Postgres slot → event log.

    python bench/bench_capture.py [--rows 1000000] [--sink eventlog|null]
                                  [--scenario small|large|latency|all]

Scenarios (each runs in its own process, so its peak RSS is its own):

* ``small``: ``--rows`` single-row UPDATEs, each committed alone (a server
  procedure with COMMIT in its loop), written while the reader is stopped;
  then the reader is started and timed until it has published them all.
* ``large``: one transaction inserting ``--rows`` rows, timed the same way.
* ``latency``: rows inserted one per transaction at a steady ``--rate`` per
  second for ``--seconds``, reader running; per change, the time from its
  commit (the commit timestamp in the event) to the event log's
  acknowledgement of the batch holding it.

``--sink null`` only decodes and encodes (nothing is published), to separate
the reader's cost from the event log's. Needs FORCELINK_DATABASE_URL (or
``--dsn``) naming a server with ``wal_level=logical``; a scratch database is
created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from forcelink.connector.postgres.reader import PostgresChangeReader, ReaderSettings
from forcelink.db import migrate
from forcelink.eventlog import EventRecord
from forcelink.eventlog.embedded import EmbeddedEventLog

TOPIC = "bench.changes"


class CountingSink:
    """Counts records, forwarding to the event log unless it is None."""

    def __init__(self, log: EmbeddedEventLog | None, latencies: list[float] | None):
        self.log = log
        self.count = 0
        self.latencies = latencies
        self.done = asyncio.Event()
        self.expected = 0
        self.batches = 0
        self.publish_seconds = 0.0

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        started = time.monotonic()
        if self.log is not None:
            await self.log.publish(topic, records)
        self.batches += 1
        self.publish_seconds += time.monotonic() - started
        now = time.time()
        if self.latencies is not None:
            for record in records:
                committed = json.loads(record.value)["commit_time"]
                moment = datetime.fromisoformat(committed.replace("Z", "+00:00"))
                self.latencies.append(now - moment.timestamp())
        self.count += len(records)
        if self.expected and self.count >= self.expected:
            self.done.set()


def scratch_database(dsn: str) -> str:
    name = f"bench_capture_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def drop_database(dsn: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The walsender of a stopped reader exits a moment after its client.
        for _ in range(50):
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE database = %s AND active",
                (name,),
            )
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE database = %s AND NOT active",
                (name,),
            )
            left = conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = %s",
                (name,),
            ).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.1)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(url: str, rows: int) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.bench (id int PRIMARY KEY, name text,"
            " amount numeric, updated_at timestamptz DEFAULT now())"
        )
        conn.execute(
            "CREATE PROCEDURE public.bench_updates(n int) LANGUAGE plpgsql AS $$"
            " BEGIN FOR i IN 1..n LOOP"
            "   UPDATE public.bench SET amount = amount + 1, updated_at = now()"
            "   WHERE id = 1 + i % 1000; COMMIT;"
            " END LOOP; END $$"
        )
        conn.execute(
            "CREATE PROCEDURE public.bench_paced(n int, rate float) LANGUAGE plpgsql"
            " AS $$ DECLARE started timestamptz := clock_timestamp(); BEGIN"
            " FOR i IN 1..n LOOP"
            "   INSERT INTO public.bench (id, name, amount) VALUES (i, 'r' || i, i);"
            "   COMMIT;"
            "   PERFORM pg_sleep(greatest(0, extract(epoch FROM started"
            "     + make_interval(secs => i / rate) - clock_timestamp())));"
            " END LOOP; END $$"
        )
        if rows:
            conn.execute(
                "INSERT INTO public.bench SELECT g, 'r' || g, 0"
                " FROM generate_series(1, 1000) g"
            )


def generate(url: str, scenario: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        if scenario == "small":
            conn.execute("CALL public.bench_updates(%s)", (rows,))
        else:
            conn.execute(
                "INSERT INTO public.bench (id, name, amount)"
                " SELECT g, 'row ' || g, g * 1.5"
                " FROM generate_series(1001, 1000 + %s) g",
                (rows,),
            )


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    url = scratch_database(args.dsn)
    try:
        prepare(url, 0 if args.scenario == "latency" else 1)
        async with EmbeddedEventLog(url) as log:
            await log.ensure_topic(TOPIC, 6)
            return await measure(args, url, log)
    finally:
        drop_database(args.dsn, url)


async def measure(
    args: argparse.Namespace, url: str, log: EmbeddedEventLog
) -> dict[str, Any]:
    latencies: list[float] | None = [] if args.scenario == "latency" else None
    sink = CountingSink(log if args.sink == "eventlog" else None, latencies)
    slot = url.rsplit("/", 1)[1]  # slots are cluster-wide: one per scratch db
    settings = ReaderSettings(dsn=url, tables=["public.bench"], topic=TOPIC, slot=slot)
    reader = PostgresChangeReader(settings, sink)
    await reader.setup()

    if args.scenario == "latency":
        assert latencies is not None
        return await measure_latency(args, url, reader, sink, latencies)

    started = time.monotonic()
    generate(url, args.scenario, args.rows)
    generated = time.monotonic() - started
    sink.expected = args.rows

    started = time.monotonic()
    task = asyncio.create_task(reader.run())
    await sink.done.wait()
    elapsed = time.monotonic() - started
    reader.stop()
    await task
    return {
        "generate_s": round(generated, 1),
        "capture_s": round(elapsed, 2),
        "rows_per_s": round(sink.count / elapsed),
        "rows": sink.count,
        "batches": sink.batches,
        "publish_s": round(sink.publish_seconds, 2),
    }


async def measure_latency(
    args: argparse.Namespace,
    url: str,
    reader: PostgresChangeReader,
    sink: CountingSink,
    latencies: list[float],
) -> dict[str, Any]:
    total = int(args.rate * args.seconds)
    sink.expected = total
    task = asyncio.create_task(reader.run())
    await asyncio.sleep(1.0)  # connected and streaming before the clock starts

    def paced() -> None:
        # Commits stay synchronous here: with synchronous_commit=off the WAL
        # reaches disk (and so the walsender) only at the WAL writer's next
        # round, up to wal_writer_delay (200 ms) later, which is what would be
        # measured instead of capture.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CALL public.bench_paced(%s, %s)", (total, args.rate))

    generator = threading.Thread(target=paced)
    generator.start()
    await sink.done.wait()
    generator.join()
    reader.stop()
    await task
    ordered = sorted(latencies)
    return {
        "rows": len(ordered),
        "rate": args.rate,
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "batches": sink.batches,
    }


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(run_scenario(args))
    result["peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("FORCELINK_DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sink", choices=["eventlog", "null"], default="eventlog")
    parser.add_argument(
        "--scenario", choices=["small", "large", "latency", "all"], default="all"
    )
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("set FORCELINK_DATABASE_URL or pass --dsn")
    if args.child:
        child(args)
        return

    scenarios = (
        ["small", "large", "latency"] if args.scenario == "all" else [args.scenario]
    )
    print(f"$ {' '.join(sys.argv)}")
    for scenario in scenarios:
        command = [sys.executable, __file__, "--child", "--scenario", scenario]
        command += ["--dsn", args.dsn, "--rows", str(args.rows), "--sink", args.sink]
        command += ["--rate", str(args.rate), "--seconds", str(args.seconds)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{scenario} failed:\n{out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{scenario:8} sink={args.sink:8} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
