"""forcelink's Postgres reader against Debezium's embedded engine, same workload.

    mvn -q -f bench/debezium/pom.xml package      # once: jars into target/
    python bench/bench_debezium.py [--rows 200000] [--scenario small|large|latency|all]
                                   [--rate 2000] [--seconds 30] [--poll-ms 5]

Per scenario, one scratch database, and both readers each on its own slot and
publication (the same table, REPLICA IDENTITY FULL, the same server):

* ``small`` / ``large``: both slots are created, then ``bench_capture``'s
  generator writes the workload once (``--rows`` single-row transactions, or
  one ``--rows``-row transaction) with no reader running; forcelink's reader
  (``--sink null``: decode and encode, publish nothing) reads its slot, then
  Debezium's engine (``bench/debezium``: decode and build change events, then
  only count them) reads the other, so both decode exactly the same WAL.
* ``latency``: rows inserted one per transaction at ``--rate`` per second for
  ``--seconds``, first with forcelink's reader running, then (table emptied,
  Debezium's slot created at that point) with Debezium's; per change, the
  time from its commit timestamp to its delivery to the sink / consumer.
  ``p99_warm_ms`` leaves out the first ``--warmup`` seconds: a fresh JVM
  stalls for several hundred ms while the first changes arrive (JIT, first
  relation), which a long-running engine pays once.

How the clocks differ, stated so the ratio is read right: forcelink's rows/s
is ``bench_capture``'s (from the call of ``run()``, connecting included, to
the last change handed over); Debezium's is from its first delivered change to
its last (JVM start-up, engine start and connecting left out; they are shown
as ``startup_s``). That favours Debezium. Debezium runs with its shipped
settings except ``poll.interval.ms`` (``--poll-ms``, 500 ms as shipped: the
consumer waits that long whenever its queue runs empty), ``snapshot.mode=
no_data`` and the existing slot and publication.

Needs FORCELINK_DATABASE_URL (or ``--dsn``) naming a server with
``wal_level=logical`` that accepts the URL's user without a password (the
development cluster of ``scripts/services.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from bench_capture import (
    CountingSink,
    drop_database,
    measure,
    measure_latency,
    prepare,
    scratch_database,
)

from forcelink.connector.postgres.reader import PostgresChangeReader, ReaderSettings
from forcelink.eventlog import EventRecord

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "debezium"
DEBEZIUM_PUBLICATION = "debezium_bench"


class TimedSink(CountingSink):
    """``bench_capture``'s sink without an event log, noting the hand-over times."""

    def __init__(self, latencies: list[float]) -> None:
        super().__init__(None, latencies)
        self.first = 0.0
        self.last = 0.0

    async def publish(self, topic: str, records: Sequence[EventRecord]) -> None:
        self.last = time.monotonic()
        self.first = self.first or self.last
        await super().publish(topic, records)


def java_command(
    url: str, slot: str, expected: int, args: argparse.Namespace
) -> list[str]:
    """The harness's command line (see CaptureBench.java for its output)."""
    parts = urlsplit(url)
    target = HARNESS / "target"
    classpath = f"{target / 'classes'}:{target / 'lib'}/*"
    command = [args.java, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]
    command += ["-cp", classpath, "dev.forcelink.bench.CaptureBench"]
    command += [
        "-host",
        parts.hostname or "localhost",
        "-port",
        str(parts.port or 5432),
    ]
    command += ["-user", parts.username or "postgres", "-db", parts.path.lstrip("/")]
    command += ["-slot", slot, "-publication", DEBEZIUM_PUBLICATION]
    command += ["-expected", str(expected), "-poll-ms", str(args.poll_ms)]
    command += ["-format", args.format, "-timeout", str(args.timeout)]
    command += ["-skip", str(warmup_changes(args))]
    if args.scenario == "latency":
        command += ["-mode", "latency"]
    return command


def warmup_changes(args: argparse.Namespace) -> int:
    """Changes of the first ``--warmup`` seconds, left out of the warm p99."""
    return int(args.rate * args.warmup)


def debezium_slot(url: str) -> str:
    """Create Debezium's publication and slot at the current end of WAL."""
    slot = url.rsplit("/", 1)[1] + "_dbz"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE PUBLICATION {DEBEZIUM_PUBLICATION} FOR TABLE public.bench"
        )
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
        )
    return slot


def run_debezium(
    url: str, slot: str, expected: int, args: argparse.Namespace, paced: bool
) -> dict[str, Any]:
    """Run the harness until it has delivered ``expected`` changes.

    With ``paced``, the latency generator starts two seconds after the engine
    says READY (it is streaming by then), as forcelink's gets one second.
    """
    command = java_command(url, slot, expected, args)
    print(f"  $ {shlex.join(command)}", flush=True)
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert process.stdout is not None
        lines = []
        generator: threading.Thread | None = None
        for line in process.stdout:
            lines.append(line.strip())
            if line.strip() == "READY" and paced:
                time.sleep(2.0)
                generator = threading.Thread(target=paced_load, args=(url, args))
                generator.start()
        process.wait()
        if generator is not None:
            generator.join()
        if process.returncode or not lines or not lines[-1].startswith("{"):
            errors.seek(0)
            sys.exit(f"Debezium harness failed:\n{errors.read()[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if not result.pop("finished"):
        sys.exit(f"Debezium delivered {result['rows']} of {expected} changes")
    return result


def paced_load(url: str, args: argparse.Namespace) -> None:
    """``bench_capture``'s paced generator (synchronous commits, see there)."""
    total = int(args.rate * args.seconds)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CALL public.bench_paced(%s, %s)", (total, args.rate))


async def throughput(args: argparse.Namespace, url: str) -> dict[str, Any]:
    prepare(url, 1)
    slot = debezium_slot(url)  # before the workload: both slots see all of it
    cpu = time.process_time()
    forcelink = await measure(args, url, None)  # type: ignore[arg-type]
    forcelink["cpu_s"] = round(time.process_time() - cpu, 2)
    debezium = await asyncio.to_thread(run_debezium, url, slot, args.rows, args, False)
    return {"forcelink": forcelink, "debezium": debezium}


async def latency(args: argparse.Namespace, url: str) -> dict[str, Any]:
    prepare(url, 0)
    settings = ReaderSettings(
        dsn=url, tables=["public.bench"], topic="bench", slot=url.rsplit("/", 1)[1]
    )
    latencies: list[float] = []
    sink = TimedSink(latencies)
    reader = PostgresChangeReader(settings, sink)
    await reader.setup()
    forcelink = await measure_latency(args, url, reader, sink, latencies)
    # The generator falls behind --rate on a busy machine: say what it managed.
    forcelink["rows_per_s"] = round(sink.count / (sink.last - sink.first))
    steady = sorted(latencies[warmup_changes(args) :])  # in arrival order
    forcelink["p99_warm_ms"] = round(steady[int(len(steady) * 0.99)] * 1000, 1)

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.bench")  # before Debezium's slot exists
    slot = debezium_slot(url)
    total = int(args.rate * args.seconds)
    debezium = await asyncio.to_thread(run_debezium, url, slot, total, args, True)
    return {"forcelink": forcelink, "debezium": debezium}


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    url = scratch_database(args.dsn)
    try:
        load_before = os.getloadavg()[0]
        if args.scenario == "latency":
            result = await latency(args, url)
        else:
            result = await throughput(args, url)
        result["load_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        return result
    finally:
        drop_database(args.dsn, url)


def summary(scenario: str, args: argparse.Namespace, result: dict[str, Any]) -> str:
    ours, theirs = result["forcelink"], result["debezium"]
    load = "load {}→{}".format(*result["load_1m"])
    if scenario == "latency":
        return (
            f"latency  {args.rate:.0f} rows/s x {args.seconds:.0f}s:"
            f" forcelink p50 {ours['p50_ms']} ms p99 {ours['p99_ms']} ms"
            f" ({ours['p99_warm_ms']} ms warm;"
            f" {ours['rows_per_s']} rows/s reached)"
            f" | Debezium p50 {theirs['p50_ms']} ms p99 {theirs['p99_ms']} ms"
            f" ({theirs['p99_warm_ms']} ms warm;"
            f" {theirs['rows_per_s']} rows/s reached)"
            f" ({load})"
        )
    ratio = ours["rows_per_s"] / theirs["rows_per_s"]
    return (
        f"{scenario:8} {args.rows} rows: forcelink {ours['rows_per_s']} rows/s"
        f" ({ours['cpu_s']} CPU s) | Debezium {theirs['rows_per_s']} rows/s"
        f" ({theirs['cpu_s']} CPU s) | ratio {ratio:.2f}x ({load})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("FORCELINK_DATABASE_URL"))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--scenario", choices=["small", "large", "latency", "all"], default="all"
    )
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds not in the warm p99"
    )
    parser.add_argument(
        "--poll-ms", type=int, default=5, help="Debezium poll.interval.ms"
    )
    parser.add_argument("--format", choices=["connect", "json"], default="connect")
    parser.add_argument("--java", default="java")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("set FORCELINK_DATABASE_URL or pass --dsn")
    if not (HARNESS / "target" / "lib").is_dir():
        parser.error(
            "build the harness first: mvn -q -f bench/debezium/pom.xml package"
        )
    args.sink = "null"

    print(f"$ {shlex.join([sys.executable, *sys.argv])}", flush=True)
    scenarios = (
        ["small", "large", "latency"] if args.scenario == "all" else [args.scenario]
    )
    for scenario in scenarios:
        args.scenario = scenario
        result = asyncio.run(run_scenario(args))
        print(f"  {scenario}: {json.dumps(result)}")
        print(summary(scenario, args, result), flush=True)


if __name__ == "__main__":
    main()
