"""REST query through unmodified simple-salesforce against the emulator process."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from forcelink.emulator import schema, soql
from forcelink.emulator.errors import ApiError
from forcelink.emulator.org import Org
from forcelink.emulator.query import Cursor, Cursors
from tests.support.local_org import LocalOrg


def seed(org: LocalOrg, sobject: str, records: list[dict[str, Any]]) -> list[str]:
    answer = org.admin(
        "records", {"sobject": sobject, "records": records, "events": False}
    )
    ids: list[str] = answer["ids"]
    return ids


def error_of(error: SalesforceMalformedRequest) -> dict[str, Any]:
    content: Any = error.content
    first: dict[str, Any] = content[0]
    return first


def test_paging__4500_records_in_pages_of_2000(org: LocalOrg) -> None:
    seed(org, "Account", [{"Name": f"A{i:05d}"} for i in range(4500)])
    sf: Any = org.salesforce()

    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert (first["totalSize"], first["done"], len(first["records"])) == (
        4500,
        False,
        2000,
    )
    assert first["nextRecordsUrl"].startswith(
        f"/services/data/v{sf.sf_version}/query/01g"
    )
    assert first["nextRecordsUrl"].endswith("-2000")

    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert (second["done"], len(second["records"])) == (False, 2000)
    third = sf.query_more(second["nextRecordsUrl"], identifier_is_url=True)
    assert (third["done"], len(third["records"])) == (True, 500)
    assert "nextRecordsUrl" not in third

    names = [r["Name"] for page in (first, second, third) for r in page["records"]]
    assert names == [f"A{i:05d}" for i in range(4500)]

    everything = sf.query_all("SELECT Name FROM Account WHERE Name LIKE 'A01%'")
    assert everything["totalSize"] == 1000
    assert len(everything["records"]) == 1000


def test_cursor__finished_cursor_is_refused(org: LocalOrg) -> None:
    seed(org, "Account", [{"Name": f"A{i}"} for i in range(2001)])
    sf: Any = org.salesforce()

    first = sf.query("SELECT Id FROM Account")
    last = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert last["done"] and len(last["records"]) == 1
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert error_of(caught.value)["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_cursor__expires_after_15_idle_minutes() -> None:
    # In process: advancing the shared emulator's clock would expire the
    # JWT logins of every later test in the session.
    org = Org(schema.load())
    cursors = Cursors(org)
    plan = soql.plan(soql.parse("SELECT Id FROM Account"), org)
    kept = cursors.add(Cursor(plan, [], 2000, org.clock.now()))
    idle = cursors.add(Cursor(plan, [], 2000, org.clock.now()))

    org.clock.advance(10 * 60)
    cursors.take(kept)
    org.clock.advance(6 * 60)
    assert cursors.take(kept) is not None
    with pytest.raises(ApiError) as caught:
        cursors.take(idle)
    assert caught.value.error_code == "INVALID_QUERY_LOCATOR"


def test_rows__attributes_parents_address_and_count(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    account = sf.Account.create(
        {"Name": "Acme", "BillingCity": "Lyon", "External_Id__c": "ACME-1"}
    )["id"]
    sf.Contact.create({"LastName": "Ada", "AccountId": account})
    sf.Contact.create({"LastName": "Bob"})

    result = sf.query(
        "SELECT Id, LastName, Account.Name, Account.BillingAddress FROM Contact "
        "ORDER BY LastName"
    )
    ada, bob = result["records"]
    assert ada["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v{sf.sf_version}/sobjects/Contact/{ada['Id']}",
    }
    assert ada["Account"]["Name"] == "Acme"
    assert ada["Account"]["attributes"]["type"] == "Account"
    assert ada["Account"]["BillingAddress"]["city"] == "Lyon"
    assert bob["Account"] is None

    count = sf.query(
        "SELECT COUNT() FROM Contact WHERE Account.External_Id__c = 'acme-1'"
    )
    assert (count["totalSize"], count["records"]) == (1, [])


def test_query_all__sees_deleted_records(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    gone = sf.Account.create({"Name": "Gone"})["id"]
    sf.Account.create({"Name": "Stays"})
    sf.Account.delete(gone)

    query = "SELECT Name, IsDeleted FROM Account ORDER BY Name"
    assert [r["Name"] for r in sf.query_all(query)["records"]] == ["Stays"]
    rows = sf.query_all(query, include_deleted=True)["records"]
    assert [(r["Name"], r["IsDeleted"]) for r in rows] == [
        ("Gone", True),
        ("Stays", False),
    ]


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ("SELECT Id FORM Account", "MALFORMED_QUERY", "unexpected token: 'FORM'"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE", "sObject type 'Nope__c' is not"),
        ("SELECT Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity"),
    ],
)
def test_errors__as_salesforce_words_them(
    org: LocalOrg, query: str, code: str, words: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        org.salesforce().query(query)
    error = error_of(caught.value)
    assert error["errorCode"] == code
    assert words in error["message"]
