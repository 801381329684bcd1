"""The REST surface through the real, unmodified simple-salesforce client."""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

from tests.support.local_org import LocalOrg


def error_of(raised: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    [error] = raised.value.content
    return dict(error)


def test_rest__create_read_update_delete(org: LocalOrg) -> None:
    sf = org.salesforce()
    created = sf.Account.create(
        {"Name": "Acme", "BillingCity": "Oslo", "AnnualRevenue": 12.5}
    )
    assert created["success"] and len(created["id"]) == 18

    record = sf.Account.get(created["id"][:15])
    assert record["Id"] == created["id"]
    assert record["attributes"]["type"] == "Account"
    assert record["BillingAddress"]["city"] == "Oslo"
    assert record["Active__c"] is True  # the schema's default
    assert record["CreatedDate"].endswith("+0000")

    assert sf.Account.update(created["id"], {"Name": "Acme 2"}) == 204
    assert sf.Account.get(created["id"])["Name"] == "Acme 2"
    assert sf.Account.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(created["id"])


def test_rest__upsert_by_external_id_creates_then_updates(org: LocalOrg) -> None:
    sf = org.salesforce()
    assert sf.Account.upsert("External_Id__c/A-1", {"Name": "First"}) == 201
    assert sf.Account.upsert("External_Id__c/a-1", {"Name": "Second"}) == 200
    record = sf.Account.get_by_custom_id("External_Id__c", "A-1")
    assert record["Name"] == "Second"
    assert org.stats()["records"]["Account"] == 1


def test_rest__reference_by_parent_external_id(org: LocalOrg) -> None:
    sf = org.salesforce()
    parent = sf.Account.create({"Name": "Parent", "External_Id__c": "P-1"})["id"]
    child = sf.Contact.create(
        {"LastName": "Kid", "Account": {"External_Id__c": "P-1"}}
    )["id"]
    assert sf.Contact.get(child)["AccountId"] == parent


@pytest.mark.parametrize(
    ("values", "code", "fields"),
    [
        ({"AccountNumber": "x"}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ({"Name": "n" * 256}, "STRING_TOO_LONG", ["Name"]),
        (
            {"Name": "n", "Industry": "Mining"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            ["Industry"],
        ),
        (
            {"Name": "n", "NumberOfEmployees": -1},
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            ["NumberOfEmployees"],
        ),
        (
            {"Name": "n", "CreatedDate": "2020-01-01T00:00:00Z"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["CreatedDate"],
        ),
        ({"Name": "n", "Nope__c": 1}, "INVALID_FIELD", []),
        ({"Name": "n", "Founded__c": "yesterday"}, "JSON_PARSER_ERROR", []),
    ],
)
def test_rest__validation_errors_use_salesforce_codes(
    org: LocalOrg, values: dict[str, Any], code: str, fields: list[str]
) -> None:
    sf = org.salesforce()
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.create(values)
    error = error_of(raised)
    assert error["errorCode"] == code
    assert error["fields"] == fields
    assert error["message"]


def test_rest__unique_external_id_refuses_a_duplicate(org: LocalOrg) -> None:
    sf = org.salesforce()
    first = sf.Account.create({"Name": "a", "External_Id__c": "DUP"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.create({"Name": "b", "External_Id__c": "dup"})
    error = error_of(raised)
    assert error["errorCode"] == "DUPLICATE_VALUE"
    assert first in error["message"]


def test_rest__describe_and_global_describe(org: LocalOrg) -> None:
    sf = org.salesforce()
    names = {s["name"] for s in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "WorkOrder", "Site_Photo__c"} <= names

    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["External_Id__c"]["externalId"] is True
    assert fields["MailingCity"]["compoundFieldName"] == "MailingAddress"
    assert fields["LastName"]["nillable"] is False
    assert fields["SystemModstamp"]["createable"] is False
    assert fields["Id"]["type"] == "id"


def records(kind: str, *values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"attributes": {"type": kind}, **v} for v in values]


def test_rest__collections_report_per_record_results(org: LocalOrg) -> None:
    sf = org.salesforce()
    body = {"allOrNone": False, "records": records("Account", {"Name": "ok"}, {})}
    good, bad = sf.restful("composite/sobjects", method="POST", json=body)
    assert good["success"] and good["id"]
    assert not bad["success"]
    assert bad["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"

    update = records("Account", {"Id": good["id"], "Name": "renamed"})
    [updated] = sf.restful(
        "composite/sobjects", method="PATCH", json={"records": update}
    )
    assert updated == {"id": good["id"], "success": True, "errors": []}

    upsert = records("Account", {"External_Id__c": "U1", "Name": "u"})
    [upserted] = sf.restful(
        "composite/sobjects/Account/External_Id__c",
        method="PATCH",
        json={"records": upsert},
    )
    assert upserted["created"] is True

    [deleted] = sf.restful(
        "composite/sobjects", method="DELETE", params={"ids": good["id"]}
    )
    assert deleted["success"]
    assert org.stats()["records"]["Account"] == 1


def test_rest__collections_all_or_none_rolls_everything_back(org: LocalOrg) -> None:
    sf = org.salesforce()
    before = org.stats()["latest_replay_id"]
    body = {"allOrNone": True, "records": records("Account", {"Name": "a"}, {})}
    first, second = sf.restful("composite/sobjects", method="POST", json=body)
    assert first["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert second["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert org.stats()["records"]["Account"] == 0
    assert org.stats()["latest_replay_id"] == before


def test_rest__collections_refuse_more_than_200_records(org: LocalOrg) -> None:
    sf = org.salesforce()
    body = {"records": records("Account", *({"Name": str(i)} for i in range(201)))}
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful("composite/sobjects", method="POST", json=body)
    assert error_of(raised)["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_rest__limit_info_header_and_limits_resource(org: LocalOrg) -> None:
    sf = org.salesforce()
    sf.Account.create({"Name": "counted"})
    limits = sf.limits()
    assert sf.api_usage["api-usage"].used == 2
    assert sf.api_usage["api-usage"].total == limits["DailyApiRequests"]["Max"]
    assert (
        limits["DailyApiRequests"]["Remaining"] == limits["DailyApiRequests"]["Max"] - 2
    )
