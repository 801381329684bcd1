"""The ``forcelink`` command line.

Each sub-command lives in its own module under ``forcelink.commands`` and
exposes ``register(subparsers)``; this module discovers them, so adding a
command never means editing a central list.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from forcelink import log
from forcelink.errors import ConfigError, ForcelinkError

EPILOG = """\
Start here:
  forcelink run                 sync with the settings in forcelink.yaml
  forcelink emulator            a local Salesforce org for offline work
  forcelink <command> --help    what a command does and its options

Every setting in forcelink.yaml can also come from an environment variable,
e.g. FORCELINK_DATABASE_URL or FORCELINK_EVENTLOG_BACKEND.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forcelink",
        description="Keep Postgres and Salesforce orgs in sync, both ways, "
        "from change data capture.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help="configuration file (default: $FORCELINK_CONFIG or ./forcelink.yaml)",
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR"
    )
    parser.add_argument(
        "--log-json", action="store_true", help="log one JSON object per line"
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>")

    import forcelink.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"forcelink.commands.{info.name}")
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(args.log_level or "INFO", json_output=args.log_json)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"forcelink: {error}", file=sys.stderr)
        return 2
    except ForcelinkError as error:
        print(f"forcelink: error: {log.mask(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("forcelink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
