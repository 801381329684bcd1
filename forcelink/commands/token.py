"""``forcelink token``: print a bearer token for the image API.

The org's signing key is created under ``api.keys_dir`` the first time a
token is asked for; the API verifies with its public half.
"""

from __future__ import annotations

import argparse

from forcelink import config as configuration
from forcelink.api.auth import KeyRing, issue_token
from forcelink.errors import ConfigError

MAX_TTL_SECONDS = 30 * 24 * 3600


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="print a bearer token for the image API",
        description="Print a signed RS256 token naming an org and a user.",
    )
    parser.add_argument("--org", required=True, help="the org the token is for")
    parser.add_argument("--user", required=True, help="who the token speaks for")
    parser.add_argument(
        "--ttl", type=int, default=3600, help="seconds until it expires (3600)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= MAX_TTL_SECONDS:
        raise ConfigError(f"--ttl: between 1 and {MAX_TTL_SECONDS} seconds")
    cfg = configuration.load(args.config)
    keys = KeyRing(cfg.api.keys_dir)
    try:
        token = issue_token(keys, cfg.api, args.org, args.user, args.ttl)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(token)
    return 0
