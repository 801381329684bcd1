"""JWT bearer login and token life, through forcelink's own login client."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jwt
import pytest
import requests
from simple_salesforce.exceptions import SalesforceExpiredSession

from forcelink.connector.salesforce.auth import (
    JWT_GRANT,
    LoginRefused,
    fetch_token,
    http_session,
)
from forcelink.errors import SourceUnavailable
from tests.support.local_org import LocalOrg


def test_auth__token_answer_has_salesforce_keys(org: LocalOrg) -> None:
    conn = org.connection()
    token = fetch_token(conn)
    assert token.access_token.startswith("00D")
    assert token.instance_url == org.instance_url

    session = http_session(conn)
    key = Path(conn.private_key_file).read_text()
    claims = {
        "iss": conn.client_id,
        "sub": conn.username,
        "aud": conn.login_url,
        "exp": int(time.time()) + 60,
    }
    answer = session.post(
        f"{conn.login_url}/services/oauth2/token",
        data={"grant_type": JWT_GRANT, "assertion": jwt.encode(claims, key, "RS256")},
    ).json()
    assert {"access_token", "instance_url", "id", "token_type", "scope"} <= set(answer)
    assert answer["token_type"] == "Bearer"


@pytest.mark.parametrize(
    ("change", "wording"),
    [
        ({"client_id": "3MVGunknown"}, "invalid_client_id: client identifier invalid"),
        (
            {"username": "nobody@example.com"},
            "invalid_grant: user hasn't approved this consumer",
        ),
        ({"login_url": "https://login.salesforce.com"}, None),
    ],
)
def test_auth__refused_logins_are_terminal_with_salesforce_words(
    org: LocalOrg, change: dict[str, str], wording: str | None
) -> None:
    conn = dataclasses.replace(org.connection(), **change)
    if wording is None:
        # A wrong audience, sent to the right server.
        conn = dataclasses.replace(conn, login_url=org.instance_url)
        key = Path(conn.private_key_file).read_text()
        claims = {
            "iss": conn.client_id,
            "sub": conn.username,
            "aud": "https://x",
            "exp": int(time.time()) + 60,
        }
        answer = http_session(conn).post(
            f"{conn.login_url}/services/oauth2/token",
            data={
                "grant_type": JWT_GRANT,
                "assertion": jwt.encode(claims, key, "RS256"),
            },
        )
        assert answer.status_code == 400
        assert answer.json() == {
            "error": "invalid_grant",
            "error_description": "audience is invalid",
        }
        return
    with pytest.raises(LoginRefused) as raised:
        fetch_token(conn)
    assert wording in str(raised.value)


def test_auth__expired_assertion_and_foreign_key_are_refused(
    org: LocalOrg, tmp_path: Path
) -> None:
    conn = org.connection()
    key = Path(conn.private_key_file).read_text()
    claims = {
        "iss": conn.client_id,
        "sub": conn.username,
        "aud": conn.login_url,
        "exp": int(time.time()) - 10,
    }
    session = http_session(conn)
    url = f"{conn.login_url}/services/oauth2/token"
    expired = session.post(
        url,
        data={"grant_type": JWT_GRANT, "assertion": jwt.encode(claims, key, "RS256")},
    )
    assert expired.json()["error_description"] == "expired authorization code"

    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims["exp"] = int(time.time()) + 60
    forged = session.post(
        url,
        data={"grant_type": JWT_GRANT, "assertion": jwt.encode(claims, other, "RS256")},
    )
    assert forged.json() == {
        "error": "invalid_grant",
        "error_description": "invalid assertion",
    }


def test_auth__unreachable_org_is_transient(org: LocalOrg) -> None:
    conn = dataclasses.replace(org.connection(), login_url="https://localhost:9")
    with pytest.raises(SourceUnavailable):
        fetch_token(conn)


def test_auth__tokens_expire_on_the_org_clock(org: LocalOrg) -> None:
    sf = org.salesforce()
    sf.Account.create({"Name": "before"})
    org.admin("clock", {"seconds": 7201})
    with pytest.raises(SalesforceExpiredSession) as raised:
        sf.Account.create({"Name": "after"})
    assert raised.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    org.salesforce().Account.create({"Name": "with a new token"})


def test_auth__revoked_tokens_get_invalid_session_id(org: LocalOrg) -> None:
    sf = org.salesforce()
    assert org.admin("tokens/revoke")["revoked"] >= 1
    response = requests.Session()
    response.trust_env = False
    answer = response.get(
        f"{org.instance_url}/services/data/v60.0/sobjects",
        headers={"Authorization": f"Bearer {sf.session_id}"},
        verify=str(org.ca_file),
    )
    assert answer.status_code == 401
    assert answer.json() == [
        {
            "message": "Session expired or invalid",
            "errorCode": "INVALID_SESSION_ID",
            "fields": [],
        }
    ]
