"""``forcelink status``: one screen per org and mapping, or JSON for scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from forcelink import config as configuration
from forcelink.errors import ConfigError
from forcelink.status import MappingStatus, OrgStatus, Report, collect

HELP = """\
Shows per org and mapping: direction, state, lag, last sync, rows pending
and failed, dead letters waiting, conflicts decided today, and the org's API
allowance as the service last saw it.

Reads the database, and the running service's /metrics and /readyz (found
through --run-file, else metrics.listen) for lag, API numbers and failing
checks. Works with the service down, and says so.

States, worst first: stopped, failing, lagging, errors, ok.
"""

_COLOURS = {
    "ok": "32",
    "errors": "33",
    "lagging": "33",
    "failing": "31",
    "stopped": "31",
    "running": "32",
    "down": "31",
}
_COLUMNS = (
    ("MAPPING", 22),
    ("DIR", 5),
    ("STATE", 7),
    ("LAG", 7),
    ("LAST SYNC", 19),
    ("PENDING", 7),
    ("FAILED", 6),
    ("DLQ", 5),
    ("CONFL.", 6),
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "status",
        help="show sync state, lag and errors per org and mapping",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--org", help="only this org")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--run-file",
        default=".forcelink/run.json",
        help="the running service's run file (default .forcelink/run.json)",
    )
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    cfg = configuration.load(args.config)
    if args.org and args.org not in {o.name for o in cfg.orgs}:
        raise ConfigError(f"--org: no org named {args.org!r}")
    report = collect(cfg, run_file=Path(args.run_file), org=args.org)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(render(report, colour=use_colour(sys.stdout)))
    return 0


def use_colour(stream: TextIO) -> bool:
    """ANSI colours only on a terminal, and never when NO_COLOR is set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def render(report: Report, colour: bool = False) -> str:
    paint = _painter(colour)
    lines = [
        f"forcelink status at {report.generated_at}: service "
        f"{paint(report.service)}"
        + (f" ({report.service_url})" if report.service_url else "")
    ]
    if report.failing_checks:
        lines.append(f"  failing checks: {', '.join(report.failing_checks)}")
    for org in report.orgs:
        lines += ["", *_org_lines(org, paint)]
    return "\n".join(lines) + "\n"


def _org_lines(org: OrgStatus, paint: Any) -> list[str]:
    lines = [f"org {org.name}: {paint(org.state)}  {_api(org)}"]
    lines += [f"  {reason}" for reason in org.reasons]
    header = "  " + " ".join(name.ljust(width) for name, width in _COLUMNS)
    lines.append(header.rstrip())
    for m in org.mappings:
        lines.append("  " + _row(m, paint))
    if not org.mappings:
        lines.append("  (no mappings)")
    return lines


def _row(m: MappingStatus, paint: Any) -> str:
    cells = [
        m.object,
        m.direction,
        m.state,
        _seconds(m.lag_seconds),
        (m.last_sync or "-").replace("T", " ")[:19],
        str(m.pending),
        str(m.failed),
        str(m.dead_letters),
        str(m.conflicts_today),
    ]
    out = []
    for (_, width), cell in zip(_COLUMNS, cells, strict=True):
        padded = cell.ljust(width)
        out.append(paint(cell) + padded[len(cell) :] if cell == m.state else padded)
    return " ".join(out).rstrip()


def _api(org: OrgStatus) -> str:
    if org.api_limit is None or org.api_used is None:
        seen = "API allowance not seen yet"
    else:
        seen = f"API {org.api_used}/{org.api_limit} used, {org.api_remaining} left"
    if org.api_calls is not None:
        seen += f" (forcelink: {org.api_calls} calls)"
    return seen


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _painter(colour: bool) -> Any:
    def paint(word: str) -> str:
        code = _COLOURS.get(word)
        return f"\033[{code}m{word}\033[0m" if colour and code else word

    return paint
