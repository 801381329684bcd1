"""Mapping.to_columns / to_salesforce on the record shapes Salesforce sends."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from forcelink.errors import RecordRejected
from forcelink.mapping import Mapping, load_mappings, types

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mappings() -> dict[str, Mapping]:
    return {m.object: m for m in load_mappings([ROOT / "mappings"])}


def test_change_event_with_nested_address_gives_flat_columns(
    mappings: dict[str, Mapping],
) -> None:
    event = {
        "ChangeEventHeader": {"entityName": "Account", "changeType": "UPDATE"},
        "Name": "Acme",
        "BillingAddress": {"Street": "1 Main St", "City": "Oslo", "Latitude": 59.91},
        "LastModifiedDate": "2026-01-02T03:04:05.000Z",
    }

    columns = mappings["Account"].to_columns(event)

    assert columns == {
        "name": "Acme",
        "billingstreet": "1 Main St",
        "billingcity": "Oslo",
        "billinglatitude": Decimal("59.91"),
        "lastmodifieddate": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }


def test_rest_record_with_lower_case_compound_and_nulls(
    mappings: dict[str, Mapping],
) -> None:
    record = {
        "attributes": {"type": "Account"},
        "Id": "001000000000001AAA",
        "IsDeleted": False,
        "SystemModstamp": "2026-01-02T03:04:05.000+0000",
        "BillingAddress": None,
        "AnnualRevenue": None,
        "Regions__c": "North;East",
    }

    columns = mappings["Account"].to_columns(record)

    assert columns["sfid"] == "001000000000001AAA"
    assert columns["isdeleted"] is False
    assert columns["billingcity"] is None and columns["billingstreet"] is None
    assert columns["annualrevenue"] is None
    assert columns["regions__c"] == "North;East"


def test_bulk_csv_row_converts_strings(mappings: dict[str, Mapping]) -> None:
    row = {
        "Id": "003000000000001AAA",
        "LastName": "Ødegård",
        "Birthdate": "",
        "AccountId": "001000000000001AAA",
        "Account.External_Id__c": "ACME-1",
    }

    columns = mappings["Contact"].to_columns(row, form="csv")

    assert columns == {
        "sfid": "003000000000001AAA",
        "lastname": "Ødegård",
        "birthdate": None,
        "accountid": "001000000000001AAA",
        "account__r__external_id__c": "ACME-1",
    }


def test_query_row_with_parent_relationship_fills_the_external_id_column(
    mappings: dict[str, Mapping],
) -> None:
    record = {"AccountId": "001000000000001AAA", "Account": {"External_Id__c": "A-9"}}

    columns = mappings["Contact"].to_columns(record)

    assert columns["account__r__external_id__c"] == "A-9"


def test_lookup_by_parent_external_id_wins_over_sfid(
    mappings: dict[str, Mapping],
) -> None:
    row = {"lastname": "Smith", "accountid": None, "account__r__external_id__c": "A-9"}

    as_json = mappings["Contact"].to_salesforce(row)
    as_csv = mappings["Contact"].to_salesforce(row, form="csv")

    assert as_json == {"LastName": "Smith", "Account": {"External_Id__c": "A-9"}}
    assert as_csv == {"LastName": "Smith", "Account.External_Id__c": "A-9"}


def test_lookup_by_sfid_when_no_parent_external_id(
    mappings: dict[str, Mapping],
) -> None:
    row = {"accountid": "001000000000001AAA", "account__r__external_id__c": None}

    assert mappings["Contact"].to_salesforce(row) == {"AccountId": "001000000000001AAA"}


def test_row_to_salesforce_skips_read_only_columns_and_keeps_exact_numbers(
    mappings: dict[str, Mapping],
) -> None:
    row = {
        "id": 7,
        "sfid": "001000000000001AAA",
        "_sync_state": "pending",
        "createddate": datetime(2026, 1, 1, tzinfo=UTC),
        "annualrevenue": Decimal("9999999999999999.99"),
        "last_visit__c": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "description": "  padded  ",
        "external_id__c": "A-1",
    }

    fields = mappings["Account"].to_salesforce(row)

    assert fields == {
        "AnnualRevenue": Decimal("9999999999999999.99"),
        "Last_Visit__c": "2026-01-02T03:04:05.678+0000",
        "Description": "padded",
        "External_Id__c": "A-1",
    }
    assert '"AnnualRevenue": 9999999999999999.99,' in types.dumps(fields)


def test_a_value_that_does_not_fit_is_rejected_naming_record_and_field(
    mappings: dict[str, Mapping],
) -> None:
    record = {"Id": "001000000000001AAA", "NumberOfEmployees": "many"}

    with pytest.raises(RecordRejected) as raised:
        mappings["Account"].to_columns(record)

    text = str(raised.value)
    assert "NumberOfEmployees" in text
    assert "record=001000000000001AAA" in text
    assert "org=local" in text


def test_soql_selects_every_read_field_and_parent_keys(
    mappings: dict[str, Mapping],
) -> None:
    query = mappings["Contact"].soql()

    assert query.startswith("SELECT Id, SystemModstamp, IsDeleted, External_Id__c,")
    assert "AccountId, Account.External_Id__c, MailingStreet" in query
    assert query.endswith(" FROM Contact")


def test_the_soql_of_every_example_parses_and_names_real_fields(
    mappings: dict[str, Mapping],
) -> None:
    from forcelink.emulator import soql

    for mapping in mappings.values():
        parsed = soql.parse(mapping.soql())
        assert parsed.sobject == mapping.object
