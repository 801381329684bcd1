"""Every type of the mapping type table crosses exactly; TOAST kept on update."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal

from tests.pg_to_sf.conftest import Pipeline, dec

# ~27 kB: stored out of line (TOAST). Account.Description has `transform:
# trim` in its mapping, so the text has no surrounding blanks to lose.
# Hex digests compress poorly, so the value really lives in the TOAST table.
LONG_TEXT = "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(400))


async def test_every_type__and_unchanged_large_text(pipeline: Pipeline) -> None:
    pipeline.execute(
        (
            """
            INSERT INTO salesforce.account (
                external_id__c, name, accountnumber, website, phone, industry,
                type, billingstreet, billingcity, billingpostalcode,
                billinglatitude, billinglongitude, annualrevenue,
                numberofemployees, description, active__c, founded__c,
                regions__c, rating__c, discount__c, last_visit__c)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    %s, %s, %s, %s, %s, %s)
            """,
            (
                "T1",
                "Ünïcode & «quotes» 'n\" stuff",
                "AC-1",
                "https://example.com/a?b=c",
                "+1 555 0100",
                "Energy",
                "Partner",
                "1 Main St\nFloor 2",
                "Springfield",
                "12345",
                Decimal("47.6062095"),
                Decimal("-122.3320708"),
                Decimal("12345678901234.56"),
                12000,
                LONG_TEXT,
                False,
                date(1901, 2, 28),
                "North;East",
                Decimal("4.75"),
                Decimal("12.5"),
                datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            ),
        ),
        "INSERT INTO salesforce.contact (external_id__c, lastname, birthdate)"
        " VALUES ('T1C', 'Nulls', '2000-02-29')",
        (
            "INSERT INTO salesforce.workorder (external_id__c, subject, startdate,"
            " duration__c, discount) VALUES ('T1W', 'Types', %s, %s, %s)",
            (datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), Decimal("0.1"), None),
        ),
    )
    await pipeline.settled(3)
    sfid = pipeline.rows("salesforce.account")[0]["sfid"]
    record = pipeline.record("Account", sfid)

    assert record["Name"] == "Ünïcode & «quotes» 'n\" stuff"
    assert record["AccountNumber"] == "AC-1"
    assert record["Website"] == "https://example.com/a?b=c"
    assert (record["Phone"], record["Industry"], record["Type"]) == (
        "+1 555 0100",
        "Energy",
        "Partner",
    )
    assert record["BillingStreet"] == "1 Main St\nFloor 2"
    assert (record["BillingCity"], record["BillingPostalCode"]) == (
        "Springfield",
        "12345",
    )
    assert record["BillingState"] is None
    assert dec(record["BillingLatitude"]) == Decimal("47.6062095")
    assert dec(record["BillingLongitude"]) == Decimal("-122.3320708")
    assert dec(record["AnnualRevenue"]) == Decimal("12345678901234.56")
    assert record["NumberOfEmployees"] == 12000
    assert record["Description"] == LONG_TEXT
    assert record["Active__c"] is False
    assert record["Founded__c"] == "1901-02-28"
    assert set(record["Regions__c"].split(";")) == {"North", "East"}
    assert dec(record["Rating__c"]) == Decimal("4.75")
    assert dec(record["Discount__c"]) == Decimal("12.5")
    assert record["Last_Visit__c"] == "2026-01-02T03:04:05.678+0000"
    [contact] = pipeline.query("SELECT Birthdate, FirstName, Email FROM Contact")
    assert (contact["Birthdate"], contact["FirstName"], contact["Email"]) == (
        "2000-02-29",
        None,
        None,
    )
    [order] = pipeline.query("SELECT StartDate, Duration__c, Discount FROM WorkOrder")
    assert order["StartDate"] == "2026-03-04T05:06:07.000+0000"
    assert dec(order["Duration__c"]) == Decimal("0.1")
    assert order["Discount"] is None

    # The description is TOASTed and unchanged: the WAL does not carry it,
    # yet the org keeps it (the row is re-read whole).
    pipeline.execute(
        "UPDATE salesforce.account SET name = 'Renamed', annualrevenue = NULL"
    )
    await pipeline.eventually(
        lambda: pipeline.record("Account", sfid)["Name"] == "Renamed"
    )
    record = pipeline.record("Account", sfid)
    assert record["Description"] == LONG_TEXT
    assert record["AnnualRevenue"] is None
    assert record["Last_Visit__c"] == "2026-01-02T03:04:05.678+0000"
