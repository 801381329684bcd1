"""Conflicts: one record changed on both sides before forcelink syncs it.

For each policy, an Account is first synced the way the applier syncs any
record (a gap event: fetched from the org and applied, which also records
what both sides held). Then, with ``forcelink run`` not running yet, the
application changes the row in Postgres (after forcelink's slot exists, so
the change is captured) and an office user changes the record in the org.
``forcelink run`` starts and both changes meet.

Which one the service sees first is a race between its two directions, so
the test holds the Postgres→Salesforce writer: the org fails its next six
sObject collections calls with 503 (the writer's first attempt and its five
retries, about 8 s), during which the Salesforce→Postgres applier receives
the office's change and finds the row ``pending``: a conflict. The writer's
next attempt re-reads the row and sends it only if the decision left it
``pending``. The test then checks both sides and the ``forcelink.conflicts``
row (policy, outcome, both versions).

A private local org is used: other tests advance the shared org's clock,
and ``last_writer_wins`` compares the org's commit time with Postgres's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from forcelink.connector.postgres.reader import ReaderSettings
from forcelink.connector.postgres.setup import ensure_slot, sync_publication
from forcelink.connector.salesforce.writer import SalesforceWriter
from forcelink.mapping import apply, load_mappings
from forcelink.processors.push import push
from forcelink.processors.sf_to_pg import SalesforceToPostgres
from forcelink.processors.verify import gap_events
from forcelink.runner import slot_name
from tests.sf_to_pg.harness import ROOT, row, rows
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg

WRITER_ATTEMPTS = 6
"""SalesforceWriter's default: one call and five retries before giving up."""

ORIGINAL = {
    "Name": "Depot",
    "External_Id__c": "K-1",
    "Phone": "555-0100",
    "Website": "https://depot.example",
}


@pytest.fixture(scope="module")
def private_org() -> Iterator[LocalOrg]:
    with tempfile.TemporaryDirectory(prefix="forcelink-conflicts-") as workdir:
        handle = LocalOrg(Path(workdir))
        handle.port = 0
        handle.start()
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture
def quiet_org(private_org: LocalOrg) -> LocalOrg:
    private_org.reset()
    return private_org


class Scene:
    """One Account synced under ``policy``, ready for changes on both sides."""

    def __init__(
        self,
        org: LocalOrg,
        database_url: str,
        tmp_path: Path,
        policy: str,
        created_in: str = "salesforce",
    ) -> None:
        self.org = org
        self.db = database_url
        self.tmp = tmp_path
        self.log = tmp_path / "run.log"
        self.config = self._config(policy)
        self.office = org.salesforce(client_tag="office")
        if created_in == "salesforce":
            (self.sfid,) = org.admin(
                "records",
                {"sobject": "Account", "events": False, "records": [ORIGINAL]},
            )["ids"]
            self._sync_once()
        else:
            self.sfid = self._pushed_once()
        self._capture_from_now()

    def _config(self, policy: str) -> Path:
        mappings = self.tmp / "mappings"
        mappings.mkdir()
        text = (ROOT / "mappings" / "account.yaml").read_text()
        text = text.replace(
            "conflict_policy: last_writer_wins", f"conflict_policy: {policy}"
        )
        assert f"conflict_policy: {policy}" in text
        (mappings / "account.yaml").write_text(text)
        self.mappings = load_mappings([mappings])
        apply(self.db, self.mappings)
        config = write_config(self.tmp, self.db, self.org)
        config.write_text(
            config.read_text().replace(str(ROOT / "mappings"), str(mappings))
        )
        return config

    def _sync_once(self) -> None:
        """The record into Postgres through the applier, as a gap event."""
        handler = SalesforceToPostgres(
            org="local",
            mappings=self.mappings,
            database_url=self.db,
            connection=self.org.connection(),
        )
        try:
            asyncio.run(
                handler.handle(gap_events("local", self.mappings[0], [self.sfid]))
            )
        finally:
            handler.close()
        synced = self.row()
        assert synced["_sync_state"] == "synced" and synced["phone"] == "555-0100"

    def _pushed_once(self) -> str:
        """The row created by the application, sent as ``forcelink push`` does."""
        with psycopg.connect(self.db) as conn:
            conn.execute(
                "INSERT INTO salesforce.account (name, external_id__c, phone, website)"
                " VALUES (%s, %s, %s, %s)",
                list(ORIGINAL.values()),
            )
        writer = SalesforceWriter("local", lambda: self.org.salesforce("forcelink"))
        push(self.db, writer, self.mappings[0], topic="forcelink.pg.changes")
        (pushed,) = rows(self.db, "SELECT sfid, _sync_state FROM salesforce.account")
        assert pushed["_sync_state"] == "synced"
        return str(pushed["sfid"])

    def _capture_from_now(self) -> None:
        """forcelink's slot and publication, so the app's change is captured."""
        settings = ReaderSettings(
            dsn=self.db,
            tables=["salesforce.account"],
            topic="-",
            slot=slot_name(self.db),
        )
        with psycopg.connect(self.db, autocommit=True) as conn:
            sync_publication(conn, settings.publication, settings.tables)
            ensure_slot(conn, settings.slot)

    def row(self) -> dict[str, Any]:
        found = row(self.db, "salesforce.account", self.sfid)
        assert found is not None
        return found

    def in_postgres(self, **columns: str) -> None:
        sets = ", ".join(f"{name} = %s" for name in columns)
        with psycopg.connect(self.db) as conn:
            conn.execute(
                f"UPDATE salesforce.account SET {sets} WHERE sfid = %s",
                [*columns.values(), self.sfid],
            )

    def in_salesforce(self, **fields: str) -> None:
        self.office.Account.update(self.sfid, fields)

    def sync(self, expected: dict[str, str]) -> None:
        """Start forcelink with the writer held; wait for ``expected`` (column
        -> value) on both sides, the row synced."""
        self.org.admin(
            "faults", {"kind": "collections", "fault": "503", "count": WRITER_ATTEMPTS}
        )
        process = start(self.config, self.tmp)
        try:
            wait_until(lambda: self.conflicts(), "the conflict decided", self.log, 30)
            wait_until(
                lambda: self._settled(expected),
                f"both sides at {expected}",
                self.log,
                60,
            )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)

    def _settled(self, expected: dict[str, str]) -> bool:
        found, record = self.row(), self.record()
        return found["_sync_state"] == "synced" and all(
            found[column] == value and record[column_field(column)] == value
            for column, value in expected.items()
        )

    def record(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.org.salesforce().Account.get(self.sfid)
        return answer

    def conflicts(self) -> list[dict[str, Any]]:
        return rows(self.db, "SELECT * FROM forcelink.conflicts ORDER BY id")


def column_field(column: str) -> str:
    return {"phone": "Phone", "website": "Website"}[column]


def pause() -> None:
    """Enough for the two sides' clocks to order the changes."""
    time.sleep(0.3)


def the_conflict(scene: Scene, policy: str, outcome: str) -> dict[str, Any]:
    (decided,) = scene.conflicts()
    assert decided["policy"] == policy
    assert decided["outcome"] == outcome
    assert decided["sfid"] == scene.sfid
    assert decided["salesforce_version"]["change_type"] == "UPDATE"
    return decided


def test_salesforce_wins__the_local_change_is_dropped(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "salesforce_wins")
    scene.in_postgres(phone="555-0199")
    pause()
    scene.in_salesforce(Website="https://office.example")

    scene.sync({"phone": "555-0100", "website": "https://office.example"})

    decided = the_conflict(scene, "salesforce_wins", "salesforce_won")
    assert decided["postgres_version"]["phone"] == "555-0199"
    assert (
        decided["salesforce_version"]["fields"]["Website"] == "https://office.example"
    )


def test_postgres_wins__the_row_goes_to_salesforce_whole(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "postgres_wins")
    scene.in_salesforce(Website="https://office.example")
    pause()
    scene.in_postgres(phone="555-0199")

    scene.sync({"phone": "555-0199", "website": "https://depot.example"})

    decided = the_conflict(scene, "postgres_wins", "postgres_won")
    assert decided["postgres_version"]["phone"] == "555-0199"
    assert (
        decided["salesforce_version"]["fields"]["Website"] == "https://office.example"
    )


def test_last_writer_wins__salesforce_later(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "last_writer_wins")
    scene.in_postgres(website="https://app.example")
    pause()
    scene.in_salesforce(Website="https://office.example")

    scene.sync({"website": "https://office.example", "phone": "555-0100"})

    decided = the_conflict(scene, "last_writer_wins", "salesforce_won")
    assert decided["result"]["reason"] == "Salesforce changed it later"
    assert decided["postgres_version"]["website"] == "https://app.example"


def test_last_writer_wins__postgres_later(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "last_writer_wins")
    scene.in_salesforce(Website="https://office.example")
    pause()
    scene.in_postgres(website="https://app.example")

    scene.sync({"website": "https://app.example", "phone": "555-0100"})

    decided = the_conflict(scene, "last_writer_wins", "postgres_won")
    assert decided["result"]["reason"] == "Postgres changed it later"
    assert (
        decided["salesforce_version"]["fields"]["Website"] == "https://office.example"
    )


def test_merge_fields__different_fields_keep_both_changes(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "merge_fields")
    scene.in_postgres(phone="555-0199")
    pause()
    scene.in_salesforce(Website="https://office.example")

    scene.sync({"phone": "555-0199", "website": "https://office.example"})

    decided = the_conflict(scene, "merge_fields", "merged")
    assert decided["result"]["postgres_changed"] == ["phone"]
    assert "website" in decided["result"]["salesforce_changed"]


def test_merge_fields__same_field_goes_to_the_later_writer(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(quiet_org, fresh_database, tmp_path, "merge_fields")
    scene.in_postgres(website="https://app.example", phone="555-0199")
    pause()
    scene.in_salesforce(Website="https://office.example")

    scene.sync({"website": "https://office.example", "phone": "555-0100"})

    decided = the_conflict(scene, "merge_fields", "salesforce_won")
    assert decided["result"]["reason"].startswith("both changed website")


def test_merge_fields__a_record_created_in_postgres_merges_too(
    quiet_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    scene = Scene(
        quiet_org, fresh_database, tmp_path, "merge_fields", created_in="postgres"
    )
    scene.in_postgres(phone="555-0199")
    pause()
    scene.in_salesforce(Website="https://office.example")

    scene.sync({"phone": "555-0199", "website": "https://office.example"})

    decided = the_conflict(scene, "merge_fields", "merged")
    assert decided["result"]["postgres_changed"] == ["phone"]
