"""``POST /_emulator/reset`` forgets records, events and usage; logins stay valid."""

from __future__ import annotations

from tests.support.local_org import LocalOrg


def test_reset__forgets_records_events_and_usage(local_org: LocalOrg) -> None:
    sf = local_org.salesforce()
    record_id = sf.Account.create({"Name": "Before reset"})["id"]
    before = local_org.stats()
    assert before["records"]["Account"] >= 1
    assert before["total"] >= 1

    local_org.reset()

    after = local_org.stats()
    assert after["records"]["Account"] == 0
    assert sum(after["records"].values()) == 0
    assert after["total"] == 0 and after["api_usage"] == 0
    assert after["latest_replay_id"] >= before["latest_replay_id"], (
        "replay ids never restart, so an id stored before a reset stays unique"
    )
    found = sf.query_all(f"SELECT Id FROM Account WHERE Id = '{record_id}'")
    assert found["totalSize"] == 0, "the same login still works after the reset"
