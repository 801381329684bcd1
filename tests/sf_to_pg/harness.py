"""Salesforce→Postgres wired for real: local org, subscriber, event log, applier.

Nothing here is a stand-in: the emulator is the ``forcelink emulator``
subprocess, the event log is the configured backend (embedded in Postgres, or
the Kafka broker), and the subscriber and applier are forcelink's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from forcelink.config import Config
from forcelink.connector.salesforce.subscriber import (
    ChangeSubscriber,
    SubscriberSettings,
)
from forcelink.eventlog import open_event_log
from forcelink.eventlog.base import EventLog
from forcelink.mapping import Mapping, apply, load_mappings
from forcelink.processors.runtime import run_consumer
from forcelink.processors.sf_to_pg import SalesforceToPostgres
from tests.support.local_org import LocalOrg

ROOT = Path(__file__).resolve().parents[2]


def load_examples(database_url: str) -> list[Mapping]:
    """The example mappings of ``mappings/`` (org ``local``), tables created."""
    mappings = load_mappings([ROOT / "mappings"])
    apply(database_url, mappings)
    return mappings


def make_config(database_url: str, backend: str, kafka: str | None) -> Config:
    config = Config()
    config.database.url = database_url
    config.eventlog.backend = backend  # type: ignore[assignment]
    config.eventlog.embedded.partitions = 3
    config.eventlog.kafka.partitions = 3
    if kafka:
        config.eventlog.kafka.bootstrap_servers = kafka
    return config


class Pipeline:
    """The read side of one org, running as asyncio tasks of the test."""

    def __init__(self, org: LocalOrg, config: Config, mappings: list[Mapping]) -> None:
        self.org = org
        self.config = config
        self.mappings = mappings
        self.topic = f"t{uuid.uuid4().hex[:10]}.sf.local.changes"
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.eventlog: EventLog | None = None
        self.subscriber: ChangeSubscriber | None = None

    async def start(self) -> None:
        self.stop = asyncio.Event()
        self.eventlog = open_event_log(self.config)
        await self.eventlog.__aenter__()
        url = self.config.database.url
        self.subscriber = ChangeSubscriber(
            SubscriberSettings(
                org="local",
                conn=self.org.connection(),
                database_url=url,
                topic=self.topic,
                mappings=self.mappings,
            ),
            self.eventlog,
        )
        handler = SalesforceToPostgres(
            org="local",
            mappings=self.mappings,
            database_url=url,
            connection=self.org.connection(),
        )
        self.tasks = [
            asyncio.create_task(self.subscriber.run(self.stop)),
            asyncio.create_task(
                run_consumer(
                    self.eventlog,
                    "sf_to_pg.local",
                    [self.topic],
                    handler,
                    self.stop,
                    poll_timeout=0.2,
                )
            ),
        ]

    async def close(self) -> None:
        self.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.eventlog is not None:
            await self.eventlog.__aexit__(None, None, None)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def failed(self) -> BaseException | None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception():
                return task.exception()
        return None

    async def until(
        self, check: Callable[[], Any], what: str, timeout: float = 20.0
    ) -> Any:
        """Poll ``check`` (run in a thread) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            error = self.failed()
            if error is not None:
                raise AssertionError(
                    f"pipeline failed while waiting for {what}"
                ) from error
            last = await asyncio.to_thread(check)
            if last:
                return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


def row(database_url: str, table: str, sfid: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            f"SELECT * FROM {table} WHERE sfid = %s", (sfid,)
        ).fetchone()


def rows(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(query, args).fetchall()


def slot_streaming(database_url: str) -> bool:
    """True once a replication slot of this database is being read.

    Changes are captured from then on; tests wait for it before the
    application writes.
    """
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_replication_slots"
            " WHERE database = current_database() AND active"
        ).fetchone()
    return found is not None
