"""Inserts, updates and deletes reach the org; sfids come back; no echo."""

from __future__ import annotations

import asyncio

from tests.pg_to_sf.conftest import Pipeline

ACCOUNT = "INSERT INTO salesforce.account (external_id__c, name) VALUES (%s, %s)"
CONTACT = (
    "INSERT INTO salesforce.contact"
    " (external_id__c, lastname, email, account__r__external_id__c)"
    " VALUES (%s, %s, %s, %s)"
)
WORKORDER = (
    "INSERT INTO salesforce.workorder (external_id__c, subject, status,"
    " account__r__external_id__c, contact__r__external_id__c)"
    " VALUES (%s, %s, 'New', %s, %s)"
)


async def test_three_tables__parent_and_children_in_one_transaction(
    pipeline: Pipeline,
) -> None:
    # Children named by their parents' external ids, inserted before the
    # parent in the same transaction: the write side still sends parents first.
    pipeline.execute(
        (WORKORDER, ("W1", "Fix pump", "A1", "C1")),
        (CONTACT, ("C1", "Lovelace", "ada@example.com", "A1")),
        (ACCOUNT, ("A1", "Acme")),
    )
    await pipeline.settled(3)

    account = pipeline.rows("salesforce.account")[0]
    contact = pipeline.rows("salesforce.contact")[0]
    order = pipeline.rows("salesforce.workorder")[0]
    for row in (account, contact, order):
        assert row["_sync_state"] == "synced", row
        assert row["sfid"] and row["_sync_error"] is None
    [sf_account] = pipeline.query("SELECT Id, Name, External_Id__c FROM Account")
    [sf_contact] = pipeline.query("SELECT Id, LastName, Email, AccountId FROM Contact")
    [sf_order] = pipeline.query(
        "SELECT Id, Subject, Status, AccountId, ContactId FROM WorkOrder"
    )
    assert (sf_account["Id"], sf_account["Name"]) == (account["sfid"], "Acme")
    assert sf_contact["Id"] == contact["sfid"]
    assert sf_contact["AccountId"] == account["sfid"]
    assert (sf_order["AccountId"], sf_order["ContactId"]) == (
        account["sfid"],
        contact["sfid"],
    )
    # One upsert call per object: the three rows went in one batch.
    assert pipeline.write_calls() == {"rest": 0, "collections": 3, "bulk": 0}


async def test_insert_update_delete__org_follows_and_nothing_echoes(
    pipeline: Pipeline,
) -> None:
    pipeline.execute(
        *[(ACCOUNT, (f"A{i}", f"Account {i}")) for i in range(5)],
    )
    await pipeline.settled(5)
    calls_after_insert = pipeline.write_calls()["collections"]

    pipeline.execute(
        "UPDATE salesforce.account SET name = name || ' (renamed)', phone = '555'"
        " WHERE external_id__c IN ('A1', 'A2')",
        # Two changes to one row in one transaction: one write of the last state.
        "UPDATE salesforce.account SET phone = '556' WHERE external_id__c = 'A2'",
    )
    await pipeline.eventually(
        lambda: len(pipeline.query("SELECT Id FROM Account WHERE Phone = '556'")) == 1
    )
    await pipeline.settled(5)
    pipeline.execute("DELETE FROM salesforce.account WHERE external_id__c = 'A3'")
    await pipeline.eventually(
        lambda: pipeline.scalar("SELECT count(*) FROM forcelink.sync_records") == 4
    )

    records = {
        r["External_Id__c"]: r
        for r in pipeline.query("SELECT Id, External_Id__c, Name, Phone FROM Account")
    }
    assert set(records) == {"A0", "A1", "A2", "A4"}
    assert records["A1"]["Name"] == "Account 1 (renamed)"
    assert records["A2"]["Phone"] == "556"
    assert records["A0"]["Phone"] is None
    rows = {r["external_id__c"]: r for r in pipeline.rows("salesforce.account")}
    assert {k: r["sfid"] for k, r in rows.items()} == {
        k: r["Id"] for k, r in records.items()
    }
    assert all(r["_sync_state"] == "synced" for r in rows.values())
    remembered = pipeline.scalar(
        "SELECT last_values->>'Phone' FROM forcelink.sync_records"
        f" WHERE sfid = '{rows['A2']['sfid']}'"
    )
    assert remembered == "556"

    # Exactly: inserts (1), one update call for both rows, one delete call.
    expected = {"rest": 0, "collections": calls_after_insert + 2, "bulk": 0}
    assert calls_after_insert == 1
    assert pipeline.write_calls() == expected
    # A quiet period: our own write-backs are not captured, so nothing more.
    changes = pipeline.reader.stats.changes
    await asyncio.sleep(2.0)
    assert pipeline.write_calls() == expected
    assert pipeline.reader.stats.changes == changes == 5 + 3 + 1
    # The two write-backs of rows (insert, update) were seen and skipped;
    # the delete's write-back touches no published table.
    assert pipeline.reader.stats.skipped_transactions == 2
