"""The emulator's HTTPS server: routes, middleware, startup and shutdown.

``build_app(org)`` wires the OAuth token endpoint, the REST resources, the
admin API, and then the optional modules (query, bulk, cometd), each of
which exposes ``add_routes(app, org)``; a module not written yet is skipped.
``serve(...)`` runs it until SIGINT/SIGTERM, saving state on the way out
(and every few seconds while records change) when a state folder is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from forcelink.emulator import admin, rest, state
from forcelink.emulator.auth import ORG_KEY, api_middleware, token_endpoint
from forcelink.emulator.org import Org

log = logging.getLogger("forcelink.emulator.server")

OPTIONAL_MODULES = (
    "forcelink.emulator.query",
    "forcelink.emulator.bulk",
    "forcelink.emulator.cometd",
)
SAVE_INTERVAL_SECONDS = 2.0
SAVE_MAX_DELAY_SECONDS = 60.0
MAX_BODY_BYTES = 1024**3


def build_app(org: Org) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_BODY_BYTES)
    app[ORG_KEY] = org
    app.router.add_post("/services/oauth2/token", token_endpoint)
    rest.add_routes(app)
    admin.add_routes(app)
    for name in OPTIONAL_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            log.debug("%s is not there yet: its routes are not served", name)
            continue
        module.add_routes(app, org)
    return app


def serve(
    org: Org,
    sock: socket.socket,
    context: ssl.SSLContext,
    state_dir: Path | None,
) -> None:
    """Serve on the bound ``sock`` until a signal stops the process."""
    app = build_app(org)
    if state_dir is not None:
        app[admin.SAVE_KEY] = lambda: state.save(org, state_dir)
        app.cleanup_ctx.append(_persistence(org, state_dir))
    web.run_app(
        app,
        sock=sock,
        ssl_context=context,
        print=None,
        shutdown_timeout=2.0,
        access_log=None,
    )


def _persistence(
    org: Org, directory: Path
) -> Callable[[web.Application], AsyncIterator[None]]:
    # A cleanup context: save periodically while running, and once at exit.
    async def run(app: web.Application) -> AsyncIterator[None]:
        saved = [org.writes, org.journal.latest()]

        async def every_few_seconds() -> None:
            # Save once changes pause for an interval (a save of a large org
            # holds the write lock, so not in the middle of a seeding burst),
            # and at least every SAVE_MAX_DELAY_SECONDS while they go on.
            previous, waited = saved, 0.0
            while True:
                await asyncio.sleep(SAVE_INTERVAL_SECONDS)
                waited += SAVE_INTERVAL_SECONDS
                now = [org.writes, org.journal.latest()]
                quiet = now == previous
                previous = now
                if now != saved and (quiet or waited >= SAVE_MAX_DELAY_SECONDS):
                    await asyncio.to_thread(state.save, org, directory)
                    saved[:] = now
                    waited = 0.0

        task = asyncio.create_task(every_few_seconds())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state.save(org, directory)

    return run


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock
