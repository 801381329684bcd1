"""Network cuts between forcelink and the org while changes flow both ways.

The local org advertises a proxy's address (``--public-url``), so every call
``forcelink run`` makes to it (logins, REST, collections, CometD) crosses a
proxy that drops all connections on demand. The test itself talks to the
org's own port. Postgres rows and org records must each arrive exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from forcelink.mapping import apply, load_mappings
from tests.sf_to_pg.harness import ROOT, rows, slot_streaming
from tests.sf_to_pg.test_crash import free_port, start, wait_until, write_config
from tests.support.faultproxy import FaultProxy

APP_ROWS = 600
ORG_RECORDS = 300


class ProxiedOrg:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proxy = FaultProxy("localhost", self.port)
        self.connection_file = workdir / "connection.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
        env["FORCELINK_EMULATOR_COMETD_TIMEOUT_MS"] = "3000"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forcelink.cli",
                "emulator",
                "--host",
                "localhost",
                "--port",
                str(self.port),
                "--tls-dir",
                str(workdir),
                "--public-url",
                f"https://localhost:{self.proxy.port}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "emulator.log", "ab"),  # noqa: SIM115 - with the process
            start_new_session=True,
        )
        wait_until(self.connection_file.exists, "the org", workdir / "emulator.log")
        self.ca = json.loads(self.connection_file.read_text())["ca_file"]

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The admin API on the org's own port, past the proxy."""
        url = f"https://localhost:{self.port}/_emulator/{path}"
        if body is None:
            answer = requests.get(url, verify=self.ca, timeout=60)
        else:
            answer = requests.post(url, json=body, verify=self.ca, timeout=60)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.proxy.close()


@pytest.fixture
def proxied_org(tmp_path: Path) -> Iterator[ProxiedOrg]:
    (tmp_path / "org").mkdir()
    org = ProxiedOrg(tmp_path / "org")
    try:
        yield org
    finally:
        org.stop()


def test_cuts_to_the_org__both_directions_exactly_once(
    proxied_org: ProxiedOrg, fresh_database: str, tmp_path: Path
) -> None:
    apply(fresh_database, load_mappings([ROOT / "mappings"]))
    config = write_config(tmp_path, fresh_database, proxied_org)
    log = tmp_path / "run.log"
    process = start(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
        with psycopg.connect(fresh_database) as conn:
            conn.execute(
                "INSERT INTO salesforce.contact (external_id__c, lastname)"
                " SELECT 'APP-' || n, 'App ' || n FROM generate_series(1, %s) n",
                (APP_ROWS,),
            )
        proxied_org.admin(
            "records",
            {
                "sobject": "Account",
                "records": [
                    {"Name": f"Org {n}", "External_Id__c": f"ORG-{n}"}
                    for n in range(ORG_RECORDS)
                ],
            },
        )
        for _ in range(3):
            time.sleep(0.4)
            proxied_org.proxy.cut(refuse=1.0)
        wait_until(
            lambda: _count(fresh_database, "contact", "APP-", synced=True) == APP_ROWS,
            "the app's rows in the org",
            log,
            timeout=180,
        )
        wait_until(
            lambda: _count(fresh_database, "account", "ORG-") == ORG_RECORDS,
            "the org's records in Postgres",
            log,
            timeout=180,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    contacts = proxied_org.admin("stats")["records"]["Contact"]
    assert contacts == APP_ROWS, "each app row became exactly one record"
    assert _count(fresh_database, "account", "ORG-") == ORG_RECORDS
    total = rows(fresh_database, "SELECT count(*) AS n FROM salesforce.account")
    assert total[0]["n"] == ORG_RECORDS, "no record applied twice as two rows"
    assert "restarting in" in log.read_text() or "retry" in log.read_text()


def _count(database_url: str, table: str, prefix: str, synced: bool = False) -> int:
    state = " AND _sync_state = 'synced' AND sfid IS NOT NULL" if synced else ""
    found = rows(
        database_url,
        f"SELECT count(DISTINCT external_id__c) AS n FROM salesforce.{table}"
        f" WHERE external_id__c LIKE %s{state}",
        prefix + "%",
    )
    return int(found[0]["n"])
