"""``forcelink mappings``: validate, apply and diff the YAML field mappings.

Fields are checked against each org's describe when the org answers, else
(or with ``--offline``) against an emulator schema file, which holds the
same information. Columns are checked against the database when it
answers. Every problem is one line, ``file:line: message``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from forcelink import config
from forcelink.config import Config, OrgConfig
from forcelink.errors import ConfigError, ForcelinkError, SourceUnavailable
from forcelink.mapping import Mapping, apply, check_mappings, diff
from forcelink.mapping.ddl import check_database
from forcelink.mapping.describe import (
    Describe,
    DescribeProvider,
    OrgDescribe,
    SchemaDescribe,
)

log = logging.getLogger("forcelink.mapping")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "mappings",
        help="validate, apply or diff the field mappings (mappings/*.yaml)",
        description="Check mapping files against the org and the database, create "
        "or alter the mapped tables, or show the SQL that would change them.",
    )
    sub = parser.add_subparsers(dest="mappings_command", metavar="<action>")
    actions = {
        "validate": (_validate, "check the files (org describe, database columns)"),
        "apply": (_apply, "create or alter the mapped tables; record the versions"),
        "diff": (_diff, "print the SQL apply would run"),
    }
    for name, (func, text) in actions.items():
        action = sub.add_parser(name, help=text, description=text)
        action.add_argument(
            "files", nargs="*", help="mapping files or folders (default: config)"
        )
        action.add_argument(
            "--offline",
            action="store_true",
            help="check fields against the schema file only, not the org",
        )
        action.add_argument(
            "--schema",
            default=None,
            help="emulator schema file for offline checks (default: its default)",
        )
        action.add_argument(
            "--database-url", default=None, help="default: database.url of the config"
        )
        if name != "validate":
            action.add_argument(
                "--allow-drop",
                action="store_true",
                help="drop unmapped columns and narrow types even if they hold data",
            )
        action.set_defaults(func=func)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _validate(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    mappings, errors = _check(args, settings)
    lines = [str(e) for e in errors]
    url = args.database_url or settings.database.url
    if not errors:
        lines += _database_problems(url, mappings)
    for line in lines:
        print(line)
    if lines:
        print(f"{len(lines)} problem(s)", file=sys.stderr)
        return 1
    print(f"{len(mappings)} mapping(s) ok", file=sys.stderr)
    return 0


def _apply(args: argparse.Namespace) -> int:
    url, mappings = _load(args)
    done = apply(url, mappings, allow_drop=args.allow_drop)
    for statement in done:
        print(statement)
    print(f"{len(mappings)} mapping(s) applied, {len(done)} change(s)", file=sys.stderr)
    return 0


def _diff(args: argparse.Namespace) -> int:
    url, mappings = _load(args)
    for line in diff(url, mappings, allow_drop=args.allow_drop):
        print(line)
    return 0


def _load(args: argparse.Namespace) -> tuple[str, list[Mapping]]:
    """The database URL and the checked mappings; ConfigError lists the problems."""
    settings = config.load(args.config)
    mappings, errors = _check(args, settings)
    if errors:
        raise ConfigError("\n".join(str(e) for e in errors))
    return args.database_url or settings.database.url, mappings


def _check(
    args: argparse.Namespace, settings: Config
) -> tuple[list[Mapping], list[ConfigError]]:
    paths = args.files or _relative(settings)
    offline = SchemaDescribe(args.schema)
    providers: dict[str | None, DescribeProvider] = {None: offline}
    if not args.offline:
        for org in settings.orgs:
            providers[org.name] = _LiveDescribe(org, offline)
    return check_mappings(paths, providers)


def _relative(settings: Config) -> list[str]:
    """The config's mapping globs, relative to the config file's folder."""
    base = Path(settings.source).parent if settings.source else Path()
    return [p if Path(p).is_absolute() else str(base / p) for p in settings.mappings]


def _database_problems(url: str, mappings: list[Mapping]) -> list[str]:
    """``file:line:`` lines for changes apply would refuse; none if unreachable."""
    lines: list[str] = []
    try:
        for mapping in mappings:
            for line, reason in check_database(url, mapping):
                lines.append(f"{mapping.file}:{line}: {reason}")
    except SourceUnavailable as error:
        log.warning("database not reachable, columns not checked: %s", error)
    return lines


class _LiveDescribe:
    """Asks the org on first use; falls back to the schema file if it can't."""

    def __init__(self, org: OrgConfig, fallback: SchemaDescribe) -> None:
        self.org = org
        self.fallback = fallback
        self._provider: DescribeProvider | None = None
        self.object_names: list[str] = []

    def __call__(self, name: str) -> Describe | None:
        if self._provider is None:
            self._provider = self._connect()
            self.object_names = list(getattr(self._provider, "object_names", []))
        return self._provider(name)

    def _connect(self) -> DescribeProvider:
        from forcelink.connector.salesforce.auth import (
            OrgConnection,
            fetch_token,
            salesforce_client,
        )

        try:
            connection = OrgConnection.from_config(self.org)
            token = fetch_token(connection)
            client = salesforce_client(connection, token, self.org.client_tag)
            provider = OrgDescribe(client)
        except (ForcelinkError, OSError) as error:
            log.warning(
                "org %s not reachable (%s): checking against the schema file",
                self.org.name,
                error,
            )
            return self.fallback
        log.info("checking mappings of org %s against its describe", self.org.name)
        return provider
