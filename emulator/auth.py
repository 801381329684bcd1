"""OAuth 2.0 JWT bearer login, and the middleware every API call passes.

Login: ``POST /services/oauth2/token`` with
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an RS256
``assertion`` whose ``iss`` is a registered client id, ``sub`` a registered
username, ``aud`` the login URL and ``exp`` in the future. Failures answer
400 with ``{"error", "error_description"}`` in Salesforce's words.

The middleware, for ``/services/data/**`` and ``/cometd/**``:

1. authenticates the Bearer token (401 INVALID_SESSION_ID), except for
   CometD, which answers ``401::Authentication invalid`` itself, and the
   public version list ``/services/data``;
2. counts the call by kind (rest, collections, query, bulk, streaming) and
   refuses it with 403 REQUEST_LIMIT_EXCEEDED once the daily limit is spent;
3. fails it if a fault is armed for its kind (``/_emulator/faults``);
4. turns an ``ApiError`` raised by a handler into Salesforce's JSON list;
5. adds ``Sforce-Limit-Info: api-usage=N/M`` to the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import jwt
from aiohttp import web

from forcelink.emulator.errors import ApiError, invalid_session
from forcelink.emulator.limits import limit_exceeded
from forcelink.emulator.org import DEFAULT_API_VERSION, CallContext, Org
from forcelink.emulator.sessions import ORG_ID, Session

log = logging.getLogger("forcelink.emulator.auth")

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ORG_KEY = web.AppKey("forcelink.emulator.org", Org)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_of(request: web.Request) -> Session:
    """The caller's session; only valid behind the middleware (always set)."""
    session: Session = request["session"]
    return session


def context_of(request: web.Request, api: str = "rest") -> CallContext:
    """Who is writing and how, for the change events of this call.

    The ``client=`` value of the ``Sforce-Call-Options`` header becomes the
    ``;client=`` part of changeOrigin; the API version comes from the path.
    """
    client = None
    for option in request.headers.get("Sforce-Call-Options", "").split(","):
        key, _, value = option.strip().partition("=")
        if key.strip().lower() == "client" and value.strip():
            client = value.strip()
    version = request.match_info.get("version", DEFAULT_API_VERSION)
    return CallContext(session_of(request).user_id, client, api, version)


def call_kind(path: str) -> str | None:
    """What a call counts as, from its path; None for calls not counted."""
    if path.startswith("/cometd"):
        return "streaming"
    if not path.startswith("/services/data/"):
        return None
    if "/composite/sobjects" in path:
        return "collections"
    # Bulk first: a query job's path (/jobs/query/...) also contains /query.
    if "/jobs/" in path or path.endswith("/jobs"):
        return "bulk"
    if "/query" in path:
        return "query"
    return "rest"


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    org = request.app[ORG_KEY]
    path = request.path.rstrip("/")
    kind = call_kind(request.path) if path != "/services/data" else None
    if kind is None:
        outage = org.faults.take_outage() if path == "/services/data" else None
        if outage is not None:
            return _error(outage, org)
        return await _answer(request, handler)

    token = _bearer(request)
    session = org.sessions.lookup(token) if token else None
    if session is not None:
        request["session"] = session
    elif kind != "streaming":
        return _error(invalid_session(), org)

    if not org.usage.count(kind):
        return _error(limit_exceeded(), org)
    fault = org.faults.take(kind)
    if fault is not None:
        log.debug("injected %s on %s %s", fault.error_code, request.method, path)
        return _error(fault, org)

    response = await _answer(request, handler)
    if kind != "streaming":
        response.headers["Sforce-Limit-Info"] = org.usage.header()
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return _error(error, request.app[ORG_KEY])


def _error(error: ApiError, org: Org) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    response.headers["Sforce-Limit-Info"] = org.usage.header()
    return response


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    return None


async def token_endpoint(request: web.Request) -> web.Response:
    """POST /services/oauth2/token: the JWT bearer flow only."""
    org = request.app[ORG_KEY]
    form = await request.post()
    if form.get("grant_type") != JWT_GRANT:
        return _grant_error("unsupported_grant_type", "grant type not supported")
    assertion = form.get("assertion")
    if not isinstance(assertion, str) or not assertion:
        return _grant_error("invalid_grant", "invalid assertion")

    try:
        session = login(org, assertion)
    except _LoginRefused as refusal:
        log.info("login refused: %s", refusal.description)
        return _grant_error(refusal.error, refusal.description)

    log.info("issued a token to %s", session.username)
    return web.json_response(
        {
            "access_token": session.token,
            "scope": "api",
            "instance_url": org.instance_url,
            "id": f"{org.login_url}/id/{ORG_ID}/{session.user_id}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        }
    )


class _LoginRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def login(org: Org, assertion: str) -> Session:
    """Check a JWT bearer assertion and open a session, or raise _LoginRefused."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise _LoginRefused("invalid_grant", "invalid assertion") from error
    app = org.apps.get(str(claims.get("iss", "")))
    if app is None:
        raise _LoginRefused("invalid_client_id", "client identifier invalid")

    try:
        jwt.decode(
            assertion,
            app.public_key_pem,
            algorithms=["RS256"],
            audience=[org.login_url, org.login_url + "/"],
            options={"require": ["exp", "aud", "sub", "iss"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError as error:
        raise _LoginRefused("invalid_grant", "expired authorization code") from error
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as error:
        raise _LoginRefused("invalid_grant", "audience is invalid") from error
    except jwt.PyJWTError as error:
        raise _LoginRefused("invalid_grant", "invalid assertion") from error

    # exp is checked against the machine's time, not the org's clock: clients
    # sign with real time, and an advanced org clock must not lock them out.
    username = str(claims.get("sub", ""))
    user_id = org.users.get(username)
    if user_id is None:
        raise _LoginRefused("invalid_grant", "user hasn't approved this consumer")
    return org.sessions.issue(user_id, username, app.client_id)


def _grant_error(error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=400
    )
