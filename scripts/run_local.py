#!/usr/bin/env python3
"""``make run``: the whole main job on one machine, on embedded defaults.

1. start the project's private Postgres (scripts/services.py, Postgres only:
   the embedded event log lives in it, so no Kafka is needed);
2. start the local Salesforce org (``forcelink emulator``) with its state and
   TLS material under ``.forcelink/org``;
3. write ``.forcelink/forcelink.yaml`` pointing forcelink at both;
4. seed a few demo records into the org when it is empty, then create the
   mapped tables from ``mappings/*.yaml`` (``forcelink mappings apply``);
5. backfill the local org into Postgres (``forcelink backfill``);
6. run ``forcelink run`` (capture, sync both ways, API, metrics) until Ctrl-C.

``forcelink run`` writes ``.forcelink/run.json`` (database URL, the org's
connection file, API and metrics URLs) for people and scripts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".forcelink"
ORG_DIR = WORK / "org"
BIN = ROOT / ".venv" / "bin"
EMULATOR_PORT = int(os.environ.get("FORCELINK_EMULATOR_PORT", "8443"))


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def start_postgres() -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/services.py"), "up", "--only", "postgres"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key == "FORCELINK_DATABASE_URL":
            return value
    raise SystemExit("run: services.py printed no database URL")


def start_emulator() -> subprocess.Popen[bytes]:
    ORG_DIR.mkdir(parents=True, exist_ok=True)
    connection = ORG_DIR / "connection.json"
    connection.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            str(BIN / "forcelink"),
            "emulator",
            "--host",
            "localhost",
            "--port",
            str(EMULATOR_PORT),
            "--tls-dir",
            str(ORG_DIR),
            "--state",
            str(ORG_DIR / "state"),
        ],
        stdout=open(WORK / "emulator.log", "ab"),  # noqa: SIM115 - lives as long as the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not connection.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f"run: the local org did not start; see {WORK / 'emulator.log'}"
            )
        time.sleep(0.2)
    return proc


CITIES = ["Leeds", "Aarhus", "Porto", "Lyon", "Graz", "Turku", "Cork", "Bilbao"]


def seed_demo(connection_file: Path) -> None:
    """Give an empty local org some accounts, contacts and work orders."""
    import json
    import ssl
    import urllib.request

    details = json.loads(connection_file.read_text())
    context = ssl.create_default_context(cafile=details["ca_file"])

    def admin(path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        request = urllib.request.Request(
            f"{details['instance_url']}/_emulator/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=60) as answer:
            result: dict[str, object] = json.load(answer)
            return result

    counts = admin("stats").get("records", {})
    if isinstance(counts, dict) and counts.get("Account"):
        return
    accounts = admin(
        "records",
        {
            "sobject": "Account",
            "records": [
                {
                    "Name": f"{city} Roofing",
                    "External_Id__c": f"DEMO-{i}",
                    "BillingCity": city,
                    "Website": f"https://{city.lower()}.example",
                    "NumberOfEmployees": 10 * (i + 1),
                }
                for i, city in enumerate(CITIES)
            ],
        },
    )["ids"]
    assert isinstance(accounts, list)
    admin(
        "records",
        {
            "sobject": "Contact",
            "records": [
                {
                    "LastName": f"Crew {i}",
                    "FirstName": "Sam",
                    "AccountId": accounts[i % 8],
                    "Email": f"crew{i}@example.com",
                }
                for i in range(16)
            ],
        },
    )
    admin(
        "records",
        {
            "sobject": "WorkOrder",
            "records": [
                {
                    "Subject": f"Inspect roof {i}",
                    "AccountId": accounts[i % 8],
                    "Status": "New",
                    "Priority": "Medium",
                }
                for i in range(8)
            ],
        },
    )
    say("seeded the local org with 8 accounts, 16 contacts and 8 work orders")


def write_config(database_url: str) -> Path:
    path = WORK / "forcelink.yaml"
    path.write_text(
        "# Written by `make run`: the local Postgres and the local Salesforce org.\n"
        f"database:\n  url: {database_url}\n"
        "eventlog:\n  backend: embedded\n"
        "orgs:\n"
        "  - name: local\n"
        f"    connection_file: {ORG_DIR / 'connection.json'}\n"
        f"mappings:\n  - {ROOT / 'mappings'}/*.yaml\n"
        f"images:\n  backend: local\n  local_dir: {WORK / 'images'}\n"
        f"api:\n  listen: 127.0.0.1:8080\n  keys_dir: {WORK / 'keys'}\n"
        "metrics:\n  listen: 127.0.0.1:9400\n",
        encoding="utf-8",
    )
    return path


def forcelink(config: Path, *args: str) -> None:
    subprocess.run([str(BIN / "forcelink"), "-c", str(config), *args], check=True)


def main() -> int:
    WORK.mkdir(exist_ok=True)
    say("starting Postgres 15 (logical replication)")
    database_url = start_postgres()
    say(f"starting the local Salesforce org on https://localhost:{EMULATOR_PORT}")
    emulator = start_emulator()
    try:
        config = write_config(database_url)
        seed_demo(ORG_DIR / "connection.json")
        say("creating the mapped tables from mappings/*.yaml")
        forcelink(config, "mappings", "apply")
        say("backfilling the local org into Postgres")
        forcelink(config, "backfill", "--org", "local")
        say("syncing both ways until Ctrl-C (state in .forcelink/run.json)")
        say(
            f"try: psql {database_url} -c 'SELECT name, billingcity, _sync_state"
            " FROM salesforce.account'"
        )
        say(
            "     an UPDATE there reaches the org; `forcelink emulator` docs: "
            "emulator/README.md"
        )
        service = subprocess.Popen(
            [
                str(BIN / "forcelink"),
                "-c",
                str(config),
                "run",
                "--run-file",
                str(WORK / "run.json"),
            ]
        )
        try:
            return service.wait()
        except KeyboardInterrupt:
            service.send_signal(signal.SIGINT)
            return service.wait()
    finally:
        os.killpg(emulator.pid, signal.SIGTERM)
        emulator.wait(timeout=30)
        say("stopped; Postgres keeps running (make services-down stops it)")


if __name__ == "__main__":
    raise SystemExit(main())
