"""The org goes away under a running service and comes back: streaming resumes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.sf_to_pg.harness import load_examples, row
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg


def test_org_restart__service_reconnects_and_loses_nothing(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    log = tmp_path / "run.log"
    process = start(write_config(tmp_path, fresh_database, org), tmp_path)
    try:
        sf = org.salesforce(client_tag="office")
        first = sf.Account.create({"Name": "Before the outage"})["id"]
        wait_until(
            lambda: row(fresh_database, "salesforce.account", first),
            "the first record",
            log,
        )

        org.stop()
        org.start()
        sf = org.salesforce(client_tag="office")
        second = sf.Account.create({"Name": "After the outage"})["id"]

        wait_until(
            lambda: row(fresh_database, "salesforce.account", second),
            "the record made after the org came back",
            log,
            timeout=120,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert "restarting in" in log.read_text(), "the outage was seen and survived"
