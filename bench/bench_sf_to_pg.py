"""Delay from a Salesforce commit to the Postgres row, at a steady rate.

    python bench/bench_sf_to_pg.py [--rate 200] [--seconds 30] [--backend embedded]

Starts the local org (``forcelink emulator``) and ``forcelink run`` as real
processes on the project's Postgres (``scripts/services.py`` must be up; the
database comes from FORCELINK_DATABASE_URL). A client then updates Accounts
through sObject collections at ``--rate`` changes per second, each change
carrying its send time. A trigger on the mapped table stamps each applied
change with ``clock_timestamp()``. Two delays are printed: from the commit
in the org (the row's ``systemmodstamp`` is the event's commit time) to the
row, which is the figure the brief's target is about, and from just before
the REST call to the row, which adds the org's own answer time. p50, p90,
p99 and max of each.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forcelink.mapping import apply, load_mappings  # noqa: E402
from tests.sf_to_pg.test_crash import collection, free_port  # noqa: E402
from tests.support.local_org import LocalOrg  # noqa: E402

RECORDS = 200
BATCH = 20


def fresh_database(base: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + f"/{name}"


def prepare(database_url: str) -> None:
    apply(database_url, load_mappings([ROOT / "mappings"]))
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            CREATE TABLE applied (
                sent_ns bigint, committed_at timestamptz, applied_at timestamptz
            );
            CREATE FUNCTION stamp_applied() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.description LIKE 'sent:%' THEN
                INSERT INTO applied VALUES (substr(NEW.description, 6)::bigint,
                                            NEW.systemmodstamp, clock_timestamp());
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER stamp_applied AFTER UPDATE ON salesforce.account
              FOR EACH ROW EXECUTE FUNCTION stamp_applied();
            ALTER TABLE salesforce.account ENABLE ALWAYS TRIGGER stamp_applied;
            """
        )


def start_service(
    workdir: Path, database_url: str, org: LocalOrg, backend: str
) -> subprocess.Popen[bytes]:
    config = workdir / "forcelink.yaml"
    kafka = os.environ.get(
        "FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS", "localhost:54321"
    )
    config.write_text(
        f"database:\n  url: {database_url}\n"
        f"eventlog:\n  backend: {backend}\n  kafka:\n    bootstrap_servers: {kafka}\n"
        f"    topic_prefix: bench{uuid.uuid4().hex[:6]}.\n"
        f"orgs:\n  - name: local\n    connection_file: {org.connection_file}\n"
        f"mappings:\n  - {ROOT / 'mappings'}/*.yaml\n"
        f"images:\n  local_dir: {workdir / 'images'}\n"
        f"api:\n  listen: 127.0.0.1:{free_port()}\n  keys_dir: {workdir / 'keys'}\n"
        f"metrics:\n  listen: 127.0.0.1:{free_port()}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forcelink.cli",
            "-c",
            str(config),
            "--log-level",
            "WARNING",
            "run",
            "--run-file",
            str(workdir / "run.json"),
        ],
        env=env,
        start_new_session=True,
    )


def drive(sf: object, ids: list[str], rate: float, seconds: float) -> int:
    """Send ``rate`` changes/s for ``seconds``; return how many were sent."""
    interval = BATCH / rate
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + (sent // BATCH) * interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        chunk = [ids[(sent + i) % len(ids)] for i in range(BATCH)]
        stamp = time.time_ns()
        collection(
            sf,
            [
                {
                    "attributes": {"type": "Account"},
                    "Id": i,
                    "Description": f"sent:{stamp}",
                }
                for i in chunk
            ],
            "PATCH",
        )
        sent += BATCH
    return sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backend", default="embedded", choices=["embedded", "kafka"])
    args = parser.parse_args()
    base = os.environ.get("FORCELINK_DATABASE_URL")
    if not base:
        raise SystemExit("run scripts/services.py up and eval its env first")

    database_url = fresh_database(base)
    prepare(database_url)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "org").mkdir()
        org = LocalOrg(workdir / "org")
        org.start()
        service = start_service(workdir, database_url, org, args.backend)
        try:
            sf = org.salesforce(client_tag="bench")
            ids = [
                r["id"]
                for r in collection(
                    sf,
                    [
                        {"attributes": {"type": "Account"}, "Name": f"Bench {i}"}
                        for i in range(RECORDS)
                    ],
                    "POST",
                )[:RECORDS]
            ]
            time.sleep(5)
            sent = drive(sf, ids, args.rate, args.seconds)
            time.sleep(5)
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=60)
            org.stop()

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT sent_ns, committed_at, applied_at FROM applied"
        ).fetchall()
    print(
        f"command: python bench/bench_sf_to_pg.py --rate {args.rate:g} "
        f"--seconds {args.seconds:g} --backend {args.backend}"
    )
    print(f"changes sent {sent}, applied {len(rows)}")
    from_commit = [(a - c).total_seconds() for _, c, a in rows]
    from_send = [(a.timestamp() * 1e9 - s) / 1e9 for s, _, a in rows]
    for label, delays in (
        ("org commit -> row", from_commit),
        ("REST send  -> row", from_send),
    ):
        if delays:
            p50, p90, p99 = (percentile(delays, q) for q in (0.5, 0.9, 0.99))
            print(
                f"{label}: p50 {p50:.3f} s  p90 {p90:.3f} s  p99 {p99:.3f} s  "
                f"max {max(delays):.3f} s  mean {statistics.fmean(delays):.3f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
