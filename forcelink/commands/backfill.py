"""``forcelink backfill``: copy an org's existing records into the mapped tables.

Resumable: Ctrl-C, a crash or an exhausted API allowance leaves the position
in ``forcelink.backfill_progress``, and running the same command again
continues from there (``--restart`` starts over). Exit status: 0 done, 1
error, 3 stopped to keep the API reserve (rerun later to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forcelink import config as configuration
from forcelink import orgs
from forcelink.config import Config
from forcelink.connector.salesforce.backfill import (
    MERGE_SESSIONS,
    PAGE_RECORDS,
    BackfillStopped,
    Options,
    OrgApi,
    backfill,
)
from forcelink.errors import ConfigError
from forcelink.mapping import Mapping, load_mappings, org_describe, schema_describe

log = logging.getLogger("forcelink.connector.salesforce.backfill")

EXIT_STOPPED = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="copy an org's existing records into Postgres (Bulk API 2.0)",
        description="Copy every record of the org's mapped objects into their "
        "tables with Bulk API 2.0 query jobs and COPY; resumable after a crash.",
    )
    parser.add_argument("--org", required=True, help="org name (config or registry)")
    parser.add_argument(
        "--object",
        action="append",
        dest="objects",
        metavar="OBJ",
        help="only this object (repeatable); default: every readable mapping",
    )
    parser.add_argument(
        "--since",
        type=_timestamp,
        help="only records with SystemModstamp at or after this ISO 8601 time",
    )
    parser.add_argument(
        "--restart", action="store_true", help="forget the stored position, start over"
    )
    parser.add_argument(
        "--api-reserve",
        type=int,
        default=None,
        help="API calls to leave unused (default: 10%% of the daily limit)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=PAGE_RECORDS,
        help=f"records per result page (default {PAGE_RECORDS})",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=MERGE_SESSIONS,
        help=f"Postgres sessions merging pages at once (default {MERGE_SESSIONS})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--database-url", default=None, help="default: the config's")
    parser.set_defaults(func=run)


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-01-31T00:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    if args.page_size < 1:
        raise ConfigError("--page-size must be at least 1")
    if args.sessions < 1:
        raise ConfigError("--sessions must be at least 1")
    entry = orgs.find(settings, args.org)
    api = OrgApi(
        args.org, orgs.connection_for(settings, args.org), entry.config.client_tag
    )
    mappings = _mappings(settings, api, args.org, args.objects)
    options = Options(
        since=args.since,
        restart=args.restart,
        page_records=args.page_size,
        api_reserve=args.api_reserve,
        sessions=args.sessions,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    url = args.database_url or settings.database.url
    try:
        results = backfill(url, api, mappings, options)
    except BackfillStopped as error:
        print(f"forcelink: backfill stopped: {error}", file=sys.stderr)
        return EXIT_STOPPED
    for result in results:
        extra = f", {result.rejected} record(s) left out" if result.rejected else ""
        print(f"{result.object}: {result.state}, {result.rows} rows{extra}")
    return 0


def _mappings(
    settings: Config, api: OrgApi, org: str, objects: list[str] | None
) -> list[Mapping]:
    """The org's mappings, checked against its live describe."""
    base = Path(settings.source).parent if settings.source else Path()
    paths = [p if Path(p).is_absolute() else str(base / p) for p in settings.mappings]
    describers = {org: org_describe(api.client), None: schema_describe()}
    found = [m for m in load_mappings(paths, describers) if m.org == org]
    if objects:
        wanted = {name.lower() for name in objects}
        unknown = wanted - {m.object.lower() for m in found}
        if unknown:
            raise ConfigError(
                f"--object: no mapping of org {org} for {', '.join(sorted(unknown))}"
            )
        found = [m for m in found if m.object.lower() in wanted]
    if not found:
        raise ConfigError(f"no mappings for org {org}", file=settings.source)
    return found
