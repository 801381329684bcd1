"""``forcelink push``: send rows that have no sfid yet (a reverse backfill).

Rows written before forcelink's replication slot existed never pass through
the change stream. This sends them with Bulk API 2.0 upserts on the
mapping's external id and writes the sfids back (``processors/push.py``).
Resumable: rows that got their sfid are skipped by the next run. Exit
status: 0 every row sent, 1 some rows failed (``_sync_state='failed'``,
dead letters written; see ``forcelink dlq list``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from forcelink import config as configuration
from forcelink import orgs, topics
from forcelink.commands.backfill import _mappings as org_mappings
from forcelink.connector.salesforce.backfill import OrgApi
from forcelink.connector.salesforce.writer import SalesforceWriter
from forcelink.errors import ConfigError
from forcelink.mapping import Mapping
from forcelink.processors.push import CHUNK_ROWS, count_unsent, push


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="send rows without an sfid to Salesforce (Bulk API 2.0 upsert)",
        description="Send the rows of a mapped table that have no sfid (written "
        "before forcelink's slot existed) with Bulk API 2.0 upserts on the "
        "mapping's external id, and write the sfids back. Resumable.",
    )
    parser.add_argument("--org", required=True, help="org name (config or registry)")
    parser.add_argument(
        "--table", required=True, help="mapped table: account or salesforce.account"
    )
    parser.add_argument(
        "--include-failed",
        action="store_true",
        help="send rows marked failed again too (default: skip them)",
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=CHUNK_ROWS,
        help=f"rows per Bulk job (default {CHUNK_ROWS})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    if args.chunk < 1:
        raise ConfigError("--chunk must be at least 1")
    entry = orgs.find(settings, args.org)
    api = OrgApi(
        args.org, orgs.connection_for(settings, args.org), entry.config.client_tag
    )
    mapping = find_table(org_mappings(settings, api, args.org, None), args.table)
    url = settings.database.url
    topic = topics.PG_CHANGES
    total = count_unsent(url, mapping, args.include_failed)
    show = not args.no_progress and sys.stderr.isatty()
    with tqdm(total=total, unit="row", disable=not show, desc=mapping.object) as bar:
        result = push(
            url,
            SalesforceWriter.for_org(entry.config),
            mapping,
            topic=topic,
            chunk_rows=args.chunk,
            include_failed=args.include_failed,
            progress=bar.update,
        )
    print(
        f"{result.object}: {result.sent} row(s) sent, {result.created} created,"
        f" {result.updated} updated, {result.failed} failed"
        f" ({result.jobs} Bulk job(s))"
    )
    return 1 if result.failed else 0


def find_table(mappings: list[Mapping], table: str) -> Mapping:
    """The mapping of ``table`` (``account`` or ``salesforce.account``)."""
    wanted = table.lower()
    for mapping in mappings:
        if wanted in (mapping.table.lower(), mapping.table_name.lower()):
            return mapping
    known = ", ".join(m.table for m in mappings) or "none"
    raise ConfigError(
        f"--table {table}: no mapping of this org for it (known: {known})"
    )
