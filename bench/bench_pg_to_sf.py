"""Postgres -> Salesforce under a steady load: delay and API calls.

    .venv/bin/python bench/bench_pg_to_sf.py [--rate 500] [--seconds 20]
        [--backend embedded|kafka]

Needs the services (``scripts/services.py up``; the URLs come from
``scripts/services.py env``). Creates a scratch database, starts a local org
(``forcelink emulator`` subprocess), the reader, the event log and the
write side wired as ``forcelink run`` would, then runs transactions of 5
changes every 10 ms (500 changes/s): 70% inserts of new accounts, 30%
updates of accounts inserted earlier.

Prints the delay from each record's last Postgres commit to its
SystemModstamp in the org (p50, p99), and Salesforce write calls per
10,000 changed rows from ``/_emulator/stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forcelink import mapping as mapping_api  # noqa: E402
from forcelink.config import Config  # noqa: E402
from forcelink.connector.postgres.reader import (  # noqa: E402
    PostgresChangeReader,
    ReaderSettings,
)
from forcelink.connector.salesforce.writer import SalesforceWriter  # noqa: E402
from forcelink.eventlog import open_event_log  # noqa: E402
from forcelink.mapping import load_mappings  # noqa: E402
from forcelink.metrics import Metrics  # noqa: E402
from forcelink.processors.linger import lingering  # noqa: E402
from forcelink.processors.pg_to_sf import PgToSalesforce, PgToSfSettings  # noqa: E402
from forcelink.processors.runtime import run_consumer  # noqa: E402
from forcelink.processors.triggers import ensure_pending_trigger  # noqa: E402
from tests.support.local_org import LocalOrg  # noqa: E402

TOPIC = "forcelink.pg.changes"
PER_TX = 5


def scratch_database(server_url: str) -> str:
    name = f"bench_pg_to_sf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE database = %s",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _transaction(
    conn: psycopg.Connection[tuple[object, ...]],
    rng: random.Random,
    inserted: list[str],
    tick: int,
) -> list[str]:
    """One application transaction of PER_TX changes; the keys it touched."""
    touched = []
    added = []
    with conn.transaction():
        for _ in range(PER_TX):
            if inserted and rng.random() < 0.3:
                key = rng.choice(inserted)
                conn.execute(
                    "UPDATE salesforce.account SET phone = %s"
                    " WHERE external_id__c = %s",
                    (str(tick), key),
                )
            else:
                key = f"B{len(inserted) + len(added)}"
                added.append(key)
                conn.execute(
                    "INSERT INTO salesforce.account (external_id__c, name)"
                    " VALUES (%s, %s)",
                    (key, f"Bench {key}"),
                )
            touched.append(key)
    inserted.extend(added)
    return touched


def load(db: str, rate: int, seconds: float) -> tuple[dict[str, float], int]:
    """Run the workload (in its own thread, like an application would).

    Returns ext id -> wall time of the commit of its last change, and the
    number of changes made.
    """
    committed: dict[str, float] = {}
    inserted: list[str] = []
    changes = 0
    interval = PER_TX / rate
    rng = random.Random(7)
    with psycopg.connect(db) as conn:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            try:
                touched = _transaction(conn, rng, inserted, tick)
            except psycopg.errors.DeadlockDetected:
                continue  # as an application would: run it again
            now = time.time()
            for key in touched:
                committed[key] = now
            changes += len(touched)
            tick += 1
            time.sleep(max(0.0, start + tick * interval - time.monotonic()))
    return committed, changes


async def settle(db: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM salesforce.account WHERE _sync_state <> 'synced'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError("rows still not synced")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace, db: str, org: LocalOrg) -> None:
    mappings = [
        m
        for m in load_mappings([str(ROOT / "mappings")])
        if m.table == "salesforce.account"
    ]
    mapping_api.apply(db, mappings)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_pending_trigger(conn, "salesforce.account")

    config = Config()
    config.database.url = db
    config.eventlog.backend = args.backend
    config.eventlog.kafka.bootstrap_servers = os.environ.get(
        "FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"
    )
    config.eventlog.kafka.topic_prefix = f"bench{uuid.uuid4().hex[:6]}."
    eventlog = open_event_log(config)
    await eventlog.ensure_topic(TOPIC)
    reader = PostgresChangeReader(
        ReaderSettings(dsn=db, tables=["salesforce.account"], topic=TOPIC), eventlog
    )
    await reader.setup()
    writer = SalesforceWriter.for_org(org.org_config("local"), metrics=Metrics())
    handler = PgToSalesforce(
        PgToSfSettings(database_url=db, org="local"),
        mappings,
        writer,
        metrics=Metrics(),
    )
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(reader.run()),
        asyncio.create_task(
            run_consumer(lingering(eventlog), "pg_to_sf.local", [TOPIC], handler, stop)
        ),
    ]
    await asyncio.sleep(1.0)  # consumer joined
    org.reset()

    committed, changes = await asyncio.to_thread(load, db, args.rate, args.seconds)
    await settle(db)
    calls = org.stats()["calls"]
    stop.set()
    reader.stop()
    await asyncio.gather(*tasks)
    await handler.close()
    await eventlog.close()

    sf = org.salesforce()
    records = sf.query_all("SELECT External_Id__c, SystemModstamp FROM Account")
    delays = [
        datetime.fromisoformat(r["SystemModstamp"]).timestamp()
        - committed[r["External_Id__c"]]
        for r in records["records"]
    ]
    writes = calls["collections"] + calls["bulk"] + calls["rest"]
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"backend: {args.backend}; {changes} changes in {args.seconds:.0f} s")
    print(f"records in org: {len(delays)}")
    print(
        f"delay PG commit -> org: p50 {percentile(delays, 0.5) * 1000:.0f} ms,"
        f" p99 {percentile(delays, 0.99) * 1000:.0f} ms,"
        f" max {max(delays) * 1000:.0f} ms"
    )
    print(
        f"Salesforce write calls: {writes} (collections {calls['collections']},"
        f" bulk {calls['bulk']}, rest {calls['rest']});"
        f" {writes * 10000 / changes:.1f} per 10,000 changed rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="changes per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", choices=["embedded", "kafka"], default="embedded")
    args = parser.parse_args()
    server = os.environ.get("FORCELINK_DATABASE_URL")
    if not server:
        sys.exit("set FORCELINK_DATABASE_URL (eval $(scripts/services.py env))")
    db = scratch_database(server)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-org-") as folder:
            org = LocalOrg(Path(folder))
            org.start()
            try:
                asyncio.run(run(args, db, org))
            finally:
                org.stop()
    finally:
        drop_database(server, db)


if __name__ == "__main__":
    main()
