"""The admin API: seeding, faults, limits, stats, raw events, restarts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from tests.support.local_org import LocalOrg


def journal(org: LocalOrg) -> list[dict[str, Any]]:
    """Every retained event, as the running emulator's journal wrote them."""
    org.admin("save")
    lines = (org.state_dir / "journal.jsonl").read_text().splitlines()[1:]
    return [json.loads(line) for line in lines]


def test_admin__seeding_many_records_without_events(org: LocalOrg) -> None:
    records = [
        {"Name": f"seed {i}", "External_Id__c": f"S{i}", "NumberOfEmployees": i}
        for i in range(5000)
    ]
    answer = org.admin(
        "records", {"sobject": "Account", "records": records, "events": False}
    )
    assert answer["count"] == 5000 and len(set(answer["ids"])) == 5000
    assert org.stats()["records"]["Account"] == 5000
    assert journal(org) == []

    found = org.salesforce().Account.get_by_custom_id("External_Id__c", "S4999")
    assert found["NumberOfEmployees"] == 4999


def test_admin__seeding_is_all_or_nothing_and_names_the_bad_record(
    org: LocalOrg,
) -> None:
    with pytest.raises(AssertionError, match="record 1: REQUIRED_FIELD_MISSING"):
        org.admin("records", {"sobject": "Account", "records": [{"Name": "a"}, {}]})
    assert org.stats()["records"]["Account"] == 0


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ("503", SalesforceGeneralError, "SERVER_UNAVAILABLE"),
        ("REQUEST_LIMIT_EXCEEDED", SalesforceRefusedRequest, "REQUEST_LIMIT_EXCEEDED"),
        ("UNABLE_TO_LOCK_ROW", SalesforceMalformedRequest, "UNABLE_TO_LOCK_ROW"),
    ],
)
def test_admin__faults_fail_the_next_calls_of_a_kind(
    org: LocalOrg, fault: str, error: type[Exception], code: str
) -> None:
    sf = org.salesforce()
    org.admin("faults", {"kind": "rest", "fault": fault, "count": 2})
    for _ in range(2):
        with pytest.raises(error) as raised:
            sf.Account.create({"Name": "refused"})
        assert raised.value.content[0]["errorCode"] == code  # type: ignore[attr-defined]
    sf.Account.create({"Name": "accepted"})
    assert org.stats()["records"]["Account"] == 1


def test_admin__daily_limit_refuses_calls_once_spent(org: LocalOrg) -> None:
    sf = org.salesforce()
    org.admin("limits", {"daily": 3, "used": 0})
    for _ in range(3):
        sf.Account.create({"Name": "within"})
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.Account.create({"Name": "over"})
    assert raised.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert org.stats()["api_usage"] == 3


def test_admin__stats_count_calls_by_kind(org: LocalOrg) -> None:
    sf = org.salesforce()
    sf.Account.create({"Name": "one"})
    sf.restful(
        "composite/sobjects",
        method="POST",
        json={"records": [{"attributes": {"type": "Account"}, "Name": "two"}]},
    )
    calls = org.stats()["calls"]
    assert calls["rest"] == 1
    assert calls["collections"] == 1
    assert calls["bulk"] == 0


def test_admin__raw_events_reach_the_journal(org: LocalOrg) -> None:
    header = {
        "entityName": "Account",
        "recordIds": ["001000000000001AAA"],
        "changeType": "GAP_UPDATE",
        "commitTimestamp": 1_700_000_000_000,
    }
    [first] = org.admin("events", {"payload": {"ChangeEventHeader": header}})[
        "replayIds"
    ]
    overflow = {**header, "changeType": "GAP_OVERFLOW", "recordIds": []}
    [second] = org.admin("events", {"payload": {"ChangeEventHeader": overflow}})[
        "replayIds"
    ]
    assert second > first
    kinds = [e["payload"]["ChangeEventHeader"]["changeType"] for e in journal(org)]
    assert kinds == ["GAP_UPDATE", "GAP_OVERFLOW"]

    with pytest.raises(AssertionError, match="entityName"):
        org.admin("events", {"payload": {"Name": "no header"}})


def test_admin__clock_moves_only_forward(org: LocalOrg) -> None:
    now = org.admin("clock", {"seconds": 0})["now"]
    later = org.admin("clock", {"seconds": 60})["now"]
    assert later > now
    with pytest.raises(AssertionError, match="forward"):
        org.admin("clock", {"seconds": -1})


def test_admin__forget_clients_answers_a_count(org: LocalOrg) -> None:
    assert org.admin("clients/forget")["forgotten"] >= 0


def test_admin__restart_keeps_records_and_events(org: LocalOrg) -> None:
    sf = org.salesforce()
    record_id = sf.Account.create({"Name": "durable", "External_Id__c": "D1"})["id"]
    events_before = journal(org)

    org.stop()
    org.start()

    sf = org.salesforce()
    assert sf.Account.get(record_id)["Name"] == "durable"
    assert journal(org) == events_before
    # Ids keep counting: a new record never reuses an old id.
    assert sf.Account.create({"Name": "next"})["id"] != record_id
    assert sf.Account.upsert("External_Id__c/D1", {"Name": "still unique"}) == 200
