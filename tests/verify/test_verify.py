"""``forcelink verify``: both sides compared record by record, and repaired.

The org is filled without change events (as if forcelink had not been
listening), copied with ``forcelink backfill``, then each side is changed
behind forcelink's back: a row updated in a session carrying forcelink's
replication origin, a record created silently in the org, a record deleted
in the org, a row the application wrote that never reached the org.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from forcelink.connector.postgres.setup import apply_session_origin
from tests.sf_to_pg.harness import load_examples, row, rows
from tests.sf_to_pg.test_crash import write_config
from tests.support.local_org import LocalOrg
from tests.verify.cli import forcelink, objects, verify_json

RECORDS = 40


def account(i: int) -> dict[str, Any]:
    """An Account using every kind of mapped value."""
    return {
        "Name": f"Site {i}",
        "External_Id__c": f"V-{i}",
        "AnnualRevenue": "1500.5",
        "NumberOfEmployees": i,
        "Rating__c": "0.1",
        "Discount__c": "12.5",
        "Active__c": i % 2 == 0,
        "Founded__c": "1999-12-31",
        "Last_Visit__c": "2026-01-02T03:04:05.120Z",
        "Regions__c": "North;East",
        "BillingCity": "Lyon",
        "Description": f"visited {i}",
    }


def seed(
    org: LocalOrg, records: list[dict[str, Any]], events: bool = False
) -> list[str]:
    answer = org.admin(
        "records", {"sobject": "Account", "events": events, "records": records}
    )
    return list(answer["ids"])


def in_origin_session(database_url: str, statement: str, *args: Any) -> None:
    """A write forcelink's capture would skip and the pending trigger ignores."""
    with psycopg.connect(database_url) as conn:
        apply_session_origin(conn, "forcelink")
        conn.execute(statement, args)


def test_verify__clean_then_each_kind_of_difference_then_repaired(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    config = write_config(tmp_path, fresh_database, org)
    ids = seed(org, [account(i) for i in range(RECORDS)])
    copied = forcelink(config, "backfill", "--org", "local", "--no-progress")
    assert copied.returncode == 0, copied.stderr

    status, clean = verify_json(config)
    assert status == 0, clean
    found = objects(clean)
    assert found["Account"]["salesforce_count"] == RECORDS
    assert found["Account"]["postgres_count"] == RECORDS
    assert all(o["clean"] for o in found.values())

    # Behind forcelink's back, on both sides.
    changed, deleted = ids[0], ids[1]
    in_origin_session(
        fresh_database,
        "UPDATE salesforce.account SET annualrevenue = 99.99, regions__c = 'West'"
        " WHERE sfid = %s",
        changed,
    )
    (silent,) = seed(org, [account(100)])
    org.salesforce(client_tag="office").Account.delete(deleted)
    with psycopg.connect(fresh_database) as conn:
        conn.execute(
            "INSERT INTO salesforce.account (external_id__c, name, annualrevenue)"
            " VALUES ('APP-1', 'Written before the slot', 10.10)"
        )

    status, report = verify_json(config)
    assert status == 1
    accounts = objects(report)["Account"]
    assert not accounts["clean"]
    assert accounts["missing_in_postgres"] == 1
    assert accounts["missing_in_salesforce"] == 2
    assert accounts["differing_records"] == 1
    assert accounts["differing_fields"] == 2
    by_kind = {(d["kind"], d["sfid"], d["field"]): d for d in accounts["differences"]}
    revenue = by_kind[("field", changed, "AnnualRevenue")]
    assert (revenue["salesforce"], revenue["postgres"]) == ("1500.5", "99.99")
    regions = by_kind[("field", changed, "Regions__c")]
    assert (regions["salesforce"], regions["postgres"]) == ("East;North", "West")
    assert ("missing_in_postgres", silent, None) in by_kind
    assert ("missing_in_salesforce", deleted, None) in by_kind
    assert ("missing_in_salesforce", None, None) in by_kind

    text = forcelink(config, "verify", "--org", "local", "--object", "Account")
    assert text.returncode == 1
    assert (
        f"Account {changed}" in text.stdout and "AnnualRevenue differs" in text.stdout
    )

    repaired = forcelink(config, "verify", "--org", "local", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "DIFFERENT" not in repaired.stdout

    fixed = row(fresh_database, "salesforce.account", changed)
    assert fixed is not None and fixed["annualrevenue"] == Decimal("1500.50")
    assert fixed["regions__c"] in ("North;East", "East;North")
    came = row(fresh_database, "salesforce.account", silent)
    assert came is not None and came["name"] == "Site 100"
    gone = row(fresh_database, "salesforce.account", deleted)
    assert gone is not None and gone["isdeleted"] is True
    (pushed,) = rows(
        fresh_database,
        "SELECT sfid, _sync_state FROM salesforce.account"
        " WHERE external_id__c = 'APP-1'",
    )
    assert pushed["sfid"] and pushed["_sync_state"] == "synced"
    in_org = org.salesforce().Account.get(pushed["sfid"])
    assert in_org["Name"] == "Written before the slot"
