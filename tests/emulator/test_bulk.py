"""Bulk API 2.0 through unmodified simple-salesforce (``sf.bulk2``)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce.bulk2 import Operation
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceOperationError,
)

from forcelink.emulator import bulk, schema
from forcelink.emulator.org import CallContext, Org
from tests.support.local_org import LocalOrg

WAIT = 0.05  # simple-salesforce sleeps this long before each job poll


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def seed(org: LocalOrg, sobject: str, records: list[dict[str, Any]]) -> list[str]:
    answer = org.admin(
        "records", {"sobject": sobject, "records": records, "events": False}
    )
    ids: list[str] = answer["ids"]
    return ids


def test_query__20000_records_over_locator_pages(org: LocalOrg) -> None:
    seed(
        org,
        "Account",
        [
            {"Name": f"A{i:05d}", "NumberOfEmployees": i, "Active__c": i % 2 == 0}
            for i in range(20_000)
        ],
    )
    sf: Any = org.salesforce()
    query = (
        "SELECT Id, Name, NumberOfEmployees, Active__c, CreatedDate FROM Account "
        "WHERE Name != 'nobody' ORDER BY Name"
    )
    pages = list(sf.bulk2.Account.query(query, max_records=6000, wait=WAIT))

    assert len(pages) == 4
    found = [row for page in pages for row in rows(page)]
    assert len(found) == 20_000
    assert [r["Name"] for r in found] == [f"A{i:05d}" for i in range(20_000)]
    first = found[0]
    assert list(first) == [
        "Id",
        "Name",
        "NumberOfEmployees",
        "Active__c",
        "CreatedDate",
    ]
    assert (first["NumberOfEmployees"], first["Active__c"]) == ("0", "true")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["CreatedDate"])


def test_query__results_fixed_at_run_and_parent_columns(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    account = sf.Account.create({"Name": "Acme"})["id"]
    contact = sf.Contact.create({"LastName": "Ada", "AccountId": account})["id"]
    client = sf.bulk2.Contact._client
    job = client.create_job(
        Operation.query, "SELECT Id, LastName, Account.Name FROM Contact"
    )
    assert job["state"] == "UploadComplete"
    client.wait_for_job(job["id"], True, WAIT)

    sf.Contact.update(contact, {"LastName": "Changed"})
    result = client.get_query_results(job["id"], "", 10)
    assert result["locator"] == ""  # the string "null" on the last page
    assert rows(result["records"]) == [
        {"Id": contact, "LastName": "Ada", "Account.Name": "Acme"}
    ]
    assert client.get_job(job["id"], True)["numberRecordsProcessed"] == 1


def test_query__bad_soql_refused_at_creation(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        list(sf.bulk2.Account.query("SELECT Nope FROM Account", wait=WAIT))
    content: Any = caught.value.content
    assert content[0]["errorCode"] == "INVALID_FIELD"


def test_insert__bad_row_fails_alone(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    sf.Account.create({"Name": "Acme", "External_Id__c": "ACME-1"})
    records = [
        {
            "LastName": "Ada",
            "Email": "ada@example.com",
            "Account.External_Id__c": "ACME-1",
        },
        {"LastName": "", "Email": "nobody@example.com", "Account.External_Id__c": ""},
        {"LastName": "Bob", "Email": "", "Account.External_Id__c": ""},
    ]
    (result,) = sf.bulk2.Contact.insert(records=records, wait=WAIT)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 1)

    failed = rows(sf.bulk2.Contact.get_failed_records(result["job_id"]))
    assert len(failed) == 1
    assert failed[0]["sf__Error"] == (
        "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
    )
    assert failed[0]["Email"] == "nobody@example.com"

    done = rows(sf.bulk2.Contact.get_successful_records(result["job_id"]))
    assert [(r["LastName"], r["sf__Created"]) for r in done] == [
        ("Ada", "true"),
        ("Bob", "true"),
    ]
    stored = sf.query("SELECT LastName, Account.Name FROM Contact ORDER BY LastName")
    names = [
        (r["LastName"], (r["Account"] or {}).get("Name")) for r in stored["records"]
    ]
    assert names == [("Ada", "Acme"), ("Bob", None)]


def test_upsert__creates_updates_and_reports_the_bad_row(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    old = sf.Account.create({"Name": "Old", "External_Id__c": "E-1"})["id"]
    records = [
        {"External_Id__c": "E-1", "Name": "Renamed", "NumberOfEmployees": "5"},
        {"External_Id__c": "E-2", "Name": "New", "NumberOfEmployees": "7"},
        {"External_Id__c": "E-3", "Name": "Bad", "NumberOfEmployees": "-1"},
    ]
    (result,) = sf.bulk2.Account.upsert(
        records=records, external_id_field="External_Id__c", wait=WAIT
    )
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 1)

    done = rows(sf.bulk2.Account.get_successful_records(result["job_id"]))
    assert [(r["sf__Id"] == old, r["sf__Created"]) for r in done] == [
        (True, "false"),
        (False, "true"),
    ]
    (failed,) = rows(sf.bulk2.Account.get_failed_records(result["job_id"]))
    assert failed["sf__Error"].startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION:")
    assert failed["External_Id__c"] == "E-3"
    stored = sf.query("SELECT Name FROM Account ORDER BY Name")["records"]
    assert [r["Name"] for r in stored] == ["New", "Renamed"]


def test_update__na_nulls_a_field_and_empty_leaves_it(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    first, second = seed(
        org,
        "Contact",
        [
            {"LastName": "Ada", "Email": "ada@example.com", "Title": "Countess"},
            {"LastName": "Bob", "Email": "bob@example.com", "Title": "Builder"},
        ],
    )
    missing = first[:3] + "0" * 9 + "ZZZ"
    records = [
        {"Id": first, "Email": "#N/A", "Title": ""},
        {"Id": second, "Email": "", "Title": "Boss"},
        {"Id": missing, "Email": "", "Title": "Ghost"},
    ]
    (result,) = sf.bulk2.Contact.update(records=records, wait=WAIT)
    assert result["numberRecordsFailed"] == 1
    (failed,) = rows(sf.bulk2.Contact.get_failed_records(result["job_id"]))
    assert failed["sf__Error"].startswith("INVALID_CROSS_REFERENCE_KEY:")

    stored = sf.query("SELECT LastName, Email, Title FROM Contact ORDER BY LastName")
    assert [(r["Email"], r["Title"]) for r in stored["records"]] == [
        (None, "Countess"),
        ("bob@example.com", "Boss"),
    ]


def test_delete__and_unknown_column_fails_the_job(org: LocalOrg) -> None:
    sf: Any = org.salesforce()
    ids = seed(org, "Account", [{"Name": f"D{i}"} for i in range(3)])
    (result,) = sf.bulk2.Account.delete(records=[{"Id": i} for i in ids[:2]], wait=WAIT)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 0)
    remaining = sf.query_all("SELECT Id FROM Account")["records"]
    assert [r["Id"] for r in remaining] == ids[2:]
    deleted = sf.query_all(
        "SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True
    )
    assert deleted["totalSize"] == 2

    with pytest.raises(SalesforceOperationError) as caught:
        sf.bulk2.Account.insert(records=[{"Nope__c": "x"}], wait=WAIT)
    assert "Field name not found : Nope__c" in str(caught.value)


def test_ingest__one_change_transaction_per_chunk(tmp_path: Path) -> None:
    # In process, to read the org's journal: 450 rows make chunks of 200, 200
    # and 50, each one transaction whose events say they came through Bulk.
    org = Org(schema.load())
    ctx = CallContext(org.register_user("bulk@example.com"), "etl", "bulk", "61.0")
    upload = tmp_path / "upload.csv"
    lines = ["LastName,Email"] + [f"C{i},c{i}@example.com" for i in range(449)]
    upload.write_text("\n".join([*lines, ",bad@example.com"]) + "\n")

    async def run() -> bulk.IngestJob:
        jobs = bulk.Jobs(org)
        job = bulk.IngestJob("750000000000001AAA", "insert", "Contact", ctx, "now")
        job.upload, job.state = upload, "UploadComplete"
        await bulk.run_ingest(jobs, job)
        return job

    job = asyncio.run(run())
    assert (job.state, job.processed, job.failed) == ("JobComplete", 450, 1)
    headers = [e.payload["ChangeEventHeader"] for e in org.journal.after(-2)]
    assert len(headers) == 449
    keys = list(dict.fromkeys(h["transactionKey"] for h in headers))
    sizes = [sum(1 for h in headers if h["transactionKey"] == k) for k in keys]
    assert sizes == [200, 200, 49]
    assert {h["changeOrigin"] for h in headers} == {
        "com/salesforce/api/bulk/61.0;client=etl"
    }
