"""Change events follow Salesforce's CDC rules, write by write.

Writes go through simple-salesforce to the emulator subprocess; the events
are read back from the journal the emulator saves. The last tests drive
``Org`` in-process for what needs a huge or crafted transaction.
"""

from __future__ import annotations

from typing import Any

import pytest

from forcelink.emulator import events, schema
from forcelink.emulator.errors import ApiError
from forcelink.emulator.org import CallContext, Org
from tests.emulator.test_admin import journal
from tests.support.local_org import LocalOrg

SYSTEM = {"CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById"}


def header(event: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = event["payload"]["ChangeEventHeader"]
    return found


def fields(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["payload"].items() if k != "ChangeEventHeader"}


def test_change_events__lifecycle_of_one_record(org: LocalOrg) -> None:
    sf = org.salesforce(client_tag="cdc-test")
    record_id = sf.Account.create(
        {
            "Name": "Acme",
            "Industry": "Energy",
            "BillingStreet": "1 Main St",
            "BillingCity": "Oslo",
        }
    )["id"]
    sf.Account.update(record_id, {"Name": "Acme AS"})
    sf.Account.update(record_id, {"Industry": None})
    sf.Account.update(record_id, {"BillingCity": "Bergen"})
    sf.Account.delete(record_id)
    org.admin("undelete", {"id": record_id})

    created, renamed, nulled, moved, deleted, undeleted = journal(org)
    assert [header(e)["changeType"] for e in journal(org)] == [
        "CREATE",
        "UPDATE",
        "UPDATE",
        "UPDATE",
        "DELETE",
        "UNDELETE",
    ]
    replay_ids = [e["replay_id"] for e in journal(org)]
    assert replay_ids == sorted(set(replay_ids))

    body = fields(created)
    assert set(body) == {"Name", "Industry", "BillingAddress", "Active__c"} | SYSTEM
    assert body["BillingAddress"] == {"Street": "1 Main St", "City": "Oslo"}
    assert body["CreatedDate"].endswith("Z")
    assert header(created)["changedFields"] == []

    assert set(fields(renamed)) == {"Name", "LastModifiedDate"}
    assert header(renamed)["changedFields"] == ["Name", "LastModifiedDate"]
    assert header(renamed)["nulledFields"] == []

    assert fields(nulled)["Industry"] is None
    assert header(nulled)["changedFields"] == ["Industry", "LastModifiedDate"]
    assert header(nulled)["nulledFields"] == ["Industry"]

    assert fields(moved)["BillingAddress"] == {"City": "Bergen"}
    assert header(moved)["changedFields"] == ["BillingAddress.City", "LastModifiedDate"]

    assert fields(deleted) == {}
    assert header(deleted)["changedFields"] == []

    body = fields(undeleted)
    assert body["Name"] == "Acme AS" and "Industry" not in body
    assert body["BillingAddress"] == {"Street": "1 Main St", "City": "Bergen"}

    for event in (created, renamed, nulled, moved, deleted):
        h = header(event)
        assert h["entityName"] == "Account"
        assert h["recordIds"] == [record_id]
        assert h["changeOrigin"] == "com/salesforce/api/rest/60.0;client=cdc-test"
        assert h["sequenceNumber"] == 1
        assert h["commitUser"].startswith("005")
        assert isinstance(h["commitTimestamp"], int)
        assert h["diffFields"] == []
    keys = [header(e)["transactionKey"] for e in journal(org)]
    assert len(set(keys)) == len(keys)
    numbers = [header(e)["commitNumber"] for e in journal(org)]
    assert numbers == sorted(set(numbers))


def test_change_events__one_collection_call_is_one_transaction(org: LocalOrg) -> None:
    sf = org.salesforce(client_tag="batch")
    records = [{"attributes": {"type": "Contact"}, "LastName": n} for n in "abc"]
    results = sf.restful("composite/sobjects", method="POST", json={"records": records})
    headers = [header(e) for e in journal(org)]
    assert [h["recordIds"][0] for h in headers] == [r["id"] for r in results]
    assert [h["sequenceNumber"] for h in headers] == [1, 2, 3]
    assert len({h["transactionKey"] for h in headers}) == 1
    assert len({h["commitTimestamp"] for h in headers}) == 1


def test_change_events__call_without_client_option_has_bare_origin(
    org: LocalOrg,
) -> None:
    sf = org.salesforce()
    sf.session.headers.pop("Sforce-Call-Options")
    sf.Contact.create({"LastName": "untagged"})
    [event] = journal(org)
    assert header(event)["changeOrigin"] == "com/salesforce/api/rest/60.0"


def test_change_events__failed_transaction_publishes_nothing() -> None:
    org = Org(schema.load())
    ctx = CallContext(org.register_user("u@example.com"), "t")
    with pytest.raises(ApiError), org.transaction(ctx):
        org.create("Account", {"Name": "kept?"}, ctx)
        org.create("Account", {}, ctx)
    assert org.count("Account") == 0
    assert org.journal.after(-2) == []


def test_change_events__overflow_after_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "OVERFLOW_LIMIT", 3)
    org = Org(schema.load())
    ctx = CallContext(org.register_user("u@example.com"), "t", api="bulk")
    with org.transaction(ctx):
        for n in range(5):
            org.create("Account", {"Name": str(n)}, ctx)
        org.create("Contact", {"LastName": "x"}, ctx)
    kinds = [
        (e.entity_name, e.payload["ChangeEventHeader"]["changeType"])
        for e in org.journal.after(-2)
    ]
    assert kinds == [("Account", "CREATE")] * 3 + [
        ("Account", "GAP_OVERFLOW"),
        ("Contact", "GAP_OVERFLOW"),
    ]
    origin = org.journal.after(-2)[0].payload["ChangeEventHeader"]["changeOrigin"]
    assert origin == "com/salesforce/api/bulk/60.0;client=t"
