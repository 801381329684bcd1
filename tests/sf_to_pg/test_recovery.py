"""Every gap the Salesforce event stream can have is repaired.

Each path is driven through the local org's admin API: raw gap events,
an overflow, an expired replay id, a forgotten CometD client and a revoked
token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from tests.sf_to_pg.harness import Pipeline, load_examples, make_config, row, rows
from tests.support.local_org import LocalOrg


@pytest.fixture
async def pipeline(org: LocalOrg, fresh_database: str) -> AsyncIterator[Pipeline]:
    mappings = load_examples(fresh_database)
    running = Pipeline(org, make_config(fresh_database, "embedded", None), mappings)
    await running.start()
    yield running
    await running.close()


def seed_silently(org: LocalOrg, *names: str) -> list[str]:
    """Create Accounts in the org without change events (as if they were lost)."""
    answer = org.admin(
        "records",
        {
            "sobject": "Account",
            "events": False,
            "records": [{"Name": n, "External_Id__c": n} for n in names],
        },
    )
    return list(answer["ids"])


def header(change_type: str, ids: list[str], when_ms: int) -> dict[str, object]:
    return {
        "ChangeEventHeader": {
            "entityName": "Account",
            "recordIds": ids,
            "changeType": change_type,
            "changeOrigin": "com/salesforce/api/rest/60.0",
            "transactionKey": "0000-gap",
            "sequenceNumber": 1,
            "commitTimestamp": when_ms,
            "commitNumber": 1,
            "commitUser": "005000000000000AAA",
            "changedFields": [],
        }
    }


async def test_gap_events__the_record_is_fetched_and_applied_whole(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    db = pipeline.config.database.url
    created, updated = seed_silently(org, "Gap-Create", "Gap-Update")
    now = int(time.time() * 1000)

    org.admin(
        "events",
        {
            "payloads": [
                header("GAP_CREATE", [created], now),
                header("GAP_UPDATE", [updated], now),
            ]
        },
    )

    for sfid, name in ((created, "Gap-Create"), (updated, "Gap-Update")):
        landed = await pipeline.until(
            lambda s=sfid: row(db, "salesforce.account", s), f"{name} fetched"
        )
        assert landed["name"] == name
        assert landed["external_id__c"] == name


async def test_gap_overflow__the_object_is_reread_from_the_commit_time(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    db = pipeline.config.database.url
    before = int(time.time() * 1000) - 5000
    ids = seed_silently(org, "Over-1", "Over-2", "Over-3")

    org.admin("events", {"payload": header("GAP_OVERFLOW", [], before)})

    await pipeline.until(
        lambda: (
            len(rows(db, "SELECT 1 FROM salesforce.account WHERE sfid = ANY(%s)", ids))
            == 3
        ),
        "all three records re-read",
    )


async def test_forgotten_client_and_revoked_token__streaming_resumes(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    db = pipeline.config.database.url
    sf = org.salesforce(client_tag="someone-else")
    first = (await asyncio.to_thread(sf.Account.create, {"Name": "Before"}))["id"]
    await pipeline.until(lambda: row(db, "salesforce.account", first), "first record")

    org.admin("clients/forget")
    second = (await asyncio.to_thread(sf.Account.create, {"Name": "After 403"}))["id"]
    await pipeline.until(lambda: row(db, "salesforce.account", second), "after forget")

    org.admin("tokens/revoke")
    sf = org.salesforce(client_tag="someone-else")
    third = (await asyncio.to_thread(sf.Account.create, {"Name": "After 401"}))["id"]
    await pipeline.until(lambda: row(db, "salesforce.account", third), "after revoke")


async def test_expired_replay_id__resync_from_last_seen_then_stream_again(
    org: LocalOrg, fresh_database: str
) -> None:
    mappings = load_examples(fresh_database)
    pipeline = Pipeline(org, make_config(fresh_database, "embedded", None), mappings)
    sf = org.salesforce(client_tag="someone-else")
    await pipeline.start()
    seen = (await asyncio.to_thread(sf.Account.create, {"Name": "Seen"}))["id"]
    await pipeline.until(
        lambda: row(fresh_database, "salesforce.account", seen), "seen"
    )
    await pipeline.close()

    # Its change event is published, then expires with the 73 h jump: the
    # stored replay id now points before a lost event.
    missed = (
        await asyncio.to_thread(sf.Account.create, {"Name": "Missed while away"})
    )["id"]
    org.admin("clock", {"seconds": 73 * 3600})
    sf = org.salesforce(client_tag="someone-else")
    later = (await asyncio.to_thread(sf.Account.create, {"Name": "Created later"}))[
        "id"
    ]
    await pipeline.start()
    try:
        for sfid in (missed, later):
            await pipeline.until(
                lambda s=sfid: row(fresh_database, "salesforce.account", s),
                f"{sfid} resynced",
            )
        after = (await asyncio.to_thread(sf.Account.create, {"Name": "Streamed"}))["id"]
        await pipeline.until(
            lambda: row(fresh_database, "salesforce.account", after),
            "streaming again after the resync",
        )
    finally:
        await pipeline.close()

    names = [
        r["name"] for r in rows(fresh_database, "SELECT name FROM salesforce.account")
    ]
    assert sorted(names) == ["Created later", "Missed while away", "Seen", "Streamed"]


async def test_one_event_naming_several_records__applies_to_each(
    pipeline: Pipeline, org: LocalOrg
) -> None:
    db = pipeline.config.database.url
    sf = org.salesforce(client_tag="someone-else")
    ids = [
        (await asyncio.to_thread(sf.Account.create, {"Name": f"Twin {i}"}))["id"]
        for i in (1, 2)
    ]
    for sfid in ids:
        await pipeline.until(lambda s=sfid: row(db, "salesforce.account", s), "create")
    # The org's clock may run ahead of this machine's (another test moves
    # it 73 h): the shared event must be newer than the records by the org's time.
    stamps = [
        datetime.fromisoformat(
            sf.Account.get(i)["SystemModstamp"].replace("+0000", "+00:00")
        )
        for i in ids
    ]
    merged = header("UPDATE", ids, int(max(stamps).timestamp() * 1000) + 1000)
    merged["ChangeEventHeader"]["changedFields"] = ["Website", "LastModifiedDate"]  # type: ignore[index]
    merged["Website"] = "https://twins.example"

    org.admin("events", {"payload": merged})

    for sfid in ids:
        await pipeline.until(
            lambda s=sfid: (
                (r := row(db, "salesforce.account", s))
                and r["website"] == "https://twins.example"
            ),
            f"{sfid} updated by the shared event",
        )
