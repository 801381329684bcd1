"""The write side wired for real: Postgres, the reader, an event log, the
processor through ``run_consumer``, and the local org as a subprocess.

``pipeline`` is parametrized over the event log backend (``embedded`` on the
test's fresh database, ``kafka`` on the real broker with a per-test topic
prefix). Nothing of forcelink is stubbed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row
from simple_salesforce.api import Salesforce

from forcelink import mapping as mapping_api
from forcelink.config import Config
from forcelink.connector.postgres.reader import PostgresChangeReader, ReaderSettings
from forcelink.connector.salesforce.auth import fetch_token, http_session
from forcelink.connector.salesforce.writer import SalesforceWriter
from forcelink.eventlog import EventLog, open_event_log
from forcelink.mapping import Mapping, load_mappings, types
from forcelink.metrics import Metrics
from forcelink.processors.linger import lingering
from forcelink.processors.pg_to_sf import PgToSalesforce, PgToSfSettings
from forcelink.processors.runtime import run_consumer
from forcelink.processors.triggers import ensure_pending_trigger
from tests.support.local_org import LocalOrg, local_org, org

__all__ = ["local_org", "org"]

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "forcelink.pg.changes"
TABLES = ("salesforce.account", "salesforce.contact", "salesforce.workorder")


@dataclass
class Pipeline:
    """A running write side and what a test needs to drive and inspect it."""

    db: str
    org: LocalOrg
    backend: str
    config: Config
    mappings: list[Mapping]
    eventlog: EventLog
    reader: PostgresChangeReader
    handler: PgToSalesforce
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sf: Salesforce | None = None

    def execute(self, *statements: str | tuple[str, Any]) -> None:
        """Run statements in one application transaction (no origin)."""
        with psycopg.connect(self.db) as conn:
            for statement in statements:
                if isinstance(statement, tuple):
                    conn.execute(statement[0], statement[1])
                else:
                    conn.execute(statement)

    def rows(self, table: str, where: str = "true") -> list[dict[str, Any]]:
        with psycopg.connect(self.db, row_factory=dict_row) as conn:
            return conn.execute(
                f"SELECT * FROM {table} WHERE {where} ORDER BY id"
            ).fetchall()

    def scalar(self, query: str) -> Any:
        with psycopg.connect(self.db) as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else row[0]

    async def settled(
        self, expected_rows: int | None = None, timeout: float = 60
    ) -> None:
        """Wait until no mapped row is pending (and ``expected_rows`` exist)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = sum(
                self.scalar(f"SELECT count(*) FROM {t} WHERE _sync_state = 'pending'")
                for t in TABLES
            )
            total = sum(self.scalar(f"SELECT count(*) FROM {t}") for t in TABLES)
            if pending == 0 and (expected_rows is None or total == expected_rows):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"rows still pending after {timeout}s")

    async def eventually(self, check: Any, timeout: float = 60) -> Any:
        """Poll ``check()`` until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout}s: {check}")
            await asyncio.sleep(0.1)

    def salesforce(self) -> Salesforce:
        """A test client reading numbers as Decimal (exact comparisons)."""
        if self.sf is None:
            conn = self.org.connection()
            token = fetch_token(conn)
            self.sf = Salesforce(
                instance_url=token.instance_url or conn.instance_url,
                session_id=token.access_token,
                session=http_session(conn, "test"),
                version=conn.api_version,
                parse_float=Decimal,
            )
        return self.sf

    def record(self, sobject: str, sfid: str) -> dict[str, Any]:
        """One record by id, numbers as Decimal."""
        sf = self.salesforce()
        url = f"{sf.base_url}sobjects/{sobject}/{sfid}"
        response = sf.session.get(url, headers=sf.headers, timeout=30)
        response.raise_for_status()
        found: dict[str, Any] = types.loads(response.content)
        return found

    def query(self, soql: str) -> list[dict[str, Any]]:
        return list(self.salesforce().query_all(soql)["records"])

    def write_calls(self) -> dict[str, int]:
        calls = self.org.stats()["calls"]
        return {k: calls[k] for k in ("rest", "collections", "bulk")}

    def config_file(self, folder: Path) -> str:
        """A forcelink.yaml for the CLI (``forcelink dlq``) matching this run."""
        cfg = self.config
        data = {
            "database": {"url": cfg.database.url},
            "eventlog": {
                "backend": cfg.eventlog.backend,
                "kafka": {
                    "bootstrap_servers": cfg.eventlog.kafka.bootstrap_servers,
                    "topic_prefix": cfg.eventlog.kafka.topic_prefix,
                },
            },
        }
        path = folder / "forcelink.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)


def prepare_database(db: str) -> list[Mapping]:
    """Mapped tables (``mappings apply``) plus the pending trigger."""
    mappings = [m for m in load_mappings([str(ROOT / "mappings")]) if m.table in TABLES]
    mapping_api.apply(db, mappings)
    with psycopg.connect(db, autocommit=True) as conn:
        for m in mappings:
            ensure_pending_trigger(conn, m.table)
    return mappings


def make_config(request: pytest.FixtureRequest, backend: str, db: str) -> Config:
    config = Config()
    config.database.url = db
    config.eventlog.backend = "kafka" if backend == "kafka" else "embedded"
    if backend == "kafka":
        config.eventlog.kafka.bootstrap_servers = request.getfixturevalue(
            "kafka_bootstrap"
        )
        config.eventlog.kafka.topic_prefix = f"t{uuid.uuid4().hex[:8]}."
        config.eventlog.kafka.partitions = 3
    else:
        config.eventlog.embedded.partitions = 3
    return config


async def start_pipeline(
    request: pytest.FixtureRequest,
    backend: str,
    db: str,
    org: LocalOrg,
    **settings: Any,
) -> Pipeline:
    mappings = prepare_database(db)
    config = make_config(request, backend, db)
    eventlog = open_event_log(config)
    await eventlog.ensure_topic(TOPIC)
    reader = PostgresChangeReader(
        ReaderSettings(dsn=db, tables=[m.table for m in mappings], topic=TOPIC),
        eventlog,
    )
    await reader.setup()
    writer = SalesforceWriter.for_org(
        org.org_config("local"), retry_delays=(0.1, 0.2, 0.4, 0.8, 1.6)
    )
    handler = PgToSalesforce(
        PgToSfSettings(database_url=db, org="local", **settings),
        mappings,
        writer,
        metrics=Metrics(),
    )
    pipe = Pipeline(db, org, backend, config, mappings, eventlog, reader, handler)
    consumer = run_consumer(
        lingering(eventlog, linger=0.3),
        "pg_to_sf.local",
        [TOPIC],
        handler,
        pipe.stop,
    )
    pipe.tasks = [
        asyncio.create_task(reader.run()),
        asyncio.create_task(consumer),
    ]
    return pipe


async def stop_pipeline(pipe: Pipeline) -> None:
    pipe.stop.set()
    pipe.reader.stop()
    await asyncio.wait_for(asyncio.gather(*pipe.tasks), 30)
    await pipe.handler.close()
    await pipe.eventlog.close()


@pytest.fixture(params=["embedded", "kafka"])
async def pipeline(
    request: pytest.FixtureRequest, fresh_database: str, org: LocalOrg
) -> AsyncIterator[Pipeline]:
    pipe = await start_pipeline(request, request.param, fresh_database, org)
    try:
        yield pipe
    finally:
        await stop_pipeline(pipe)


def dec(value: Any) -> Decimal | None:
    """A number as read by ``Pipeline.salesforce()`` (already exact)."""
    return None if value is None else Decimal(value)
