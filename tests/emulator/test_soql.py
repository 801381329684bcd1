"""SOQL subset: parsing, schema checks and evaluation, as tables of cases.

The queries run against a real in-process Org (no server), seeded with a
clock that says when each record was created; the wire-level behaviour is
tested through simple-salesforce in test_query.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from forcelink.emulator import schema, soql
from forcelink.emulator.clock import Clock
from forcelink.emulator.errors import ApiError
from forcelink.emulator.org import CallContext, Org

NOW = datetime(2026, 3, 11, 15, 30, tzinfo=UTC)  # a Wednesday


class SetClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.moment = NOW

    def now(self) -> datetime:
        return self.moment


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def org() -> Org:
    clock = SetClock()
    org = Org(schema.load(), clock=clock)
    ctx = CallContext(org.register_user("soql@example.com"))

    def add(sobject: str, created: str = "2026-03-01T00:00:00", **values: Any) -> str:
        clock.moment = at(created)
        return org.create(sobject, values, ctx)

    acme = add(
        "Account", "2026-03-11T08:00:00", Name="Acme", NumberOfEmployees=50,
        Industry="Energy", Active__c=True, Founded__c="2001-05-01",
        AnnualRevenue=1000.5, BillingCity="Lyon", BillingCountry="France",
        Regions__c="North;East", Description="it's 100% fine",
    )  # fmt: skip
    globex = add(
        "Account", "2026-03-10T23:59:59", Name="globex", NumberOfEmployees=7,
        Industry="Other", Active__c=False, Founded__c="1999-12-31", Regions__c="South",
    )  # fmt: skip
    add("Account", "2026-02-01T00:00:00", Name="Initech", Active__c=True)
    org.delete("Account", add("Account", Name="Gone Ltd", Active__c=True), ctx)
    add("Contact", LastName="Ada", FirstName="Lovelace", AccountId=acme)
    add("Contact", LastName="Bob", AccountId=globex, Email="bob@globex.example")
    add("Contact", LastName="Cy")
    work_order = add("WorkOrder", Subject="Fix pump", AccountId=acme)
    add("Site_Photo__c", Name="p1", Work_Order__c=work_order)
    clock.moment = NOW
    return org


def names(org: Org, text: str, include_deleted: bool = False) -> list[Any]:
    total, rows = soql.execute(text, org, include_deleted, shape="flat")
    found = [row[0] for row in rows]
    assert total == len(found)
    return found


WHERE_CASES = [
    ("Name = 'acme'", ["Acme"]),
    ("Name != 'ACME'", ["globex", "Initech"]),
    ("Name <> 'acme'", ["globex", "Initech"]),
    ("NumberOfEmployees > 7", ["Acme"]),
    ("NumberOfEmployees >= 7", ["Acme", "globex"]),
    ("NumberOfEmployees < 50", ["globex"]),
    ("NumberOfEmployees <= 50.0", ["Acme", "globex"]),
    ("NumberOfEmployees = null", ["Initech"]),
    ("NumberOfEmployees != null", ["Acme", "globex"]),
    ("NumberOfEmployees != 7", ["Acme", "Initech"]),
    ("Active__c = true", ["Acme", "Initech"]),
    ("Active__c = FALSE", ["globex"]),
    ("Name IN ('ACME', 'Initech')", ["Acme", "Initech"]),
    ("Name NOT IN ('acme')", ["globex", "Initech"]),
    ("Industry IN ('Energy', null)", ["Acme", "Initech"]),
    ("Name LIKE 'a%'", ["Acme"]),
    ("Name LIKE '%E%'", ["Acme", "globex", "Initech"]),
    ("Name LIKE 'glob_x'", ["globex"]),
    ("Description LIKE '%100\\%%'", ["Acme"]),
    ("Description = 'it\\'s 100% fine'", ["Acme"]),
    ("Name > 'b'", ["globex", "Initech"]),
    ("Founded__c > 2000-01-01", ["Acme"]),
    ("Founded__c = 1999-12-31", ["globex"]),
    ("CreatedDate = TODAY", ["Acme"]),
    ("CreatedDate = YESTERDAY", ["globex"]),
    ("CreatedDate < TODAY", ["globex", "Initech"]),
    ("CreatedDate >= LAST_N_DAYS:1", ["Acme", "globex"]),
    ("CreatedDate = THIS_MONTH", ["Acme", "globex"]),
    ("CreatedDate = LAST_MONTH", ["Initech"]),
    ("CreatedDate = THIS_WEEK", ["Acme", "globex"]),
    ("CreatedDate > 2026-03-10T23:59:59Z", ["Acme"]),
    ("CreatedDate >= 2026-03-11T00:59:59+01:00", ["Acme", "globex"]),
    ("CreatedDate = 2026-03-11T08:00:00.000+00:00", ["Acme"]),
    ("AnnualRevenue = 1000.5", ["Acme"]),
    ("Regions__c INCLUDES ('north;EAST', 'West')", ["Acme"]),
    ("Regions__c EXCLUDES ('north')", ["globex", "Initech"]),
    ("BillingCity = 'lyon'", ["Acme"]),
    ("NOT Name = 'Acme'", ["globex", "Initech"]),
    ("Name = 'Acme' OR Name = 'globex' OR Name = 'x'", ["Acme", "globex"]),
    (
        "Active__c = true AND (Name = 'Acme' OR NumberOfEmployees = null)",
        ["Acme", "Initech"],
    ),
    ("(NOT Active__c = true) OR Name LIKE 'I%'", ["globex", "Initech"]),
    ("Name = 'nobody'", []),
]


@pytest.mark.parametrize(("where", "expected"), WHERE_CASES)
def test_where__table(org: Org, where: str, expected: list[str]) -> None:
    assert names(org, f"SELECT Name FROM Account WHERE {where}") == expected


def test_where__parent_field_and_id_forms(org: Org) -> None:
    assert names(org, "SELECT LastName FROM Contact WHERE Account.Name = 'GLOBEX'") == [
        "Bob"
    ]
    assert names(org, "SELECT LastName FROM Contact WHERE Account.Name = null") == [
        "Cy"
    ]

    acme = names(org, "SELECT Id FROM Account WHERE Name = 'Acme'")[0]
    for literal in (acme, acme[:15]):
        query = f"SELECT LastName FROM Contact WHERE AccountId = '{literal}'"
        assert names(org, query) == ["Ada"]
    query = f"SELECT LastName FROM Contact WHERE AccountId IN ('{acme[:15]}')"
    assert names(org, query) == ["Ada"]


def test_where__two_hops(org: Org) -> None:
    query = "SELECT Name, Work_Order__r.Account.Name FROM Site_Photo__c"
    _, rows = soql.execute(query, org, shape="flat")
    assert list(rows) == [("p1", "Acme")]
    query = "SELECT Name FROM Site_Photo__c WHERE Work_Order__r.Account.Name = 'x'"
    assert names(org, query) == []


ORDER_CASES = [
    ("Name", ["Acme", "globex", "Initech"]),
    ("Name DESC", ["Initech", "globex", "Acme"]),
    ("NumberOfEmployees", ["Initech", "globex", "Acme"]),
    ("NumberOfEmployees ASC NULLS LAST", ["globex", "Acme", "Initech"]),
    ("NumberOfEmployees DESC", ["Acme", "globex", "Initech"]),
    ("NumberOfEmployees DESC NULLS FIRST", ["Initech", "Acme", "globex"]),
    ("Active__c DESC, Name DESC", ["Initech", "Acme", "globex"]),
    ("Active__c, Name", ["globex", "Acme", "Initech"]),
]


@pytest.mark.parametrize(("order", "expected"), ORDER_CASES)
def test_order_by__table(org: Org, order: str, expected: list[str]) -> None:
    assert names(org, f"SELECT Name FROM Account ORDER BY {order}") == expected


def test_limit_offset_and_count(org: Org) -> None:
    base = "SELECT Name FROM Account ORDER BY Name"
    assert names(org, f"{base} LIMIT 2") == ["Acme", "globex"]
    assert names(org, f"{base} LIMIT 1 OFFSET 1") == ["globex"]
    assert names(org, f"{base} OFFSET 2") == ["Initech"]

    total, rows = soql.execute("SELECT COUNT() FROM Account", org)
    assert (total, list(rows)) == (3, [])
    total, _ = soql.execute("select count() from account where Active__c = true", org)
    assert total == 2
    total, _ = soql.execute("SELECT COUNT() FROM Account", org, include_deleted=True)
    assert total == 4


def test_query_all_sees_deleted_records(org: Org) -> None:
    query = "SELECT Name, IsDeleted FROM Account WHERE IsDeleted = true"
    assert names(org, query) == []
    assert names(org, query, include_deleted=True) == ["Gone Ltd"]


def test_rest_rows__attributes_parents_and_address(org: Org) -> None:
    query = (
        "SELECT id, lastname, account.name, Account.BillingAddress FROM Contact "
        "ORDER BY LastName"
    )
    total, rows = soql.execute(query, org, version="61.0")
    ada, bob, cy = list(rows)
    assert total == 3
    assert list(ada) == ["attributes", "Id", "LastName", "Account"]
    assert ada["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v61.0/sobjects/Contact/{ada['Id']}",
    }
    account = ada["Account"]
    assert account["attributes"]["type"] == "Account"
    assert account["Name"] == "Acme"
    assert account["BillingAddress"] == {
        "street": None,
        "city": "Lyon",
        "state": None,
        "postalCode": None,
        "country": "France",
        "latitude": None,
        "longitude": None,
        "geocodeAccuracy": None,
    }
    assert bob["Account"]["BillingAddress"] is None
    assert cy["Account"] is None


def test_flat_rows__dotted_column_names(org: Org) -> None:
    text = "SELECT lastname, account.name FROM Contact ORDER BY LastName"
    bound = soql.plan(soql.parse(text), org)
    assert bound.column_names == ["LastName", "Account.Name"]
    assert [bound.flat(r) for r in bound.run()] == [
        ("Ada", "Acme"),
        ("Bob", "globex"),
        ("Cy", None),
    ]


ERROR_CASES = [
    ("SELECT Id FORM Account", "MALFORMED_QUERY", "unexpected token: 'FORM'", 11),
    (
        "SELECT Id FROM Account WHERE",
        "MALFORMED_QUERY",
        "unexpected token: '<EOF>'",
        29,
    ),
    (
        "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",
        "MALFORMED_QUERY",
        "unexpected token: 'OR'",
        56,
    ),
    (
        "SELECT Id FROM Account WHERE Name = 'a' AND NOT Name = 'b'",
        "MALFORMED_QUERY",
        "unexpected token: 'NOT'",
        45,
    ),
    (
        "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
        "MALFORMED_QUERY",
        "unexpected token: '('",
        12,
    ),
    (
        "SELECT MAX(NumberOfEmployees) FROM Account",
        "MALFORMED_QUERY",
        "unexpected token: '('",
        11,
    ),
    (
        "SELECT Id FROM Account WHERE Name = 'open",
        "MALFORMED_QUERY",
        "unexpected token: '''",
        37,
    ),
    ("SELECT Id FROM Foo", "INVALID_TYPE", "sObject type 'Foo' is not supported.", 16),
    (
        "SELECT Foo FROM Account",
        "INVALID_FIELD",
        "No such column 'Foo' on entity 'Account'.",
        8,
    ),
    (
        "SELECT Owner.Name FROM Account",
        "INVALID_FIELD",
        "Didn't understand relationship 'Owner' in field path.",
        8,
    ),
    (
        "SELECT Id FROM Contact WHERE Account.Foo = 'x'",
        "INVALID_FIELD",
        "No such column 'Foo' on entity 'Account'.",
        30,
    ),
    (
        "SELECT Id FROM Account WHERE Name = 5",
        "INVALID_FIELD",
        "value of filter criterion for field 'Name' must be of type string and "
        "should be enclosed in quotes",
        37,
    ),
    (
        "SELECT Id FROM Account WHERE CreatedDate > 2026-01-01",
        "INVALID_FIELD",
        "value of filter criterion for field 'CreatedDate' must be of type dateTime "
        "and should not be enclosed in quotes",
        44,
    ),
    (
        "SELECT Id FROM Account WHERE NumberOfEmployees = '5'",
        "INVALID_FIELD",
        "must be of type double and should not be enclosed in quotes",
        50,
    ),
    (
        "SELECT Id FROM Contact WHERE AccountId = 'nope'",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid ID field: nope",
        42,
    ),
    (
        "SELECT Id FROM Account WHERE NumberOfEmployees LIKE '5%'",
        "INVALID_QUERY_FILTER_OPERATOR",
        "invalid operator on int field",
        30,
    ),
    (
        "SELECT Id FROM Account WHERE BillingAddress = 'x'",
        "INVALID_FIELD",
        "can not be filtered",
        30,
    ),
    (
        "SELECT Id FROM Account OFFSET 2001",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "Maximum SOQL offset allowed is 2000",
        None,
    ),
]


@pytest.mark.parametrize(("text", "code", "words", "column"), ERROR_CASES)
def test_errors__worded_like_salesforce(
    org: Org, text: str, code: str, words: str, column: int | None
) -> None:
    with pytest.raises(ApiError) as caught:
        soql.execute(text, org)
    error = caught.value
    assert (error.status, error.error_code) == (400, code)
    assert words in error.message
    if column is not None:
        assert f"ERROR at Row:1:Column:{column}\n" in error.message
        caret_line = error.message.split("\n")[2]
        assert caret_line == " " * (column - 1) + "^"


def test_errors__row_and_column_on_later_lines(org: Org) -> None:
    with pytest.raises(ApiError) as caught:
        soql.execute("SELECT Id\nFROM Account\n WHERE Nme = 'x'", org)
    assert "ERROR at Row:3:Column:8\nNo such column 'Nme'" in caught.value.message


def test_parse__keywords_any_case_and_spacing() -> None:
    query = soql.parse(
        "select Id,Name from Account where(Name='a'or Name='b')order by Name desc "
        "nulls last limit 5 offset 1"
    )
    assert query.sobject == "Account"
    assert [f.text for f in query.fields] == ["Id", "Name"]
    assert query.order_by[0].descending and query.order_by[0].nulls_last
    assert (query.limit, query.offset) == (5, 1)
