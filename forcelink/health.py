"""``/metrics``, ``/healthz`` and ``/readyz`` for every forcelink process.

``/healthz`` answers 200 while the process can answer at all: it is the
liveness probe, and it checks nothing else on purpose (a database outage must
not get a healthy process restarted). ``/readyz`` runs the readiness checks
(database, event log, org tokens) and answers 200 when all pass, 503 naming
the failing ones otherwise. The body carries each check's state and, for a
failure, only the error's class name: error messages can hold a DSN or a
token, so they go to the log (whose handlers mask registered secrets), never
into a response.

A check is a callable that returns when the thing it checks works and raises
when not. Checks run in parallel, each bounded by ``CHECK_TIMEOUT_SECONDS``;
one that has not answered by then counts as failed ("Timeout"). The probe
stops waiting but cannot stop the check's thread, so a check must bound its
own I/O (a connect timeout) or hung probes will pile threads up.

Two ways to serve them: ``serve()`` starts a small threaded HTTP server of its
own (for processes without a web framework), ``mount_on()`` adds the same
three routes to a FastAPI app.

Run ``python -m forcelink.health --listen 127.0.0.1:9400 [--config FILE]`` for
a stand-alone server publishing build and config info, with a database check.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from forcelink.errors import ConfigError, SourceUnavailable

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("forcelink.health")

CHECK_TIMEOUT_SECONDS = 5.0

Check = Callable[[], None]


def metrics_payload(
    registry: CollectorRegistry, accept: str | None
) -> tuple[bytes, str]:
    """The exposition of ``registry`` in the format the scraper asked for
    (OpenMetrics when its Accept header says so, else the text format)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def readiness(
    checks: Mapping[str, Check], timeout: float = CHECK_TIMEOUT_SECONDS
) -> tuple[bool, dict[str, Any]]:
    """Run every check in parallel; return (ready, body for ``/readyz``)."""
    if not checks:
        return True, {"status": "ready", "checks": {}}
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=timeout)
    # A hung check keeps its thread; not waiting for it keeps the probe bounded.
    pool.shutdown(wait=False, cancel_futures=True)

    results: dict[str, str] = {}
    for name, future in futures.items():
        results[name] = _outcome(name, future)
    failing = sorted(name for name, state in results.items() if state != "ok")
    body: dict[str, Any] = {
        "status": "not ready" if failing else "ready",
        "checks": results,
    }
    if failing:
        body["failing"] = failing
    return not failing, body


def _outcome(name: str, future: Future[None]) -> str:
    if not future.done():
        logger.warning("readiness check %s did not answer in time", name)
        return "failed: Timeout"
    error = future.exception()
    if error is None:
        return "ok"
    logger.warning("readiness check %s failed: %s", name, error)
    return f"failed: {type(error).__name__}"


@dataclass
class ServerHandle:
    """A running ``serve()`` server; ``close()`` stops it and frees the port."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        logger.info("health server on %s stopped", self.url)


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9400"``, ``"[::1]:9400"`` or ``":9400"`` (all addresses)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"listen address {listen!r} is not host:port", key="metrics.listen"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(
    listen: str,
    registry: CollectorRegistry,
    readiness_checks: Mapping[str, Check] | None = None,
    check_timeout: float = CHECK_TIMEOUT_SECONDS,
) -> ServerHandle:
    """Serve the three endpoints on ``listen`` from a daemon thread.

    Port 0 picks a free port (read it from the handle). Raises ConfigError
    when the address is malformed or cannot be bound.
    """
    host, port = parse_listen(listen)
    handler = _handler_class(registry, dict(readiness_checks or {}), check_timeout)
    server_class = _server_class(host)
    try:
        server = server_class((host, port), handler)
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {listen}: {error.strerror}", key="metrics.listen"
        ) from error
    # A short poll interval keeps close() quick; idle cost is negligible.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="forcelink-health",
        daemon=True,
    )
    thread.start()
    handle = ServerHandle(server, thread)
    logger.info("serving /metrics, /healthz, /readyz on %s", handle.url)
    return handle


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server


def _handler_class(
    registry: CollectorRegistry, checks: dict[str, Check], check_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "forcelink"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                payload, content_type = metrics_payload(
                    registry, self.headers.get("Accept")
                )
                self._send(HTTPStatus.OK, payload, content_type)
            elif path == "/healthz":
                self._send_json(HTTPStatus.OK, {"status": "alive"})
            elif path == "/readyz":
                ready, body = readiness(checks, check_timeout)
                status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
                self._send_json(status, body)
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            payload = json.dumps(body, sort_keys=True).encode()
            self._send(status, payload, "application/json")

        def _send(self, status: HTTPStatus, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # One line per scrape would drown the lifecycle lines: DEBUG only.
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler


def mount_on(
    app: FastAPI,
    registry: CollectorRegistry,
    checks: Mapping[str, Check] | None = None,
    check_timeout: float = CHECK_TIMEOUT_SECONDS,
) -> None:
    """Add ``/metrics``, ``/healthz`` and ``/readyz`` to a FastAPI app.

    The routes are plain ``def`` functions, so FastAPI runs the (blocking)
    checks in its thread pool rather than on the event loop.
    """
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request

    bound = dict(checks or {})

    # A Starlette route (not a FastAPI one): it gets the request positionally,
    # so its annotation need not resolve in this module's globals.
    async def metrics(request: Request) -> Response:
        payload, content_type = await run_in_threadpool(
            metrics_payload, registry, request.headers.get("accept")
        )
        return Response(payload, media_type=content_type)

    def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    def readyz() -> JSONResponse:
        ready, body = readiness(bound, check_timeout)
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)


def database_check(url: str, timeout: float = 3.0) -> Check:
    """A readiness check that opens a connection to ``url`` and runs SELECT 1."""

    def check() -> None:
        import psycopg

        try:
            with psycopg.connect(url, connect_timeout=max(int(timeout), 1)) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:
            raise SourceUnavailable("database not reachable") from error

    return check


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone server: build and config info plus a database check."""
    import time

    from forcelink import config as config_module
    from forcelink import log
    from forcelink.metrics import METRICS

    parser = argparse.ArgumentParser(prog="python -m forcelink.health")
    parser.add_argument("--listen", default=None, help="host:port (default: config)")
    parser.add_argument("--config", default=None, help="forcelink.yaml to read")
    args = parser.parse_args(argv)

    try:
        config = config_module.load(args.config)
        log.setup(config.logging.level, json_output=config.logging.json)
        METRICS.set_config(config)
        for org in config.orgs:
            METRICS.declare_org(org.name)
        checks = {"database": database_check(config.database.url)}
        handle = serve(args.listen or config.metrics.listen, METRICS.registry, checks)
    except ConfigError as error:
        print(f"forcelink health: {error}", file=sys.stderr)
        return 2
    print(f"forcelink health: listening on {handle.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        handle.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
