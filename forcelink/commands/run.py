"""``forcelink run``: sync until stopped."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from forcelink import config, log

HELP = """\
Runs everything forcelink.yaml calls for, until Ctrl-C or SIGTERM:

  Salesforce CDC  -> event log -> Postgres     (per org, mappings that read)
  Postgres WAL    -> event log -> Salesforce   (mappings that write)
  the image API on api.listen, /metrics /healthz /readyz on metrics.listen

Where it listens is written to --run-file (default .forcelink/run.json).
A component that loses its source (org, database, broker) is restarted with
backoff while the others go on; a bug stops the process with status 1.
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="sync both ways and serve the API until stopped",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run-file",
        default=".forcelink/run.json",
        help="where to write what runs and where it listens",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from forcelink.runner import Runner

    cfg = config.load(args.config)
    log.setup(
        args.log_level or cfg.logging.level,
        json_output=args.log_json or cfg.logging.json,
    )
    return asyncio.run(Runner(cfg, Path(args.run_file)).serve())
