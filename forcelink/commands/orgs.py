"""``forcelink orgs``: register an org (after one good login), list, remove.

``add`` proves the settings by logging in with the JWT bearer flow before it
stores anything; a refused login prints the org's own words on one line,
e.g. ``forcelink: error: invalid_grant: user hasn't approved this consumer``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from forcelink import config as configuration
from forcelink import orgs
from forcelink.connector.salesforce.auth import (
    DEFAULT_API_VERSION,
    OrgConnection,
    fetch_token,
)
from forcelink.errors import ConfigError, ForcelinkError
from forcelink.log import mask


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "orgs",
        help="add, list or remove Salesforce org connections",
        description="Manage the orgs forcelink syncs: those of forcelink.yaml "
        "and those registered in the database with `orgs add`.",
    )
    sub = parser.add_subparsers(dest="orgs_command", metavar="<action>")
    _add_parser(sub)
    listing = sub.add_parser("list", help="show configured and registered orgs")
    listing.add_argument(
        "--check", action="store_true", help="log in to each org and say if it works"
    )
    listing.set_defaults(func=_list)
    remove = sub.add_parser("remove", help="forget a registered org")
    remove.add_argument("name")
    remove.set_defaults(func=_remove)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _add_parser(sub: Any) -> None:
    add = sub.add_parser(
        "add",
        help="log in once, then register the org",
        description="Log in with the JWT bearer flow to prove the settings, "
        "then store them (the key's path, never its content) in forcelink.orgs.",
    )
    add.add_argument("name", help="the name mappings and commands use (--org)")
    add.add_argument(
        "--connection-file", help="connection.json as `forcelink emulator` writes"
    )
    add.add_argument("--login-url", help="e.g. https://login.salesforce.com")
    add.add_argument("--client-id", help="the connected app's consumer key")
    add.add_argument("--username", help="the integration user")
    add.add_argument("--private-key", help="PEM file of the connected app's key")
    add.add_argument("--ca-file", help="CA bundle to trust for this org")
    add.add_argument("--api-version", default=None, help="default 60.0")
    add.set_defaults(func=_add)


def _connection(args: argparse.Namespace) -> OrgConnection:
    """The settings from --connection-file, overridden by explicit flags."""
    base = (
        OrgConnection.from_file(args.connection_file) if args.connection_file else None
    )
    values = {
        "login_url": args.login_url or (base.login_url if base else None),
        "client_id": args.client_id or (base.client_id if base else None),
        "username": args.username or (base.username if base else None),
        "private_key_file": args.private_key
        or (base.private_key_file if base else None),
    }
    missing = [f"--{k.replace('_', '-')}" for k, v in values.items() if not v]
    if missing:
        flags = ", ".join(m.replace("private-key-file", "private-key") for m in missing)
        raise ConfigError(f"orgs add: missing {flags} (or give --connection-file)")
    return OrgConnection(
        login_url=str(values["login_url"]).rstrip("/"),
        client_id=str(values["client_id"]),
        username=str(values["username"]),
        private_key_file=str(values["private_key_file"]),
        instance_url=base.instance_url if base else None,
        ca_file=args.ca_file or (base.ca_file if base else None),
        api_version=args.api_version
        or (base.api_version if base else DEFAULT_API_VERSION),
    )


def _add(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    conn = _connection(args)
    if any(org.name == args.name for org in settings.orgs):
        print(
            f"forcelink: warning: {settings.source} also defines org {args.name}; "
            "its settings win over the registry",
            file=sys.stderr,
        )
    token = orgs.register(settings.database.url, args.name, conn)
    print(f"org {args.name} added: {token.instance_url} as {conn.username}")
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    rows = [["NAME", "SOURCE", "INSTANCE", "USER"] + (["LOGIN"] if args.check else [])]
    failed = 0
    for entry in orgs.known_orgs(settings):
        org = entry.config
        try:
            conn = OrgConnection.from_config(org)
        except ConfigError as error:
            rows.append([org.name, entry.source, "-", "-", f"bad settings: {error}"])
            failed += 1
            continue
        instance = entry.instance_url or conn.instance_url or "-"
        row = [org.name, entry.source, instance, conn.username]
        if args.check:
            status = _check(conn)
            failed += status != "ok"
            row.append(status)
        rows.append(row)
    _print_table(rows)
    return 1 if failed else 0


def _check(conn: OrgConnection) -> str:
    try:
        fetch_token(conn)
    except ForcelinkError as error:
        return f"failed: {mask(error.message)}"
    return "ok"


def _print_table(rows: list[list[str]]) -> None:
    count = max(len(row) for row in rows)
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(count)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip())


def _remove(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    if not orgs.unregister(settings.database.url, args.name):
        raise ConfigError(f"orgs remove: no registered org named {args.name!r}")
    print(f"org {args.name} removed from the registry")
    return 0
