"""The emulator's CometD server, message by message, in-process over HTTP.

These tests speak raw Bayeux to ``emulator.cometd`` mounted on an aiohttp app
with a real ``Org``, to pin down the wire format and error wording. The
end-to-end behaviour through the real aiosfstream-ng client over TLS is in
``test_streaming.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from forcelink.emulator import cometd
from forcelink.emulator.org import Org
from forcelink.emulator.schema import load

TIMEOUT_MS = 400


class Bayeux:
    """A hand-driven Bayeux client: one handshake, then raw message lists."""

    def __init__(self, http: TestClient[Any, Any], token: str) -> None:
        self.http = http
        self.token = token
        self.client_id = ""
        self.browser = ""
        self.next_id = 0

    async def post(
        self, *messages: dict[str, Any], token: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        for message in messages:
            self.next_id += 1
            message.setdefault("id", str(self.next_id))
            if message["channel"] != "/meta/handshake":
                message.setdefault("clientId", self.client_id)
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if self.browser:
            headers["Cookie"] = f"{cometd.BROWSER_COOKIE}={self.browser}"
        response = await self.http.post("/cometd/60.0", json=messages, headers=headers)
        body = await response.json()
        morsel = response.cookies.get(cometd.BROWSER_COOKIE)
        if morsel is not None:
            self.browser = morsel.value
        return response.status, body

    async def handshake(self) -> dict[str, Any]:
        _, [reply] = await self.post(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        )
        self.client_id = reply.get("clientId", "")
        return reply

    async def connect(self) -> list[dict[str, Any]]:
        _, replies = await self.post(
            {"channel": "/meta/connect", "connectionType": "long-polling"}
        )
        return replies

    async def subscribe(
        self, channel: str, replay: int | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "channel": "/meta/subscribe",
            "subscription": channel,
        }
        if replay is not None:
            message["ext"] = {"replay": {channel: replay}}
        _, [reply] = await self.post(message)
        return reply


@pytest.fixture
def org() -> Org:
    return Org(load())


@pytest.fixture
async def server(org: Org) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    cometd.add_routes(app, org, timeout_ms=TIMEOUT_MS, max_batch=3)
    async with TestClient(TestServer(app)) as http:
        yield http


@pytest.fixture
async def bayeux(org: Org, server: TestClient[Any, Any]) -> Bayeux:
    token = _token(org)
    client = Bayeux(server, token)
    await client.handshake()
    await client.connect()
    return client


def _token(org: Org) -> str:
    return org.sessions.issue("005000000000001AAA", "h3@example.com", "app").token


def _event(org: Org, entity: str, n: int) -> int:
    header = {"entityName": entity, "changeType": "CREATE", "commitTimestamp": n}
    return org.journal.append(entity, {"ChangeEventHeader": header, "N": n})


def _delivered(replies: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (r["channel"], r["data"]["event"]["replayId"]) for r in replies if "data" in r
    ]


@pytest.mark.parametrize(
    ("channel", "entity"),
    [
        ("/data/ChangeEvents", None),
        ("/data/AccountChangeEvent", "Account"),
        ("/data/WorkOrderChangeEvent", "WorkOrder"),
        ("/data/Site_Photo__ChangeEvent", "Site_Photo__c"),
    ],
)
def test_cometd__channel_names(channel: str, entity: str | None) -> None:
    assert cometd.entity_of(channel) == entity


@pytest.mark.parametrize("channel", ["/topic/Foo", "/data/ChangeEvent", "/data/X"])
def test_cometd__other_channels_are_refused(channel: str) -> None:
    with pytest.raises(ValueError):
        cometd.entity_of(channel)


async def test_cometd__handshake_reply(org: Org, server: TestClient[Any, Any]) -> None:
    token = _token(org)
    client = Bayeux(server, token)

    reply = await client.handshake()

    assert reply["successful"] is True
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["advice"] == {
        "timeout": TIMEOUT_MS,
        "interval": 0,
        "reconnect": "retry",
    }
    assert reply["ext"]["replay"] is True
    assert reply["id"] == "1"
    assert client.client_id
    assert client.browser, "the BAYEUX_BROWSER cookie is set"


async def test_cometd__first_connect_answers_then_later_ones_hold(
    org: Org, server: TestClient[Any, Any]
) -> None:
    token = _token(org)
    client = Bayeux(server, token)
    await client.handshake()

    started = time.monotonic()
    [first] = await client.connect()
    first_took = time.monotonic() - started
    [second] = await client.connect()
    second_took = time.monotonic() - started - first_took

    assert first["successful"] and second["successful"]
    assert first_took < TIMEOUT_MS / 1000 / 2
    assert second_took >= TIMEOUT_MS / 1000 * 0.9
    assert second["advice"]["reconnect"] == "retry"


async def test_cometd__held_connect_wakes_on_append_from_another_thread(
    org: Org, bayeux: Bayeux
) -> None:
    await bayeux.subscribe("/data/AccountChangeEvent")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, lambda: loop.run_in_executor(None, _event, org, "Account", 1))

    replies = await bayeux.connect()

    [message] = [r for r in replies if "data" in r]
    assert message["channel"] == "/data/AccountChangeEvent"
    assert message["data"]["payload"]["N"] == 1
    assert message["data"]["event"]["replayId"] == org.journal.latest()
    assert message["data"]["schema"] == cometd.schema_id("Account")
    assert replies[-1]["channel"] == "/meta/connect"


async def test_cometd__replay_all_comes_in_batches_filtered_by_channel(
    org: Org, bayeux: Bayeux
) -> None:
    ids = [
        _event(org, entity, n) for n, entity in enumerate(["Account", "Contact"] * 4)
    ]
    accounts = ids[0::2]

    reply = await bayeux.subscribe("/data/AccountChangeEvent", replay=-2)
    first = _delivered(await bayeux.connect())
    second = _delivered(await bayeux.connect())

    assert reply["successful"] is True
    assert [i for _, i in first] == accounts[:3], "max_batch is 3"
    assert [i for _, i in second] == accounts[3:]


async def test_cometd__replay_from_stored_id_and_new_only(
    org: Org, bayeux: Bayeux
) -> None:
    ids = [_event(org, "Contact", n) for n in range(3)]

    await bayeux.subscribe("/data/ChangeEvents", replay=ids[0])
    await bayeux.subscribe("/data/ContactChangeEvent", replay=-1)
    later = _event(org, "Contact", 3)
    delivered = _delivered(await bayeux.connect())  # a full batch of 3
    delivered += _delivered(await bayeux.connect())

    assert sorted(delivered) == sorted(
        [("/data/ChangeEvents", i) for i in [*ids[1:], later]]
        + [("/data/ContactChangeEvent", later)]
    )


async def test_cometd__invalid_replay_id_is_refused_in_salesforce_words(
    org: Org, bayeux: Bayeux
) -> None:
    issued = _event(org, "Account", 0)

    reply = await bayeux.subscribe("/data/AccountChangeEvent", replay=issued + 50)

    assert reply["successful"] is False
    assert reply["subscription"] == "/data/AccountChangeEvent"
    assert reply["error"] == (
        f"400::The replayId {{{issued + 50}}} you provided was invalid.  Please "
        "provide a valid ID, -2 to replay all events, or -1 to replay only new "
        "events."
    )


async def test_cometd__expired_replay_id_is_refused(org: Org, bayeux: Bayeux) -> None:
    first, second = _event(org, "Account", 0), _event(org, "Account", 1)

    org.clock.advance(73 * 3600)
    third = _event(org, "Account", 2)
    bayeux.token = _token(org)  # the old one expired with the clock

    assert (await bayeux.subscribe("/data/ChangeEvents", replay=first))[
        "successful"
    ] is False
    assert (await bayeux.subscribe("/data/ChangeEvents", replay=second))["successful"]
    assert _delivered(await bayeux.connect()) == [("/data/ChangeEvents", third)]


async def test_cometd__unknown_channel_is_refused(bayeux: Bayeux) -> None:
    reply = await bayeux.subscribe("/data/NoSuchThingChangeEvent")

    assert reply["successful"] is False
    assert reply["error"].startswith("400::")


async def test_cometd__client_without_its_cookie_is_unknown(bayeux: Bayeux) -> None:
    bayeux.browser = "not-the-one-issued"

    [reply] = await bayeux.connect()

    assert reply["successful"] is False
    assert reply["error"] == "403::Unknown client"
    assert reply["advice"]["reconnect"] == "handshake"


async def test_cometd__forget_answers_held_connect_at_once(
    server: TestClient[Any, Any], bayeux: Bayeux
) -> None:
    held = asyncio.create_task(bayeux.connect())
    await asyncio.sleep(0.05)

    started = time.monotonic()
    assert cometd.forget_clients(server.app) == 1
    [reply] = await held

    assert time.monotonic() - started < TIMEOUT_MS / 1000 / 2
    assert reply["error"] == "403::Unknown client"
    assert (await bayeux.subscribe("/data/ChangeEvents"))[
        "error"
    ] == "403::Unknown client"
    assert (await bayeux.handshake())["successful"] is True


async def test_cometd__revoked_token_is_401_and_drops_the_client(
    org: Org, bayeux: Bayeux
) -> None:
    org.sessions.revoke(bayeux.token)

    status, [reply] = await bayeux.post({"channel": "/meta/connect"})

    assert status == 401
    assert reply["successful"] is False
    assert reply["error"] == "401::Authentication invalid"
    assert reply["advice"] == {"reconnect": "none"}

    fresh = _token(org)
    _, [again] = await bayeux.post({"channel": "/meta/connect"}, token=fresh)
    assert again["error"] == "403::Unknown client"


async def test_cometd__handshake_without_token_is_401(
    server: TestClient[Any, Any],
) -> None:
    client = Bayeux(server, token="nonsense")

    reply = await client.handshake()

    assert reply["successful"] is False
    assert reply["error"] == "401::Authentication invalid"
    assert reply["advice"] == {"reconnect": "none"}


async def test_cometd__disconnect_forgets_the_client(bayeux: Bayeux) -> None:
    _, [reply] = await bayeux.post({"channel": "/meta/disconnect"})

    assert reply["successful"] is True
    assert (await bayeux.connect())[0]["error"] == "403::Unknown client"
