"""Backfill against the local org and a real database, through our own code.

Each test seeds the org through its admin API, runs the backfill (the
library call or the ``forcelink backfill`` command) and reads both sides.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from forcelink.connector.postgres.setup import apply_session_origin
from forcelink.connector.salesforce.backfill import (
    BackfillStopped,
    Options,
    backfill,
    soql_datetime,
)
from forcelink.errors import TerminalError
from forcelink.mapping import Mapping, apply, load_mappings
from tests.backfill.conftest import Setup

QUIET = Options(progress=False)

ACCOUNT_FULL = {
    "External_Id__c": "ACC-1",
    "Name": '  Full Account, with "quotes"\nand a newline  ',
    "AccountNumber": "A-001",
    "Website": "https://example.com",
    "Phone": "+33 1 23 45 67 89",
    "Industry": "Energy",
    "Type": "Customer",
    "BillingStreet": "1 rue de la Paix\nBâtiment B",
    "BillingCity": "Paris",
    "BillingState": "IDF",
    "BillingPostalCode": "75002",
    "BillingCountry": "France",
    "BillingLatitude": 48.8686,
    "BillingLongitude": 2.3314,
    "AnnualRevenue": 1234567.89,
    "NumberOfEmployees": 250,
    "Description": "  needs trimming \t",
    "Active__c": False,
    "Founded__c": "1999-12-31",
    "Regions__c": "North;East",
    "Rating__c": 4.25,
    "Discount__c": 12.5,
    "Last_Visit__c": "2025-06-30T23:59:58.123Z",
}
ACCOUNT_NULLS = {"External_Id__c": "ACC-2", "Name": "Mostly empty"}


def _rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def _seed(setup: Setup, sobject: str, records: list[dict[str, Any]]) -> list[str]:
    answer = setup.org.admin(
        "records", {"sobject": sobject, "records": records, "events": False}
    )
    return list(answer["ids"])


def _seed_example_org(setup: Setup) -> None:
    accounts = _seed(setup, "Account", [ACCOUNT_FULL, ACCOUNT_NULLS, {"Name": "Gone"}])
    contacts = _seed(
        setup,
        "Contact",
        [
            {"LastName": "Martin", "FirstName": "Léa", "AccountId": accounts[0],
             "External_Id__c": "CON-1", "Email": "lea@example.com",
             "Birthdate": "1990-02-28", "MailingStreet": "2 quai\nEst",
             "MailingLatitude": -33.5, "MailingLongitude": 151.25},
            {"LastName": "Orphan", "AccountId": accounts[2]},
            {"LastName": "Alone"},
        ],
    )  # fmt: skip
    orders = _seed(
        setup,
        "WorkOrder",
        [
            {"Subject": "Fix", "External_Id__c": "WO-1", "AccountId": accounts[0],
             "ContactId": contacts[0], "StartDate": "2025-01-02T08:00:00.000Z",
             "Duration__c": 1.5, "Discount": 5, "Street": "3 av", "City": "Lyon",
             "Latitude": 45.75, "Status": "In Progress", "Priority": "High"},
            {"Subject": "Nothing set"},
        ],
    )  # fmt: skip
    _seed(
        setup,
        "Site_Photo__c",
        [
            {"Image_Id__c": "IMG-1", "Name": "front", "Work_Order__c": orders[0],
             "Tags__c": "roof;north", "Size_Bytes__c": 123456, "Width__c": 640,
             "Height__c": 480, "Captured_At__c": "2025-01-02T09:10:11.000Z"},
            {"Image_Id__c": "IMG-2", "Name": "no order"},
        ],
    )  # fmt: skip
    setup.org.salesforce().restful(f"sobjects/Account/{accounts[2]}", method="DELETE")


def _org_records(setup: Setup, mapping: Mapping) -> dict[str, dict[str, Any]]:
    """Every record through REST queryAll (JSON form, not the Bulk CSV)."""
    client = setup.org.salesforce()
    answer = client.query_all(mapping.soql(), include_deleted=True)
    return {r["Id"]: mapping.to_columns(r) for r in answer["records"]}


def test_backfill__example_mappings_match_the_org_field_by_field(setup: Setup) -> None:
    _seed_example_org(setup)

    results = backfill(setup.database_url, setup.api(), setup.mappings, QUIET)

    assert {r.object: r.rows for r in results} == {
        "Account": 3, "Contact": 3, "WorkOrder": 2, "Site_Photo__c": 2,
    }  # fmt: skip
    for mapping in setup.mappings:
        expected = _org_records(setup, mapping)
        rows = _rows(setup.database_url, f"SELECT * FROM {mapping.table}")
        assert {r["sfid"] for r in rows} == set(expected), mapping.object
        for row in rows:
            want = expected[row["sfid"]]
            got = {column: row[column] for column in want}
            assert got == want, (mapping.object, row["sfid"])
            assert row["_sync_state"] == "synced"
            assert row["_sync_at"] is not None


def test_backfill__values_of_every_type_and_nulls(setup: Setup) -> None:
    """Spot checks that do not go through to_columns at all."""
    _seed_example_org(setup)

    backfill(setup.database_url, setup.api(), setup.mappings, QUIET)

    full, empty = _rows(
        setup.database_url,
        "SELECT * FROM salesforce.account WHERE external_id__c IN ('ACC-1', 'ACC-2')"
        " ORDER BY external_id__c",
    )
    assert full["name"] == ACCOUNT_FULL["Name"]
    assert full["description"] == "needs trimming"
    assert full["annualrevenue"] == Decimal("1234567.89")
    assert full["billinglatitude"] == Decimal("48.8686")
    assert full["billingstreet"] == "1 rue de la Paix\nBâtiment B"
    assert full["active__c"] is False
    assert full["founded__c"].isoformat() == "1999-12-31"
    assert full["last_visit__c"].isoformat() == "2025-06-30T23:59:58.123000+00:00"
    assert full["regions__c"] == "North;East"
    assert full["numberofemployees"] == 250
    assert empty["billingcity"] is None and empty["annualrevenue"] is None
    assert empty["active__c"] is True  # the org's default value
    deleted = _rows(
        setup.database_url,
        "SELECT isdeleted FROM salesforce.account WHERE name = 'Gone'",
    )
    assert deleted == [{"isdeleted": True}]
    contact = _rows(
        setup.database_url,
        "SELECT accountid, account__r__external_id__c AS parent"
        " FROM salesforce.contact WHERE lastname = 'Martin'",
    )[0]
    assert contact["parent"] == "ACC-1" and contact["accountid"].startswith("001")


def test_backfill__newer_version_in_postgres_wins(setup: Setup) -> None:
    ids = _seed(
        setup,
        "Account",
        [{"Name": "streamed"}, {"Name": "pending"}, {"Name": "stale"}],
    )
    mappings = [setup.mapping("Account")]
    backfill(setup.database_url, setup.api(), mappings, QUIET)
    with psycopg.connect(setup.database_url) as streaming:
        apply_session_origin(streaming)  # as the Salesforce-to-Postgres applier
        streaming.execute(
            "UPDATE salesforce.account SET name = 'newer in pg',"
            " systemmodstamp = systemmodstamp + interval '1 hour' WHERE sfid = %s",
            (ids[0],),
        )
        streaming.execute(
            "UPDATE salesforce.account SET name = 'older in pg',"
            " systemmodstamp = systemmodstamp - interval '1 hour' WHERE sfid = %s",
            (ids[2],),
        )
    with psycopg.connect(setup.database_url) as application:
        application.execute(
            "UPDATE salesforce.account SET name = 'local edit',"
            " _sync_state = 'pending' WHERE sfid = %s",
            (ids[1],),
        )

    backfill(
        setup.database_url, setup.api(), mappings, Options(restart=True, progress=False)
    )

    rows = _rows(
        setup.database_url, "SELECT sfid, name, _sync_state FROM salesforce.account"
    )
    by_id = {r["sfid"]: (r["name"], r["_sync_state"]) for r in rows}
    assert by_id == {
        ids[0]: ("newer in pg", "synced"),
        ids[1]: ("local edit", "pending"),
        ids[2]: ("stale", "synced"),
    }


def _run_cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "forcelink.cli", "-c", str(setup.config_file),
        "backfill", "--org", "local", "--no-progress", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _progress(setup: Setup, obj: str = "Account") -> dict[str, Any]:
    rows = _rows(
        setup.database_url,
        "SELECT * FROM forcelink.backfill_progress WHERE object = %s",
        obj,
    )
    return rows[0]


def test_backfill__stops_before_the_api_limit_then_resumes(setup: Setup) -> None:
    ids = _seed(setup, "Account", [{"Name": f"A{i}"} for i in range(1000)])
    setup.org.admin("limits", {"daily": 40, "used": 0})

    stopped = _run_cli(setup, "--object", "Account", "--page-size", "20",
                       "--api-reserve", "5")  # fmt: skip

    assert stopped.returncode == 3, stopped.stderr
    assert "backfill stopped" in stopped.stderr
    assert "5 call(s) left today, 5 kept in reserve" in stopped.stderr
    assert "rerun" in stopped.stderr
    position = _progress(setup)
    assert position["state"] == "running"
    assert 0 < position["rows"] < 1000
    assert setup.org.stats()["api_usage"] <= 35

    setup.org.admin("limits", {"daily": 100_000, "used": 0})
    resumed = _run_cli(setup, "--object", "Account", "--page-size", "20")

    assert resumed.returncode == 0, resumed.stderr
    assert "Account: done, 1000 rows" in resumed.stdout
    assert _progress(setup)["job_id"] == position["job_id"]
    rows = _rows(setup.database_url, "SELECT sfid FROM salesforce.account")
    assert sorted(r["sfid"] for r in rows) == sorted(ids)


def test_backfill__library_call_raises_backfill_stopped(setup: Setup) -> None:
    _seed(setup, "Account", [{"Name": f"A{i}"} for i in range(200)])
    setup.org.admin("limits", {"daily": 100, "used": 95})

    reserve = "4 call\\(s\\) left today, 10 kept in reserve"  # 10% of 100
    with pytest.raises(BackfillStopped, match=reserve):
        backfill(
            setup.database_url, setup.api(), [setup.mapping("Account")],
            Options(page_records=50, progress=False),
        )  # fmt: skip


def test_backfill__a_gone_job_starts_again_from_the_last_stamp(setup: Setup) -> None:
    """Three seeds 10 s apart; the position says page one (150 rows, up to
    the second seed's stamp) was merged, and the job has been deleted."""
    for chunk in range(3):
        _seed(setup, "Account", [{"Name": f"C{chunk}-{i}"} for i in range(100)])
        setup.org.admin("clock", {"seconds": 10})
    mappings = [setup.mapping("Account")]
    api = setup.api()
    backfill(
        setup.database_url, api, mappings, Options(page_records=150, progress=False)
    )
    first = _progress(setup)
    second_stamp = _rows(
        setup.database_url,
        "SELECT systemmodstamp FROM salesforce.account WHERE name = 'C1-0'",
    )[0]["systemmodstamp"]
    cursor = {"locator": "MTUw", "modstamp": soql_datetime(second_stamp), "since": None}
    with psycopg.connect(setup.database_url) as conn:
        conn.execute(
            "UPDATE forcelink.backfill_progress SET state = 'running', rows = 150,"
            " cursor = %s", (json.dumps(cursor),),
        )  # fmt: skip
    # simple-salesforce parses the 204 answer's empty body as JSON and fails.
    with contextlib.suppress(requests.JSONDecodeError):
        api.bulk("Account").delete_job(first["job_id"], True)

    results = backfill(setup.database_url, api, mappings, QUIET)

    after = _progress(setup)
    assert after["job_id"] != first["job_id"]
    assert after["state"] == "done"
    assert results[0].total == 150 + 200  # the second and third seeds again
    count = _rows(setup.database_url, "SELECT count(*) AS n FROM salesforce.account")
    assert count[0]["n"] == 300


def test_backfill__a_record_postgres_refuses_is_left_out_alone(
    setup: Setup, tmp_path: Any
) -> None:
    mapping_file = tmp_path / "narrow.yaml"
    mapping_file.write_text(
        "org: local\nobject: Account\ntable: narrow\nmode: read_only\n"
        "fields:\n  Name: name\n"
        "  NumberOfEmployees: {column: employees, type: integer}\n"
    )
    mappings = load_mappings([mapping_file])
    apply(setup.database_url, mappings)
    ids = _seed(
        setup,
        "Account",
        [{"Name": "fits", "NumberOfEmployees": 12},
         {"Name": "too big", "NumberOfEmployees": 3_000_000_000},
         {"Name": "fits too"}],
    )  # fmt: skip

    results = backfill(setup.database_url, setup.api(), mappings, QUIET)

    rows = _rows(setup.database_url, "SELECT sfid, name FROM salesforce.narrow")
    assert sorted(r["sfid"] for r in rows) == sorted([ids[0], ids[2]])
    assert results[0].rejected == 1
    rejected = _progress(setup)["error"]["rejected"]
    assert [r["record"] for r in rejected] == [ids[1]]
    assert "out of range" in rejected[0]["error"]


def test_backfill__since_copies_only_records_stamped_from_then(setup: Setup) -> None:
    _seed(setup, "Account", [{"Name": f"old {i}"} for i in range(20)])
    setup.org.admin("clock", {"seconds": 60})
    recent = _seed(setup, "Account", [{"Name": f"new {i}"} for i in range(30)])
    stamp = setup.org.salesforce().query(
        f"SELECT SystemModstamp FROM Account WHERE Id = '{recent[0]}'"
    )["records"][0]["SystemModstamp"]
    since = datetime.fromisoformat(stamp.replace("+0000", "+00:00"))

    results = backfill(
        setup.database_url, setup.api(), [setup.mapping("Account")],
        Options(since=since, progress=False),
    )  # fmt: skip

    rows = _rows(setup.database_url, "SELECT sfid FROM salesforce.account")
    assert sorted(r["sfid"] for r in rows) == sorted(recent)
    assert results[0].total == 30


def test_backfill__position_stops_before_a_failed_page_then_resumes(
    setup: Setup,
) -> None:
    """Four pages merged two at a time; page 2 clashes with a row already in
    the table. The position must end after page 1 whatever pages 3 and 4
    did, and the rerun (clash removed) ends with an exact copy."""
    ids = _seed(
        setup,
        "Account",
        [{"Name": f"A{i}", "External_Id__c": f"E-{i:03d}"} for i in range(400)],
    )
    with psycopg.connect(setup.database_url) as conn:
        conn.execute(
            "INSERT INTO salesforce.account (external_id__c, name)"
            " VALUES ('E-150', 'made in Postgres')"
        )
    mappings = [setup.mapping("Account")]
    options = Options(page_records=100, progress=False, sessions=2)

    with pytest.raises(TerminalError, match="E-150"):
        backfill(setup.database_url, setup.api(), mappings, options)

    stopped = _progress(setup)
    assert (stopped["rows"], stopped["state"]) == (100, "running")
    with psycopg.connect(setup.database_url) as conn:
        conn.execute("DELETE FROM salesforce.account WHERE sfid IS NULL")
    backfill(setup.database_url, setup.api(), mappings, options)
    done = _progress(setup)
    assert (done["rows"], done["state"]) == (400, "done")
    assert done["job_id"] == stopped["job_id"]  # resumed, not started again
    rows = _rows(setup.database_url, "SELECT sfid FROM salesforce.account")
    assert sorted(r["sfid"] for r in rows) == sorted(ids)
