"""Backfill throughput and memory: local org (Bulk API 2.0) -> Postgres.

    python bench/bench_backfill.py [--records 1000000] [--page-size 50000]
        [--sessions 2] [--repeat 1]

Starts a local org (``forcelink emulator``), seeds ``--records`` Account
records through its admin API, creates a scratch database with the example
Account mapping applied, then runs ``forcelink backfill`` as a separate
process and reports:

* rows per second over the whole command (login, describe, the org's query
  job, every page) and over the page phase alone (from the command's log:
  first page requested to last page merged);
* the peak RSS (``ru_maxrss``) of the backfill process, from ``wait4``.

``--repeat N`` backfills the same seeded org N times, the table emptied in
between, each run printed with the load average: on a shared machine the
spread of a few runs says more than one figure.

Targets: 50,000 rows/s in under 300 MB. Needs FORCELINK_DATABASE_URL; the
scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg

from forcelink.mapping import apply, load_mappings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the local org handle lives with the tests

from tests.support.local_org import LocalOrg  # noqa: E402

SEED_CHUNK = 50_000


def seed(org: LocalOrg, records: int) -> float:
    started = time.monotonic()
    for start in range(0, records, SEED_CHUNK):
        chunk = [
            {
                "Name": f"Account {i}",
                "External_Id__c": f"EXT-{i:08d}",
                "AccountNumber": f"AN{i}",
                "Industry": "Energy",
                "BillingStreet": f"{i} Main Street",
                "BillingCity": "Lyon",
                "BillingPostalCode": "69001",
                "AnnualRevenue": i * 10.25,
                "NumberOfEmployees": i % 5000,
                # One in ten needs the mapping's trim; the others do not.
                "Description": f"{' ' if i % 10 == 0 else ''}a description {i}",
                "Founded__c": "2001-02-03",
                "Regions__c": "North;West",
                "Last_Visit__c": "2025-06-30T12:00:00.000Z",
            }
            for i in range(start, min(start + SEED_CHUNK, records))
        ]
        org.admin(
            "records",
            {
                "sobject": "Account",
                "records": chunk,
                "events": False,
                "return_ids": False,
            },
        )
    return time.monotonic() - started


def scratch_database(base_url: str) -> str:
    name = f"bench_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(base_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_backfill(
    command: list[str], env: dict[str, str]
) -> tuple[int, float, int, str]:
    """(exit status, seconds, peak RSS in KiB, stderr) of the command."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=errors, env=env
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        return process.returncode, seconds, usage.ru_maxrss, errors.read()


def page_phase_seconds(log_text: str) -> float | None:
    """From the job-complete line to the done line, by their timestamps."""
    stamps = {}
    for line in log_text.splitlines():
        for key, marker in (("start", " complete, "), ("end", "backfill done")):
            if marker in line:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    if "start" not in stamps or "end" not in stamps:
        return None
    return (stamps["end"] - stamps["start"]).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument(
        "--sessions", type=int, default=None, help="passed on to the backfill"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="backfill the same seeded org this many times (into an empty table)",
    )
    args = parser.parse_args()
    base_url = os.environ.get("FORCELINK_DATABASE_URL")
    if not base_url:
        print("set FORCELINK_DATABASE_URL (scripts/services.py env)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as workdir:
        org = LocalOrg(Path(workdir))
        org.start()
        url = scratch_database(base_url)
        try:
            return measure(org, url, Path(workdir), args)
        finally:
            org.stop()
            drop_database(base_url, url)


def measure(org: LocalOrg, url: str, workdir: Path, args: argparse.Namespace) -> int:
    mappings = [m for m in load_mappings([ROOT / "mappings"]) if m.object == "Account"]
    apply(url, mappings)
    seeded = seed(org, args.records)
    print(f"seeded {args.records:,} Account records in {seeded:.1f}s")

    config = workdir / "forcelink.yaml"
    config.write_text(
        f"database: {{url: '{url}'}}\n"
        f"orgs:\n  - {{name: local, connection_file: '{org.connection_file}'}}\n"
        f"mappings: ['{ROOT / 'mappings' / 'account.yaml'}']\n"
    )
    command = [
        sys.executable, "-m", "forcelink.cli", "-c", str(config), "backfill",
        "--org", "local", "--no-progress", "--page-size", str(args.page_size),
    ]  # fmt: skip
    if args.sessions is not None:
        command += ["--sessions", str(args.sessions)]
    print(f"command: {shlex.join(command)}")
    env = dict(os.environ, FORCELINK_DATABASE_URL=url)
    failed = 0
    for attempt in range(args.repeat):
        if attempt:  # the same org again, into an empty table
            with psycopg.connect(url) as conn:
                conn.execute("TRUNCATE salesforce.account")
                conn.execute("DELETE FROM forcelink.backfill_progress")
        failed += run_once(command, env, url, args.records)
    return 1 if failed else 0


def run_once(command: list[str], env: dict[str, str], url: str, records: int) -> int:
    """Run the backfill once and print its figures; 1 if it failed."""
    status, seconds, peak_kib, log_text = run_backfill(command, env)
    if status != 0:
        print(log_text, file=sys.stderr)
        return 1

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM salesforce.account").fetchone()
    copied = int(row[0]) if row else 0
    pages = page_phase_seconds(log_text)
    job = re.search(r"job \S+ complete", log_text)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"rows copied: {copied:,} (expected {records:,}); load average {load}")
    print(f"whole command: {seconds:.1f}s, {copied / seconds:,.0f} rows/s")
    if pages:
        print(f"pages phase (after '{job.group(0) if job else 'job'}'): "
              f"{pages:.1f}s, {copied / pages:,.0f} rows/s")  # fmt: skip
    print(f"peak RSS of the backfill process: {peak_kib / 1024:.0f} MB")
    return 0 if copied == records else 1


if __name__ == "__main__":
    sys.exit(main())
