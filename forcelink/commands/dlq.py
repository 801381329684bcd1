"""``forcelink dlq``: see, replay and discard dead letters."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from forcelink import config
from forcelink.processors import deadletters

HELP = """\
A record that fails terminally (Salesforce rejected it, a value does not
convert) is set aside as a dead letter with its error; everything else keeps
flowing. Fix the cause (the row, the mapping, a validation rule), then replay:

  forcelink dlq list                      what is waiting, newest first
  forcelink dlq list --json               one JSON object per line
  forcelink dlq retry 12 13               publish 12 and 13 again, in order
  forcelink dlq retry --all --org acme    every open dead letter of one org
  forcelink dlq drop 14                   give up on 14 (kept as 'discarded')
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dlq",
        help="list, retry or drop dead letters (records that failed terminally)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dlq_command", metavar="<action>", required=True)

    show = sub.add_parser("list", help="dead letters waiting, newest first")
    show.add_argument("--org", help="only this org")
    show.add_argument(
        "--all-states", action="store_true", help="include resolved and discarded ones"
    )
    show.add_argument("--limit", type=int, default=100)
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(func=_list)

    retry = sub.add_parser("retry", help="publish dead letters again")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="every open dead letter")
    retry.add_argument("--org", help="with --all: only this org")
    retry.set_defaults(func=_retry)

    drop = sub.add_parser("drop", help="give up on dead letters (kept as discarded)")
    drop.add_argument("ids", nargs="+", type=int, metavar="ID")
    drop.set_defaults(func=_drop)


def _list(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    states = (
        ("open", "retrying", "resolved", "discarded")
        if args.all_states
        else ("open", "retrying")
    )
    letters = deadletters.list_letters(
        cfg.database.url, org=args.org, states=states, limit=args.limit
    )
    for letter in letters:
        print(
            deadletters.as_json(letter) if args.json else deadletters.describe(letter)
        )
    if not args.json:
        print(f"{len(letters)} dead letter(s)")
    return 0


def _retry(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    ids = list(args.ids)
    if args.all:
        ids += [
            d.id
            for d in deadletters.list_letters(
                cfg.database.url, org=args.org, states=("open",), limit=1_000_000
            )
        ]
    if not ids:
        print("nothing to retry: name dead letter ids, or --all")
        return 2
    sent = asyncio.run(_republish(cfg, ids))
    print(f"republished {sent} dead letter(s)")
    return 0


async def _republish(cfg: config.Config, ids: list[int]) -> int:
    from forcelink.eventlog import open_event_log

    async with open_event_log(cfg) as eventlog:
        return await deadletters.retry(cfg.database.url, eventlog, ids)


def _drop(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    changed = deadletters.drop(cfg.database.url, args.ids)
    print(f"dropped {changed} dead letter(s)")
    return 0
