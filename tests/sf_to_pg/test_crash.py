"""SIGKILL during a burst of 5,000 changes: nothing lost, nothing out of order.

``forcelink run`` runs as a real process. While simple-salesforce updates
100 Accounts 50 times each, the process is killed with SIGKILL half way,
more updates are made while it is down, and it is started again. Postgres
must then match the org record by record, and an audit trigger on the mapped
table shows that no record was ever set back to an older value.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import psycopg

from tests.sf_to_pg.harness import load_examples, rows
from tests.support.local_org import LocalOrg

RECORDS = 100
ROUNDS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    # FORCELINK_* variables of the test session would override the file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forcelink.cli",
            "-c",
            str(config),
            "run",
            "--run-file",
            str(workdir / "run.json"),
        ],
        stdout=open(workdir / "run.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


class HasConnectionFile(Protocol):
    """Any org handle: the local org fixture, or one started behind a proxy."""

    @property
    def connection_file(self) -> Path: ...


def write_config(workdir: Path, database_url: str, org: HasConnectionFile) -> Path:
    path = workdir / "forcelink.yaml"
    path.write_text(
        f"database:\n  url: {database_url}\n"
        "eventlog:\n  backend: embedded\n  embedded:\n    partitions: 3\n"
        f"orgs:\n  - name: local\n    connection_file: {org.connection_file}\n"
        f"mappings:\n  - {Path(__file__).resolve().parents[2] / 'mappings'}/*.yaml\n"
        f"images:\n  local_dir: {workdir / 'images'}\n"
        f"api:\n  listen: 127.0.0.1:{free_port()}\n  keys_dir: {workdir / 'keys'}\n"
        f"metrics:\n  listen: 127.0.0.1:{free_port()}\n"
    )
    return path


def install_audit(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            CREATE TABLE audit (n bigserial PRIMARY KEY, sfid text, employees bigint);
            CREATE FUNCTION audit_account() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO audit (sfid, employees)
                VALUES (NEW.sfid, NEW.numberofemployees);
              RETURN NEW;
            END $$;
            CREATE TRIGGER audit_account AFTER INSERT OR UPDATE ON salesforce.account
              FOR EACH ROW EXECUTE FUNCTION audit_account();
            ALTER TABLE salesforce.account ENABLE ALWAYS TRIGGER audit_account;
            """
        )


def collection(sf: Any, records: list[dict[str, Any]], method: str) -> list[Any]:
    answer: list[Any] = sf.restful(
        "composite/sobjects",
        method=method,
        data=json.dumps({"allOrNone": True, "records": records}),
    )
    failed = [r for r in answer if not r.get("success")]
    assert not failed, f"the org refused the {method}: {failed[:3]}"
    return answer


def wait_until(check: Any, what: str, log: Path, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}\n{tail}")


def test_sigkill_mid_burst__postgres_matches_the_org_exactly(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    install_audit(fresh_database)
    config = write_config(tmp_path, fresh_database, org)
    sf = org.salesforce(client_tag="crew-app")
    created = collection(
        sf,
        [
            {
                "attributes": {"type": "Account"},
                "Name": f"Site {i}",
                "NumberOfEmployees": 0,
            }
            for i in range(RECORDS)
        ],
        "POST",
    )
    ids = [c["id"] for c in created]
    process = start(config, tmp_path)

    try:
        for round_ in range(1, ROUNDS + 1):
            collection(
                sf,
                [
                    {
                        "attributes": {"type": "Account"},
                        "id": i,
                        "NumberOfEmployees": round_,
                    }
                    for i in ids
                ],
                "PATCH",
            )
            if round_ == ROUNDS // 2:
                wait_until(
                    lambda: rows(fresh_database, "SELECT 1 FROM audit LIMIT 1"),
                    "the first changes to land",
                    tmp_path / "run.log",
                )
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        process = start(config, tmp_path)

        synced = wait_until(
            lambda: (
                len(
                    rows(
                        fresh_database,
                        "SELECT 1 FROM salesforce.account WHERE numberofemployees = %s",
                        ROUNDS,
                    )
                )
                == RECORDS
            ),
            "every record at its last value",
            tmp_path / "run.log",
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    assert synced
    in_org = {
        r["Id"]: r
        for r in sf.query_all("SELECT Id, Name, NumberOfEmployees FROM Account")[
            "records"
        ]
    }
    in_pg = {
        r["sfid"]: r
        for r in rows(
            fresh_database,
            "SELECT sfid, name, numberofemployees FROM salesforce.account",
        )
    }
    assert set(in_pg) == set(in_org), "same records on both sides, no duplicates"
    for sfid, record in in_org.items():
        assert in_pg[sfid]["name"] == record["Name"]
        assert in_pg[sfid]["numberofemployees"] == record["NumberOfEmployees"]
    backwards = rows(
        fresh_database,
        """
        SELECT sfid FROM (
          SELECT sfid, employees,
                 lag(employees) OVER (PARTITION BY sfid ORDER BY n) AS before
          FROM audit) history
        WHERE employees < before
        """,
    )
    assert backwards == [], "a record was set back to an older value"
