"""Change Data Capture from an org: a CometD client built on aiosfstream-ng.

``streaming_client(conn, replay_storage)`` returns an unopened client that

- authenticates with the OAuth JWT bearer flow (``auth.fetch_token``), again
  whenever the Streaming API answers ``401::Authentication invalid``;
- trusts the org's CA file (``conn.ca_file``) for its TLS connections;
- speaks to ``<instance_url>/cometd/<conn.api_version>``;
- stores replay markers only when told to (``MANUAL`` policy): the caller
  wraps its handling of a message in ``async with client.replay_storage(
  message):`` and the marker moves only if that block finishes, after the
  event log has durably accepted the change (invariant 1);
- raises forcelink's errors: ``PositionLost`` when the org no longer holds
  the stored replay id, ``SessionExpired`` when it refuses to authenticate,
  ``SourceUnavailable`` when it cannot be reached, ``TerminalError`` for an
  event that carries no replay marker.

Replay markers: a marker is ``(commitTimestamp, replayId)`` per channel. On
(re)subscribe the client sends the stored replay id, and the org delivers
every event after it. Replay ids grow but are not contiguous (41, 43, 44,
47...): never compute one, only store what arrived.

What aiosfstream-ng does for us: a ``403::Unknown client`` answer makes it
handshake again and resubscribe with the stored replay ids, so a forgotten
client resumes from its last stored marker; messages it had fetched but the
caller had not yet marked come again (deliveries are at least once, applying
is idempotent).

What it does not do: ride out a network cut. aiocometd-ng 0.5.6 waits for
reconnection with ``asyncio.wait_for(..., loop=...)``, which Python 3.11
refuses, so ``receive`` raises ``SourceUnavailable`` as soon as a request
fails instead of after ``connection_timeout``. The caller closes the client
and opens a new one with the same replay storage; nothing marked is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator, MutableMapping
from http import HTTPStatus
from typing import Any

from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.client import Client, ReplayMarkerStoragePolicy
from aiosfstream_ng.exceptions import (
    AuthenticationError,
    ReplayError,
    ServerError,
    TransportError,
)
from aiosfstream_ng.replay import (
    DefaultMappingStorage,
    ReplayMarker,
    ReplayMarkerStorage,
    ReplayOption,
)

from forcelink.connector.salesforce.auth import OrgConnection, fetch_token
from forcelink.errors import (
    ForcelinkError,
    PositionLost,
    SessionExpired,
    SourceUnavailable,
    TerminalError,
)
from forcelink.log import register_secret

log = logging.getLogger("forcelink.connector.salesforce.streaming")

ALL_CHANGES = "/data/ChangeEvents"

ReplayStorage = ReplayMarkerStorage | MutableMapping[str, ReplayMarker]


def change_channel(entity: str) -> str:
    """The change event channel of one object.

    ``Account`` -> ``/data/AccountChangeEvent``;
    ``Site_Photo__c`` -> ``/data/Site_Photo__ChangeEvent``.
    """
    if entity.endswith("__c"):
        return f"/data/{entity[:-1]}ChangeEvent"
    return f"/data/{entity}ChangeEvent"


class JwtBearerAuthenticator(AuthenticatorBase):
    """Obtains access tokens with the JWT bearer flow of ``auth.fetch_token``.

    aiocometd calls ``authenticate`` before the handshake and again after
    any 401/403 answer, so an expired or revoked token is replaced without
    the caller noticing. The token is registered as a secret: it never
    reaches a log line.
    """

    def __init__(self, conn: OrgConnection) -> None:
        super().__init__()
        self._conn = conn

    def __repr__(self) -> str:
        return f"{type(self).__name__}(org={self._conn.login_url!r})"

    async def _authenticate(self) -> tuple[int, dict[str, Any]]:
        token = await asyncio.to_thread(fetch_token, self._conn)
        register_secret(token.access_token)
        log.info(
            "streaming login to %s as %s", self._conn.login_url, self._conn.username
        )
        return HTTPStatus.OK, {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "instance_url": token.instance_url,
        }


class StreamingClient(Client):
    """aiosfstream-ng's client with forcelink's TLS trust, version and errors."""

    def __init__(
        self,
        conn: OrgConnection,
        replay_storage: ReplayStorage,
        *,
        ssl_context: ssl.SSLContext,
        replay_storage_policy: ReplayMarkerStoragePolicy,
        connection_timeout: float,
        max_pending_count: int,
    ) -> None:
        super().__init__(
            JwtBearerAuthenticator(conn),
            replay=replay_storage,
            replay_storage_policy=replay_storage_policy,
            connection_timeout=connection_timeout,
            max_pending_count=max_pending_count,
        )
        # aiosfstream-ng has no SSL option; aiocometd reads this attribute
        # when it builds its transport, in open().
        self.ssl = ssl_context
        self.org = conn.login_url
        self.api_version = conn.api_version

    # The base's is a static method fixed to API 45.0; aiosfstream calls it
    # on the instance, so an instance method can use the org's version.
    def get_cometd_url(self, instance_url: str) -> str:  # type: ignore[override]
        return f"{instance_url.rstrip('/')}/cometd/{self.api_version}"

    async def open(self) -> None:
        with self._translated():
            await super().open()
        log.info("streaming client for org %s open", self.org)

    async def close(self) -> None:
        self._quiet_connect_task()
        await super().close()

    def _quiet_connect_task(self) -> None:
        """Detach aiocometd's callback from the connect task close cancels.

        That callback calls ``result()`` on the cancelled task, and asyncio
        logs the CancelledError with a traceback at ERROR on every close.
        While closing, the callback has nothing else to do (it follows the
        server's advice only when the transport is not disconnecting).
        """
        transport = self._transport
        task = getattr(transport, "_connect_task", None)
        callback = getattr(transport, "_connect_done", None)
        if (
            isinstance(task, asyncio.Future)
            and callback is not None
            and not task.done()
        ):
            task.remove_done_callback(callback)
            task.add_done_callback(_consume_outcome)

    async def subscribe(self, channel: str) -> None:
        with self._translated(channel):
            await super().subscribe(channel)
        log.info("org %s: subscribed to %s", self.org, channel)

    async def receive(self) -> dict[str, Any]:
        with self._translated():
            message: dict[str, Any] = await super().receive()
        return message

    @contextlib.contextmanager
    def _translated(self, channel: str | None = None) -> Iterator[None]:
        """Raise aiosfstream's errors as forcelink's, ``from`` the original."""
        try:
            yield
        except ForcelinkError:
            raise
        except ServerError as error:
            raise _server_error(error, self.org, channel) from error
        except AuthenticationError as error:
            raise SessionExpired(
                "the org refused the streaming login", org=self.org
            ) from error
        except TransportError as error:
            raise SourceUnavailable(
                f"streaming connection lost: {error}", org=self.org
            ) from error
        except ReplayError as error:
            raise TerminalError(
                f"change event without a replay marker: {error}", org=self.org
            ) from error
        except (KeyError, TypeError, ValueError) as error:
            # aiocometd reads whatever body comes back as Bayeux messages; an
            # org that is down answers a 503 with a body that is not one,
            # and aiocometd fails on it with a bare KeyError or TypeError.
            raise SourceUnavailable(
                f"the org answered the streaming request with no Bayeux "
                f"message ({type(error).__name__}: {error})",
                org=self.org,
            ) from error


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _server_error(error: ServerError, org: str, channel: str | None) -> ForcelinkError:
    text = str(error.error or error.message)
    if error.error_code == HTTPStatus.BAD_REQUEST and "replayId" in text:
        return PositionLost(
            "the org no longer holds the stored replay id: events after it "
            "are gone, a resync of this channel is needed",
            org=org,
            channel=channel,
            detail=text,
        )
    if error.error_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return SessionExpired(f"streaming session refused: {text}", org=org)
    return SourceUnavailable(
        f"streaming server error: {text}", org=org, channel=channel
    )


def streaming_client(
    conn: OrgConnection,
    replay_storage: ReplayStorage,
    *,
    default_replay: ReplayOption = ReplayOption.NEW_EVENTS,
    manual_markers: bool = True,
    connection_timeout: float = 10.0,
    max_pending_count: int = 100,
) -> StreamingClient:
    """An unopened CometD client for ``conn``'s org; open it inside a loop.

    ``replay_storage`` keeps one replay marker per channel (any mutable
    mapping, or an aiosfstream ``ReplayMarkerStorage``). A channel of a
    mapping with no marker yet starts from ``default_replay``: new events
    only (-1), or every event the org still holds (-2). With ``manual_markers`` (the
    default) markers move only inside ``async with client.replay_storage(
    message)``; without it, as soon as ``receive`` returns a message.
    """
    context = ssl.create_default_context(cafile=conn.ca_file)
    if isinstance(replay_storage, MutableMapping):
        replay_storage = DefaultMappingStorage(replay_storage, default_replay)
    policy = (
        ReplayMarkerStoragePolicy.MANUAL
        if manual_markers
        else ReplayMarkerStoragePolicy.AUTOMATIC
    )
    return StreamingClient(
        conn,
        replay_storage,
        ssl_context=context,
        replay_storage_policy=policy,
        connection_timeout=connection_timeout,
        max_pending_count=max_pending_count,
    )


__all__ = [
    "ALL_CHANGES",
    "JwtBearerAuthenticator",
    "ReplayOption",
    "StreamingClient",
    "change_channel",
    "streaming_client",
]
