"""sObject collections take the record id as ``Id`` or ``id`` (names ignore case)."""

from __future__ import annotations

import json

import pytest

from tests.support.local_org import LocalOrg


@pytest.mark.parametrize("id_key", ["Id", "id", "ID"])
def test_collection_update__id_key_in_any_case(org: LocalOrg, id_key: str) -> None:
    sf = org.salesforce()
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        data=json.dumps(
            {"records": [{"attributes": {"type": "Account"}, "Name": "A"}]}
        ),
    )
    record_id = created[0]["id"]

    answer = sf.restful(
        "composite/sobjects",
        method="PATCH",
        data=json.dumps(
            {
                "records": [
                    {
                        "attributes": {"type": "Account"},
                        id_key: record_id,
                        "NumberOfEmployees": 7,
                    }
                ]
            }
        ),
    )

    assert answer[0]["success"] is True, answer
    assert sf.Account.get(record_id)["NumberOfEmployees"] == 7
