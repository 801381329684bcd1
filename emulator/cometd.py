"""The local org's Streaming API: Bayeux (CometD) long-polling over HTTPS.

Clients POST lists of Bayeux messages to ``/cometd/<api version>``. A session
goes like this (what aiosfstream-ng does, and what Salesforce answers)::

    /meta/handshake            -> clientId, advice {timeout, interval: 0,
                                  reconnect: retry}, cookie BAYEUX_BROWSER
    /meta/connect (first)      -> answered at once
    /meta/subscribe /data/AccountChangeEvent, ext.replay {channel: 41}
                               -> the channel's cursor is set to 41
    /meta/connect              -> held until an event past a cursor exists or
                                  the advice timeout passes, then answered
                                  with every such event (up to a batch) and
                                  the connect reply

Cursors, per client and channel, are replay ids into the org's journal. A
subscription's replay id sets the cursor: -1 to the journal's latest id,
-2 to "before everything retained", a stored id to itself (if the journal
still holds what follows it). Each connect answer moves the cursor to the
last event it carries, so the next connect starts after it. Nothing is
queued per client: a slow client costs a cursor, not memory.

Failures speak Salesforce's words: ``401::Authentication invalid`` for a
token the org does not know (advice ``reconnect: none``; aiocometd then
re-authenticates and sends again), ``403::Unknown client`` for a client the
server has forgotten (advice ``reconnect: handshake``), and
``400::The replayId {N} you provided was invalid...`` for a replay id the
journal no longer holds.

Clients are tied to the ``BAYEUX_BROWSER`` cookie set at handshake, as the
real service ties them to its load balancer's cookies: a client that drops
cookies (aiohttp does for bare-IP hosts) is answered ``403::Unknown client``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from forcelink.emulator.journal import REPLAY_ALL, REPLAY_NEW, Journal

log = logging.getLogger("forcelink.emulator.cometd")

DEFAULT_TIMEOUT_MS = 110_000
TIMEOUT_ENV = "FORCELINK_EMULATOR_COMETD_TIMEOUT_MS"
DEFAULT_MAX_BATCH = 1000
BROWSER_COOKIE = "BAYEUX_BROWSER"

ALL_CHANGES = "/data/ChangeEvents"
_CHANNEL_PREFIX = "/data/"
_CHANNEL_SUFFIX = "ChangeEvent"

AUTH_INVALID = "401::Authentication invalid"
UNKNOWN_CLIENT = "403::Unknown client"
INVALID_REPLAY = (
    "400::The replayId {%d} you provided was invalid.  Please provide a valid "
    "ID, -2 to replay all events, or -1 to replay only new events."
)

Message = dict[str, Any]


class _Sessions(Protocol):
    def lookup(self, token: str) -> object | None: ...


class OrgLike(Protocol):
    """What the server needs from the org: its journal and its sessions."""

    @property
    def journal(self) -> Journal: ...

    @property
    def sessions(self) -> _Sessions: ...


@dataclass(eq=False)
class _Client:
    client_id: str
    browser: str
    cursors: dict[str, int] = field(default_factory=dict)
    connected_once: bool = False
    connect_serial: int = 0
    gone: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_seen: float = 0.0


def entity_of(channel: str) -> str | None:
    """The object a change event channel carries, or None for all of them.

    ``/data/AccountChangeEvent`` -> ``Account``,
    ``/data/Site_Photo__ChangeEvent`` -> ``Site_Photo__c``,
    ``/data/ChangeEvents`` -> None. Raises ValueError for other channels.
    """
    if channel == ALL_CHANGES:
        return None
    if not (channel.startswith(_CHANNEL_PREFIX) and channel.endswith(_CHANNEL_SUFFIX)):
        raise ValueError(channel)
    name = channel[len(_CHANNEL_PREFIX) : -len(_CHANNEL_SUFFIX)]
    if not name:
        raise ValueError(channel)
    return name + "c" if name.endswith("__") else name


def schema_id(entity: str) -> str:
    """A stable 22-character schema id per entity, shaped like Salesforce's."""
    digest = hashlib.sha256(entity.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class CometdServer:
    """Bayeux long-polling endpoint over the org's journal.

    ``timeout_ms`` is the connect hold time advised to clients (Salesforce:
    110 s); without it, ``FORCELINK_EMULATOR_COMETD_TIMEOUT_MS`` or 110000.
    ``max_batch`` caps the events one connect answer carries.
    """

    def __init__(
        self,
        org: OrgLike,
        *,
        timeout_ms: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        require_browser_cookie: bool = True,
    ) -> None:
        self._org = org
        self.timeout_ms = timeout_ms or int(
            os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_MS
        )
        self._max_batch = max_batch
        self._require_cookie = require_browser_cookie
        self._clients: dict[str, _Client] = {}

    @property
    def _journal(self) -> Journal:
        return self._org.journal

    def forget_clients(self) -> int:
        """Drop every client: their next request gets ``403::Unknown client``.

        Held connects are answered at once. Returns how many were dropped.
        """
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            client.gone = True
            client.wake.set()
        log.info("forgot %d streaming clients", len(clients))
        return len(clients)

    async def handle(self, request: web.Request) -> web.Response:
        """POST /cometd/{version}: one batch of Bayeux messages."""
        messages = await _read_messages(request)
        if messages is None:
            return web.json_response(
                [{"successful": False, "error": "400::Bad request"}], status=400
            )

        if not self._authenticated(request):
            for message in messages:
                self._drop(message.get("clientId"))
            failures = [_auth_failure(message) for message in messages]
            return web.json_response(failures, status=401)

        # The connect is answered last: it may be held, and the subscribes
        # that aiocometd sends beside it after a re-handshake must not wait.
        browser = request.cookies.get(BROWSER_COOKIE)
        issued: dict[str, str] = {}
        replies: list[Message] = []
        connects = [m for m in messages if m.get("channel") == "/meta/connect"]
        for message in messages:
            if message.get("channel") != "/meta/connect":
                replies.append(self._dispatch(message, browser, issued))
        for message in connects[-1:]:
            replies.extend(await self._connect(message, browser))

        response = web.json_response(replies)
        for name, value in issued.items():
            response.set_cookie(name, value, path="/", secure=True, httponly=True)
        return response

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token.strip():
            return False
        return self._org.sessions.lookup(token.strip()) is not None

    def _dispatch(
        self, message: Message, browser: str | None, issued: dict[str, str]
    ) -> Message:
        """Answer one message other than a connect; cookies go in ``issued``."""
        channel = message.get("channel")
        if channel == "/meta/handshake":
            reply, issued[BROWSER_COOKIE] = self._handshake(message)
            return reply

        client = self._client(message, browser)
        if client is None:
            return _unknown_client(message)
        if channel == "/meta/subscribe":
            return self._subscribe(client, message)
        if channel == "/meta/unsubscribe":
            return self._unsubscribe(client, message)
        if channel == "/meta/disconnect":
            self._drop(client.client_id)
            return _reply(message, successful=True)
        return _reply(message, successful=False, error="403::Publish denied")

    def _handshake(self, message: Message) -> tuple[Message, str]:
        self._sweep()
        client = _Client(
            client_id=secrets.token_urlsafe(18),
            browser=secrets.token_hex(12),
            last_seen=asyncio.get_running_loop().time(),
        )
        self._clients[client.client_id] = client
        log.info("streaming client %s handshook", client.client_id)

        reply = _reply(message, successful=True)
        reply.update(
            clientId=client.client_id,
            version="1.0",
            minimumVersion="1.0",
            supportedConnectionTypes=["long-polling"],
            advice=self._advice("retry"),
            ext={"replay": True, "payload.format": True},
        )
        return reply, client.browser

    def _subscribe(self, client: _Client, message: Message) -> Message:
        channel = message.get("subscription")
        reply = _reply(message, successful=True, subscription=channel)
        if not self._channel_exists(str(channel)):
            reply.update(
                successful=False,
                error=f"400::The channel you requested to subscribe to does "
                f"not exist {{{channel}}}",
            )
            return reply

        replay_id = _requested_replay_id(message, str(channel))
        if replay_id is None or not self._journal.is_valid(replay_id):
            shown = message.get("ext", {}).get("replay", {}).get(channel)
            reply.update(successful=False, error=INVALID_REPLAY % _as_int(shown))
            return reply

        if replay_id == REPLAY_NEW:
            replay_id = self._journal.latest()
        client.cursors[str(channel)] = replay_id
        client.wake.set()
        log.debug(
            "client %s subscribed to %s from %d", client.client_id, channel, replay_id
        )
        return reply

    def _unsubscribe(self, client: _Client, message: Message) -> Message:
        channel = message.get("subscription")
        client.cursors.pop(str(channel), None)
        return _reply(message, successful=True, subscription=channel)

    async def _connect(self, message: Message, browser: str | None) -> list[Message]:
        client = self._client(message, browser)
        if client is None:
            return [_unknown_client(message)]

        # A newer connect from the same client ends the one being held.
        client.connect_serial += 1
        client.wake.set()

        if client.connected_once:
            events = await self._hold(client, client.connect_serial)
        else:
            client.connected_once = True
            events = self._collect(client)

        client.last_seen = asyncio.get_running_loop().time()
        if client.gone:
            return [_unknown_client(message)]
        reply = _reply(message, successful=True, advice=self._advice("retry"))
        return [*events, reply]

    async def _hold(self, client: _Client, serial: int) -> list[Message]:
        """Events for ``client``, waiting up to the advice timeout for some.

        Returns early, empty, when the client is dropped or connects again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_ms / 1000
        while True:
            if client.gone or client.connect_serial != serial:
                return []
            horizon = self._journal.latest()
            events = self._collect(client, horizon)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            await self._wait(client, horizon, remaining)

    async def _wait(self, client: _Client, horizon: int, timeout: float) -> None:
        new_event = asyncio.ensure_future(self._journal.wait_for_new(horizon, timeout))
        woken = asyncio.ensure_future(client.wake.wait())
        try:
            await asyncio.wait([new_event, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            new_event.cancel()
            woken.cancel()
        client.wake.clear()

    def _collect(self, client: _Client, horizon: int | None = None) -> list[Message]:
        """Event messages past each cursor, and the cursors moved past them.

        ``horizon`` is the journal's latest id read before collecting: when
        a channel's answer is complete, every id up to it has been seen, so
        its cursor can jump there even if the channel's filter kept nothing.
        """
        if horizon is None:
            horizon = self._journal.latest()
        messages: list[Message] = []
        for channel, cursor in client.cursors.items():
            room = self._max_batch - len(messages)
            if room <= 0:
                break
            entity = entity_of(channel)
            wanted = None if entity is None else {entity}
            events = self._journal.after(cursor, wanted, limit=room)
            for event in events:
                messages.append(
                    {
                        "channel": channel,
                        "data": {
                            "schema": schema_id(event.entity_name),
                            "payload": event.payload,
                            "event": {"replayId": event.replay_id},
                        },
                    }
                )
            moved = events[-1].replay_id if events else cursor
            if len(events) < room:
                moved = max(moved, horizon)
            client.cursors[channel] = moved
        return messages

    def _client(self, message: Message, browser: str | None) -> _Client | None:
        client = self._clients.get(str(message.get("clientId")))
        if client is None:
            return None
        if self._require_cookie and browser != client.browser:
            log.info("client %s came without its browser cookie", client.client_id)
            return None
        client.last_seen = asyncio.get_running_loop().time()
        return client

    def _drop(self, client_id: object) -> None:
        client = self._clients.pop(str(client_id), None)
        if client is not None:
            client.gone = True
            client.wake.set()

    def _sweep(self) -> None:
        """Forget clients silent for longer than a connect hold plus a minute."""
        limit = asyncio.get_running_loop().time() - self.timeout_ms / 1000 - 60
        stale = [c.client_id for c in self._clients.values() if c.last_seen < limit]
        for client_id in stale:
            self._drop(client_id)

    def _channel_exists(self, channel: str) -> bool:
        try:
            entity = entity_of(channel)
        except ValueError:
            return False
        if entity is None:
            return True
        schema = getattr(self._org, "schema", None)
        find = getattr(schema, "find", None)
        return find is None or find(entity) is not None

    def _advice(self, reconnect: str) -> dict[str, Any]:
        return {"timeout": self.timeout_ms, "interval": 0, "reconnect": reconnect}


SERVER_KEY = web.AppKey("forcelink.emulator.cometd", CometdServer)


def add_routes(
    app: web.Application,
    org: OrgLike,
    *,
    timeout_ms: int | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> CometdServer:
    """Serve CometD at ``/cometd/{version}``; the server is ``app[SERVER_KEY]``."""
    server = CometdServer(org, timeout_ms=timeout_ms, max_batch=max_batch)
    app[SERVER_KEY] = server
    app.router.add_post("/cometd/{version}", server.handle)
    return server


def forget_clients(app: web.Application) -> int:
    """Forget every CometD client of ``app`` (the admin route calls this)."""
    return app[SERVER_KEY].forget_clients()


async def _read_messages(request: web.Request) -> list[Message] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list) or not all(isinstance(m, dict) for m in body):
        return None
    return body


def _requested_replay_id(message: Message, channel: str) -> int | None:
    """The replay id a subscribe asks for: -1 when it names none."""
    replay = message.get("ext", {}).get("replay") or {}
    if not isinstance(replay, dict) or channel not in replay:
        return REPLAY_NEW
    value = replay[channel]
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _reply(message: Message, **fields: Any) -> Message:
    reply: Message = {"channel": message.get("channel")}
    for key in ("id", "clientId"):
        if key in message:
            reply[key] = message[key]
    reply.update(fields)
    return reply


def _unknown_client(message: Message) -> Message:
    return _reply(
        message,
        successful=False,
        error=UNKNOWN_CLIENT,
        advice={"reconnect": "handshake", "interval": 0},
    )


def _auth_failure(message: Message) -> Message:
    return _reply(
        message,
        successful=False,
        error=AUTH_INVALID,
        advice={"reconnect": "none"},
        ext={"sfdc": {"failureReason": AUTH_INVALID}},
    )


__all__ = [
    "ALL_CHANGES",
    "REPLAY_ALL",
    "SERVER_KEY",
    "CometdServer",
    "add_routes",
    "entity_of",
    "forget_clients",
    "schema_id",
]
