"""Run the image API under uvicorn: ``python -m forcelink.api.server``.

``serve`` blocks until interrupted; tests and benchmarks start it in a thread
or a subprocess on a port of their choosing (``--listen host:port``).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

import uvicorn

from forcelink import config as configuration
from forcelink import log
from forcelink.api.app import create_app
from forcelink.config import Config
from forcelink.errors import ConfigError
from forcelink.health import database_check, mount_on
from forcelink.metrics import METRICS


def free_port(ports: range, host: str = "127.0.0.1") -> int:
    """The first port of ``ports`` nothing listens on (for tests and benches)."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ("127.0.0.1", 8080); ConfigError if malformed."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"must be host:port (got {listen!r})", key="api.listen")
    return host, int(port)


def serve(config: Config, listen: str | None = None, workers: int = 1) -> None:
    """Serve the API alone, with ``/metrics``, ``/healthz`` and ``/readyz`` beside it.

    Inside ``forcelink run`` those three live on ``metrics.listen`` instead.
    """
    host, port = split_listen(listen or config.api.listen)
    app = create_app(config)
    mount_on(app, METRICS.registry, {"database": database_check(config.database.url)})
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        workers=workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the forcelink image API.")
    parser.add_argument("-c", "--config", default=None)
    parser.add_argument("--listen", default=None, help="host:port (api.listen)")
    args = parser.parse_args(argv)
    cfg = configuration.load(args.config)
    log.setup(cfg.logging.level, json_output=cfg.logging.json)
    try:
        serve(cfg, args.listen)
    except ConfigError as error:
        print(f"forcelink: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
