"""Tokens: only a valid RS256 token of the right org, issuer and audience passes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pytest

from .conftest import Api


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(api: Api, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": api.config.api.token_issuer,
        "aud": api.config.api.token_audience,
        "sub": "mallory",
        "org": "local",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(api: Api, org_key: str = "local", **changes: Any) -> str:
    return jwt.encode(
        _claims(api, **changes), api.keys.private_key_pem(org_key), "RS256"
    )


def _unsigned(api: Api) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(api)).encode())}."


def _hs256_with_public_key(api: Api) -> str:
    """The HS/RS confusion: an HMAC token keyed with the org's public key."""
    api.keys.private_key_pem("local")
    secret = (api.keys.dir / "local.pub.pem").read_bytes()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(api)).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


BAD_TOKENS = {
    "expired": lambda api: _signed(
        api, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600
    ),
    "wrong audience": lambda api: _signed(api, aud="someone-else"),
    "wrong issuer": lambda api: _signed(api, iss="evil"),
    "no expiry": lambda api: _signed(api, exp=None),
    "no user": lambda api: _signed(api, sub=None),
    "alg none": _unsigned,
    "HS256 keyed with the RSA public key": _hs256_with_public_key,
    "signed by another org's key": lambda api: _signed(api, org_key="other"),
    # Signed with local's key but naming an org that has no key at all.
    "org without a key": lambda api: _signed(api, org="nokeys"),
    "garbage": lambda api: "not.a.token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_bad_tokens_get_401(local_api: Api, kind: str) -> None:
    token = BAD_TOKENS[kind](local_api)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=local_api.url) as client:
        response = client.get("/v1/images", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
    assert token not in response.text


def test_every_route_needs_a_token(local_api: Api) -> None:
    some_id = "6f1c1f5e-0b4f-4d7c-9a57-3f2f0e6f2b11"
    with httpx.Client(base_url=local_api.url) as client:
        for method, path in [
            ("GET", "/v1/images"),
            ("POST", "/v1/images"),
            ("GET", f"/v1/images/{some_id}"),
            ("GET", f"/v1/images/{some_id}/thumbnail?w=64"),
            ("PATCH", f"/v1/images/{some_id}"),
            ("DELETE", f"/v1/images/{some_id}"),
        ]:
            assert client.request(method, path).status_code == 401, (method, path)
        basic = client.get("/v1/images", headers={"Authorization": "Basic dTpw"})
        assert basic.status_code == 401


def test_token_command_prints_a_token_the_api_accepts(local_api: Api) -> None:
    env = dict(os.environ, FORCELINK_API_KEYS_DIR=str(local_api.keys.dir))
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "forcelink.cli",
            "token",
            "--org",
            "cmdorg",
            "--user",
            "ann",
            "--ttl",
            "120",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    token = printed.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["org"] == "cmdorg" and claims["sub"] == "ann"
    assert claims["exp"] - claims["iat"] == 120
    assert token not in printed.stderr
    with httpx.Client(base_url=local_api.url) as client:
        response = client.get(
            "/v1/images", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}
