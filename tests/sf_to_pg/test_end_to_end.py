"""Changes made in the org through simple-salesforce arrive in Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal

import psycopg
import pytest

from tests.sf_to_pg.harness import Pipeline, load_examples, make_config, row, rows
from tests.support.local_org import LocalOrg


@pytest.fixture(params=["embedded", "kafka"])
async def pipeline(
    request: pytest.FixtureRequest, org: LocalOrg, fresh_database: str
) -> AsyncIterator[Pipeline]:
    kafka = (
        request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    )
    mappings = load_examples(fresh_database)
    running = Pipeline(org, make_config(fresh_database, request.param, kafka), mappings)
    await running.start()
    yield running
    await running.close()


async def test_create_update_null_delete_undelete__land_in_postgres(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    sf = org.salesforce(client_tag="someone-else")
    db = pipeline.config.database.url

    created = await asyncio.to_thread(
        sf.Account.create,
        {
            "Name": "Quarry Ltd",
            "External_Id__c": "Q-1",
            "Website": "https://quarry.example",
            "Phone": "+44 1 2345",
            "BillingStreet": "1 Pit Lane",
            "BillingCity": "Løkken",
            "NumberOfEmployees": 40,
            "AnnualRevenue": 1234567.89,
            "Active__c": True,
            "Founded__c": "1999-12-31",
            "Regions__c": "North;West",
        },
    )
    sfid = created["id"]
    first = await pipeline.until(lambda: row(db, "salesforce.account", sfid), "create")

    assert first["name"] == "Quarry Ltd"
    assert first["billingcity"] == "Løkken"
    assert first["annualrevenue"] == Decimal("1234567.89")
    assert first["founded__c"] == date(1999, 12, 31)
    assert first["regions__c"] == "North;West"
    assert first["_sync_state"] == "synced"

    await asyncio.to_thread(sf.Account.update, sfid, {"Website": "https://q.example"})
    await asyncio.to_thread(sf.Account.update, sfid, {"Phone": None})
    await asyncio.to_thread(sf.Account.update, sfid, {"BillingCity": "Aarhus"})
    updated = await pipeline.until(
        lambda: (
            (r := row(db, "salesforce.account", sfid))
            and r["billingcity"] == "Aarhus"
            and r
        ),
        "three updates",
    )

    assert updated["website"] == "https://q.example"
    assert updated["phone"] is None
    assert updated["billingstreet"] == "1 Pit Lane", "an UPDATE touches only its fields"
    assert updated["name"] == "Quarry Ltd"

    await asyncio.to_thread(sf.Account.delete, sfid)
    await pipeline.until(
        lambda: (r := row(db, "salesforce.account", sfid)) and r["isdeleted"], "delete"
    )
    org.admin("undelete", {"id": sfid})
    restored = await pipeline.until(
        lambda: (r := row(db, "salesforce.account", sfid)) and not r["isdeleted"] and r,
        "undelete",
    )

    assert restored["website"] == "https://q.example"
    assert len(rows(db, "SELECT id FROM salesforce.account")) == 1


async def test_own_echo__never_overrides_a_pending_local_change(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    theirs = org.salesforce(client_tag="someone-else")
    ours = org.salesforce(client_tag="forcelink")
    db = pipeline.config.database.url
    sfid = (
        await asyncio.to_thread(
            theirs.Account.create, {"Name": "Echo Co", "External_Id__c": "E-1"}
        )
    )["id"]
    await pipeline.until(lambda: row(db, "salesforce.account", sfid), "create")
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE salesforce.account SET name = 'Local Name',"
            " _sync_state = 'pending', _sync_at = now() WHERE sfid = %s",
            (sfid,),
        )

    await asyncio.to_thread(ours.Account.update, sfid, {"Name": "Echoed Name"})
    await asyncio.to_thread(
        theirs.Account.update, sfid, {"Website": "https://e.example"}
    )
    await pipeline.until(
        lambda: rows(db, "SELECT 1 FROM forcelink.conflicts WHERE sfid = %s", sfid),
        "the conflict from the non-echo change",
    )

    after = row(db, "salesforce.account", sfid)
    assert after is not None
    conflicts = rows(db, "SELECT * FROM forcelink.conflicts WHERE sfid = %s", sfid)
    assert len(conflicts) == 1, "the echo itself is no conflict"
    assert conflicts[0]["policy"] == "last_writer_wins"
    assert conflicts[0]["outcome"] == "salesforce_won"
    assert conflicts[0]["postgres_version"]["name"] == "Local Name"
    assert (
        conflicts[0]["salesforce_version"]["fields"]["Website"] == "https://e.example"
    )
    assert after["website"] == "https://e.example"
    assert after["_sync_state"] == "synced"
