"""What ``forcelink run`` runs: every component the configuration calls for.

For the configured database, orgs and mappings, the service runs:

* per org with mappings that read from Salesforce: the CDC subscriber
  (org → event log) and the Salesforce→Postgres applier (event log →
  Postgres);
* when some mapping writes to Salesforce: the Postgres change reader
  (WAL → event log) and the Postgres→Salesforce writer (event log → org);
* the HTTP API (images, status) on ``api.listen``;
* ``/metrics``, ``/healthz`` and ``/readyz`` on ``metrics.listen``, with
  readiness checks for the database, the event log and each org, and the
  lag sampler (``forcelink.lag``) keeping the position gauges current.

Topics are named in ``forcelink.topics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from forcelink import topics
from forcelink.config import Config, OrgConfig
from forcelink.connector.postgres.reader import PostgresChangeReader, ReaderSettings
from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    salesforce_client,
)
from forcelink.connector.salesforce.subscriber import (
    ChangeSubscriber,
    SubscriberSettings,
)
from forcelink.connector.salesforce.writer import SalesforceWriter
from forcelink.db import migrate
from forcelink.errors import ForcelinkError
from forcelink.eventlog import open_event_log
from forcelink.eventlog.base import EventLog
from forcelink.health import ServerHandle, database_check, serve
from forcelink.lag import LagSampler
from forcelink.mapping import Mapping, load_mappings, org_describe
from forcelink.metrics import METRICS
from forcelink.processors.linger import lingering
from forcelink.processors.pg_to_sf import PgToSalesforce, PgToSfSettings
from forcelink.processors.runtime import Handler, run_consumer
from forcelink.processors.sf_to_pg import SalesforceToPostgres
from forcelink.readiness import eventlog_check, org_checks
from forcelink.service import Component, Service

log = logging.getLogger("forcelink.runner")

RunFn = Callable[[asyncio.Event], Awaitable[None]]


def org_connections(config: Config) -> dict[str, tuple[OrgConfig, OrgConnection]]:
    """Every configured org with how to log in to it."""
    return {org.name: (org, OrgConnection.from_config(org)) for org in config.orgs}


def load_checked_mappings(
    config: Config, orgs: dict[str, tuple[OrgConfig, OrgConnection]]
) -> list[Mapping]:
    """The mapping files, checked against each org's live describe.

    An org that cannot be reached at start is checked against the local
    org's default schema instead, with a warning: the service still starts,
    and its subscriber retries the org.
    """
    describers: dict[str | None, Any] = {}
    for name, (org, conn) in orgs.items():
        try:
            client = salesforce_client(conn, fetch_token(conn), org.client_tag)
            describers[name] = org_describe(client)
        except ForcelinkError as error:
            log.warning(
                "org %s unreachable (%s); mappings checked offline", name, error
            )
    return load_mappings(config.mappings, describe=describers or None)


def slot_name(database_url: str) -> str:
    """The replication slot of one database: ``forcelink_<database>``.

    Slot names are unique in the whole cluster, while several databases of
    one cluster may each run forcelink; slot names allow only lower-case
    letters, digits and underscores, 63 at most.
    """
    database = urlsplit(database_url).path.lstrip("/") or "postgres"
    cleaned = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return f"forcelink_{cleaned}"[:63]


def public_url(database_url: str) -> str:
    """``database_url`` without its password, for run.json and logs."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the service, which owns SIGINT and SIGTERM itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Runner:
    """Builds the components and runs them as one ``Service``."""

    def __init__(self, config: Config, run_file: Path | None = None) -> None:
        self.config = config
        self.run_file = run_file
        self.eventlog: EventLog = open_event_log(config)
        self.pg_topic = topics.PG_CHANGES
        self.health: ServerHandle | None = None

    async def serve(self) -> int:
        migrate(self.config.database.url)
        orgs = org_connections(self.config)
        mappings = load_checked_mappings(self.config, orgs)
        for name in orgs:
            METRICS.declare_org(name)
        METRICS.set_config(self.config)
        components = self._components(orgs, mappings)
        components.append(Component("lag", self._sampler(mappings)))
        self.health = serve(
            self.config.metrics.listen,
            METRICS.registry,
            {
                "database": database_check(self.config.database.url),
                "eventlog": eventlog_check(self.config),
                **org_checks(orgs),
            },
        )
        service = Service(components, self.run_file, self._info(orgs))
        try:
            async with self.eventlog:
                return await service.serve()
        finally:
            self.health.close()

    def _components(
        self, orgs: dict[str, tuple[OrgConfig, OrgConnection]], mappings: list[Mapping]
    ) -> list[Component]:
        components: list[Component] = []
        for name, (org, conn) in orgs.items():
            reads = [m for m in mappings if m.org == name and m.mode != "write_only"]
            if reads:
                components += self._salesforce_to_postgres(org, conn, reads)
        writes = [m for m in mappings if m.mode != "read_only" and m.org in orgs]
        if writes:
            components.append(Component("pg_reader", self._reader(writes)))
            for name, (org, _) in orgs.items():
                mine = [m for m in writes if m.org == name]
                if mine:
                    components.append(self._postgres_to_salesforce(org, mine))
        components.append(Component("api", self._api))
        return components

    def _sampler(self, mappings: list[Mapping]) -> RunFn:
        """Lag, dead letters and slot gauges, sampled every few seconds."""
        writes = any(m.mode != "read_only" for m in mappings)
        slot = slot_name(self.config.database.url) if writes else None
        return LagSampler(self.config, mappings, METRICS, slot=slot).run

    def _reader(self, writes: list[Mapping]) -> RunFn:
        """The WAL reader of every table some org's mapping writes from."""
        settings = ReaderSettings(
            dsn=self.config.database.url,
            tables=sorted({m.table for m in writes}),
            topic=self.pg_topic,
            slot=slot_name(self.config.database.url),
        )

        async def run(stop: asyncio.Event) -> None:
            await self.eventlog.ensure_topic(self.pg_topic)
            reader = PostgresChangeReader(settings, self.eventlog)
            await reader.setup()
            await reader.sync_publication(settings.tables)
            task = asyncio.create_task(reader.run())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            reader.stop()
            stopper.cancel()
            await task

        return run

    def _postgres_to_salesforce(
        self, org: OrgConfig, writes: list[Mapping]
    ) -> Component:
        handler = PgToSalesforce(
            PgToSfSettings(self.config.database.url, org.name),
            writes,
            SalesforceWriter.for_org(org),
            metrics=METRICS,
        )

        async def run(stop: asyncio.Event) -> None:
            # Lingering fills batches to multiples of 200 records (one
            # sObject collection each) instead of one call per few rows.
            try:
                await run_consumer(
                    lingering(self.eventlog),
                    topics.consumer_group("pg_to_sf", org.name),
                    [self.pg_topic],
                    handler,
                    stop,
                )
            finally:
                await handler.close()

        return Component(f"pg_to_sf[{org.name}]", run)

    def _salesforce_to_postgres(
        self, org: OrgConfig, conn: OrgConnection, reads: list[Mapping]
    ) -> list[Component]:
        topic = topics.salesforce_changes(org.name)
        settings = SubscriberSettings(
            org=org.name,
            conn=conn,
            database_url=self.config.database.url,
            topic=topic,
            mappings=reads,
        )
        handler = SalesforceToPostgres(
            org=org.name,
            mappings=reads,
            database_url=self.config.database.url,
            connection=conn,
            client_tag=org.client_tag,
        )

        async def subscribe(stop: asyncio.Event) -> None:
            await ChangeSubscriber(settings, self.eventlog).run(stop)

        return [
            Component(f"subscriber[{org.name}]", subscribe),
            Component(
                f"sf_to_pg[{org.name}]",
                self._consumer(
                    topics.consumer_group("sf_to_pg", org.name), topic, handler
                ),
            ),
        ]

    def _consumer(self, group: str, topic: str, handler: Handler) -> RunFn:
        async def run(stop: asyncio.Event) -> None:
            await run_consumer(self.eventlog, group, [topic], handler, stop)

        return run

    async def _api(self, stop: asyncio.Event) -> None:
        from forcelink.api.app import create_app
        from forcelink.api.server import split_listen

        host, port = split_listen(self.config.api.listen)
        server = _EmbeddedServer(
            uvicorn.Config(
                create_app(self.config),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        task = asyncio.create_task(server.serve())
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        server.should_exit = True
        await task

    def _info(self, orgs: dict[str, tuple[OrgConfig, OrgConnection]]) -> dict[str, Any]:
        return {
            "database_url": public_url(self.config.database.url),
            "eventlog": self.config.eventlog.backend,
            "orgs": {
                name: {
                    "connection_file": org.connection_file,
                    "login_url": conn.login_url,
                    "instance_url": conn.instance_url,
                }
                for name, (org, conn) in orgs.items()
            },
            "api_url": f"http://{self.config.api.listen}",
            "metrics_url": f"http://{self.config.metrics.listen}/metrics",
        }
