"""Logging in to a Salesforce org with the OAuth 2.0 JWT bearer flow.

``OrgConnection`` says where and as whom: from a ``connection.json`` (what
``forcelink emulator`` writes) or from an org's settings in forcelink.yaml.
``fetch_token`` signs a short-lived RS256 assertion with the connected
app's private key and trades it for an access token; ``salesforce_client``
wraps the token in a simple-salesforce client whose every call carries
``Sforce-Call-Options: client=<tag>`` (how forcelink recognises its own
writes in change events) and trusts the org's CA file.

Failures are translated at this boundary: a refused login (``invalid_grant``
and friends) is a ``LoginRefused`` (terminal: the settings are wrong), an
unreachable org or a 5xx is ``SourceUnavailable`` (transient). The private
key and tokens are registered as secrets, so no log line prints them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import requests
from simple_salesforce.api import Salesforce

from forcelink.config import OrgConfig
from forcelink.errors import ConfigError, SourceUnavailable, TerminalError
from forcelink.log import register_secret

ASSERTION_SECONDS = 180
DEFAULT_API_VERSION = "60.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class LoginRefused(TerminalError):
    """The org refused the login (bad client id, user, key or audience)."""


@dataclass(frozen=True)
class OrgConnection:
    login_url: str
    client_id: str
    username: str
    private_key_file: str
    instance_url: str | None = None
    ca_file: str | None = None
    api_version: str = DEFAULT_API_VERSION

    @classmethod
    def from_file(cls, path: str | Path) -> OrgConnection:
        """Read a ``connection.json``; ConfigError names the file and key."""
        source = Path(path)
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read: {error}", file=str(source)) from error
        if not isinstance(raw, dict):
            raise ConfigError("expected a JSON object", file=str(source))
        for key in ("login_url", "client_id", "username", "private_key_file"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError("missing or not a string", file=str(source), key=key)
        return cls(
            login_url=raw["login_url"].rstrip("/"),
            client_id=raw["client_id"],
            username=raw["username"],
            private_key_file=raw["private_key_file"],
            instance_url=raw.get("instance_url"),
            ca_file=raw.get("ca_file"),
            api_version=str(raw.get("api_version", DEFAULT_API_VERSION)),
        )

    @classmethod
    def from_config(cls, org: OrgConfig) -> OrgConnection:
        """An org's settings; a ``connection_file`` fills what is not set."""
        base = cls.from_file(org.connection_file) if org.connection_file else None
        values: dict[str, Any] = {}
        for key in ("login_url", "client_id", "username", "private_key_file"):
            values[key] = getattr(org, key) or (getattr(base, key) if base else None)
            if not values[key]:
                raise ConfigError(
                    "required (or give connection_file)", key=f"orgs.{org.name}.{key}"
                )
        return cls(
            login_url=str(values["login_url"]).rstrip("/"),
            client_id=str(values["client_id"]),
            username=str(values["username"]),
            private_key_file=str(values["private_key_file"]),
            instance_url=base.instance_url if base else None,
            ca_file=org.ca_file or (base.ca_file if base else None),
            api_version=org.api_version,
        )


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str
    issued_at: datetime
    expires_at: datetime | None = None
    """Salesforce does not say; None unless the caller knows the policy."""


def http_session(
    conn: OrgConnection, client_tag: str | None = None
) -> requests.Session:
    """A requests session trusting the org's CA (and only it, if given).

    ``trust_env`` is off because REQUESTS_CA_BUNDLE would otherwise override
    ``verify``. With ``client_tag``, every call sends the call option.
    """
    session = requests.Session()
    session.trust_env = False
    if conn.ca_file:
        session.verify = conn.ca_file
    if client_tag:
        session.headers["Sforce-Call-Options"] = f"client={client_tag}"
    return session


def fetch_token(
    conn: OrgConnection | OrgConfig,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> Token:
    """Log in with the JWT bearer flow; raises LoginRefused or SourceUnavailable.

    Takes an org's settings (``OrgConfig``) as well as an ``OrgConnection``.
    """
    if isinstance(conn, OrgConfig):
        conn = OrgConnection.from_config(conn)
    assertion = _assertion(conn)
    http = session or http_session(conn)
    url = f"{conn.login_url}/services/oauth2/token"
    try:
        response = http.post(
            url,
            data={"grant_type": JWT_GRANT, "assertion": assertion},
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise SourceUnavailable(
            f"cannot reach the login URL: {type(error).__name__}", org=conn.login_url
        ) from error

    body = _json(response)
    if response.status_code >= 500:
        raise SourceUnavailable(
            f"login answered HTTP {response.status_code}", org=conn.login_url
        )
    if response.status_code != 200 or "access_token" not in body:
        code = body.get("error", f"HTTP {response.status_code}")
        description = body.get("error_description", "")
        raise LoginRefused(
            f"{code}: {description}", org=conn.login_url, user=conn.username
        )

    register_secret(body["access_token"])
    return Token(
        access_token=body["access_token"],
        instance_url=str(body.get("instance_url") or conn.instance_url or ""),
        issued_at=datetime.now(UTC),
    )


def _assertion(conn: OrgConnection) -> str:
    try:
        key = Path(conn.private_key_file).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"cannot read the private key: {error.strerror}",
            file=conn.private_key_file,
        ) from error
    register_secret(key)
    claims = {
        "iss": conn.client_id,
        "sub": conn.username,
        "aud": conn.login_url,
        "exp": int(time.time()) + ASSERTION_SECONDS,
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as error:
        # The message of a key parsing error may quote the key: keep it out.
        raise ConfigError(
            "the private key is not an RSA key in PEM form",
            file=conn.private_key_file,
        ) from error


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def salesforce_client(
    conn: OrgConnection, token: Token, client_tag: str = "forcelink"
) -> Salesforce:
    """A simple-salesforce client for ``token`` that tags every call."""
    return Salesforce(
        instance_url=token.instance_url or conn.instance_url,
        session_id=token.access_token,
        session=http_session(conn, client_tag),
        version=conn.api_version,
    )
