"""``forcelink emulator``: serve a local Salesforce org over HTTPS.

On start it registers a connected app and an integration user, writes the
CA, the app's private key and ``connection.json`` into ``--tls-dir``, and
prints the path of ``connection.json`` on stdout (one line), so any client
can log in with the JWT bearer flow. See emulator/README.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from forcelink.emulator import schema as schemas
from forcelink.emulator import state, tls
from forcelink.emulator.org import Org
from forcelink.emulator.server import bind, serve
from forcelink.emulator.sessions import DEFAULT_TOKEN_SECONDS
from forcelink.errors import ConfigError

log = logging.getLogger("forcelink.emulator")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local Salesforce org (REST, Bulk, CometD) over HTTPS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=8443, help="port (0: any free port)"
    )
    parser.add_argument(
        "--schema", default=None, help="schema YAML (default: the bundled one)"
    )
    parser.add_argument(
        "--state", default=None, help="keep records and events in this folder"
    )
    parser.add_argument(
        "--tls-dir",
        default=".forcelink/emulator",
        help="folder for the CA, the app key and connection.json",
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="the URL clients should use, when they reach the org through a "
        "proxy (default: https://<host>:<port>)",
    )
    parser.add_argument(
        "--token-seconds",
        type=float,
        default=DEFAULT_TOKEN_SECONDS,
        help="access token lifetime on the org's clock (default 7200)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    org = Org(schemas.load(args.schema), token_seconds=args.token_seconds)
    state_dir = Path(args.state) if args.state else None
    if state_dir is not None:
        state.load(org, state_dir)

    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {error}", key="--port"
        ) from error
    port = sock.getsockname()[1]
    url_host = (
        "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::1") else args.host
    )
    url = (args.public_url or f"https://{url_host}:{port}").rstrip("/")

    hostnames = sorted({"localhost", "127.0.0.1", "::1", args.host})
    material = tls.prepare(Path(args.tls_dir), hostnames)
    org.login_url = org.instance_url = url
    org.register_app(material.client_id, material.public_key_pem)
    org.register_user(material.username)
    tls.write_connection(material, url)

    log.info("local org serving at %s (schema %s)", url, org.schema.source)
    print(material.connection_file.resolve(), flush=True)
    sys.stdout.flush()
    serve(org, sock, material.server_context, state_dir)
    log.info("local org stopped")
    return 0
