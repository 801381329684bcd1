"""``forcelink verify``: show record by record whether both sides agree.

Counts first, then every compared field of every record
(``processors/verify.py``). Exit status: 0 both sides agree, 1 they differ
(after ``--repair``: what is still different once the repair is done).

``--repair`` takes Salesforce's version of every record both sides know
(re-read through the Salesforce→Postgres applier) and sends the rows that
never reached Salesforce (``forcelink push``); then it verifies again.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from forcelink import config as configuration
from forcelink import orgs, topics
from forcelink.commands.backfill import _mappings as org_mappings
from forcelink.config import Config
from forcelink.connector.salesforce.backfill import OrgApi
from forcelink.connector.salesforce.writer import SalesforceWriter
from forcelink.mapping import Mapping
from forcelink.processors.push import push
from forcelink.processors.sf_to_pg import SalesforceToPostgres
from forcelink.processors.verify import (
    ObjectReport,
    Repairer,
    applier_repairer,
    verify_mapping,
)

SHOWN = 20
"""Difference lines printed per object (all are counted)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="compare Postgres and Salesforce record by record",
        description="Compare counts, then every mapped field of every record, "
        "between the org and the mapped tables. Exit 1 when they differ.",
    )
    parser.add_argument("--org", required=True, help="org name (config or registry)")
    parser.add_argument(
        "--object",
        action="append",
        dest="objects",
        metavar="OBJ",
        help="only this object (repeatable); default: every mapping of the org",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="re-read differing records from the org, push rows it lacks",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument(
        "--show", type=int, default=SHOWN, help=f"lines per object (default {SHOWN})"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = configuration.load(args.config)
    entry = orgs.find(settings, args.org)
    conn = orgs.connection_for(settings, args.org)
    api = OrgApi(args.org, conn, entry.config.client_tag)
    mappings = org_mappings(settings, api, args.org, args.objects)
    url = settings.database.url
    if args.repair:
        handler = SalesforceToPostgres(
            org=args.org,
            mappings=mappings,
            database_url=url,
            connection=conn,
            client_tag=entry.config.client_tag,
        )
        try:
            _verify_all(url, api, mappings, applier_repairer(handler))
        finally:
            handler.close()
        _push_unsent(settings, entry.config, mappings)
    reports = _verify_all(url, api, mappings, None)
    _print(args, reports)
    return 0 if all(r.clean for r in reports) else 1


def _verify_all(
    url: str, api: OrgApi, mappings: list[Mapping], repair: Repairer | None
) -> list[ObjectReport]:
    return [verify_mapping(url, api, m, repair=repair) for m in mappings]


def _push_unsent(settings: Config, org: Any, mappings: list[Mapping]) -> None:
    """Rows without an sfid, for mappings that write to Salesforce by upsert."""
    writer = SalesforceWriter.for_org(org)
    topic = topics.PG_CHANGES
    for mapping in mappings:
        if mapping.mode != "read_only" and mapping.upsert_key:
            push(settings.database.url, writer, mapping, topic=topic)


def _print(args: argparse.Namespace, reports: list[ObjectReport]) -> None:
    if args.json:
        document = {
            "org": args.org,
            "clean": all(r.clean for r in reports),
            "objects": [r.as_json() for r in reports],
        }
        print(json.dumps(document, indent=2))
        return
    for report in reports:
        state = "same" if report.clean else "DIFFERENT"
        print(
            f"{report.object} ({report.table}): {state}; Salesforce"
            f" {report.salesforce_count}, Postgres {report.postgres_count};"
            f" {report.missing_in_postgres} missing in Postgres,"
            f" {report.missing_in_salesforce} missing in Salesforce,"
            f" {report.differing_records} differing record(s)"
            f" ({report.differing_fields} field(s))"
        )
        for difference in report.differences[: args.show]:
            print(f"  {difference.line()}")
        hidden = report.lines - min(len(report.differences), args.show)
        if hidden > 0:
            print(f"  ... and {hidden} more")
