"""``forcelink config``: check and show the configuration."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from forcelink import config


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "config",
        help="check or show the configuration (forcelink.yaml + FORCELINK_* env)",
        description="Load forcelink.yaml, apply FORCELINK_* environment overrides "
        "and report the first problem as file:line: key: message.",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="<action>")
    check = sub.add_parser("check", help="validate and exit 0 if the file is good")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the effective settings as JSON")
    show.set_defaults(func=_show)
    ref = sub.add_parser(
        "reference", help="print every setting with its variable, as a Markdown table"
    )
    ref.set_defaults(func=_reference)
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    loaded = config.load(args.config)
    print(
        f"{loaded.source}: ok ({len(loaded.orgs)} org(s), "
        f"event log {loaded.eventlog.backend})"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    loaded = config.load(args.config)
    print(json.dumps(dataclasses.asdict(loaded), indent=2))
    return 0


def reference_table() -> str:
    """The README's configuration table (a test keeps the README equal to it)."""
    lines = ["| key | environment variable | default |", "|---|---|---|"]
    for key, env, default in config.reference():
        lines.append(f"| `{key}` | `{env}` | `{default}` |")
    return "\n".join(lines)


def _reference(args: argparse.Namespace) -> int:
    print(reference_table())
    return 0
