"""SIGKILL while one 20,000-row transaction is being written to the org.

The application commits ONE transaction inserting 20,000 Contacts (each with
an External_Id__c) while ``forcelink run`` runs. Half way through the
writer's calls (the org's Contact count, read from ``/_emulator/stats``),
the process is killed with SIGKILL and started again. Every row must then
be in the org exactly once (one record per external id), every row synced
with its sfid, and ``forcelink verify`` clean.

What makes it exactly once: the slot's position and the event log's offsets
move only after the next stage has the changes (a restart repeats, never
skips), and rows are created by upsert on the external id (a repeat finds
the record the killed process created before writing its sfid back).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import psycopg

from tests.sf_to_pg.harness import load_examples, rows, slot_streaming
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg
from tests.verify.cli import forcelink

ROWS = 20_000


def contacts_in_org(org: LocalOrg) -> int:
    return int(org.stats()["records"].get("Contact", 0))


def unsynced(database_url: str) -> int:
    (found,) = rows(
        database_url,
        "SELECT count(*) AS n FROM salesforce.contact"
        " WHERE sfid IS NULL OR _sync_state <> 'synced'",
    )
    return int(found["n"])


def test_sigkill_while_writing_one_big_transaction__each_row_once_in_the_org(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    config = write_config(tmp_path, fresh_database, org)
    log = tmp_path / "run.log"
    process = start(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader streaming", log)
        with psycopg.connect(fresh_database) as conn:
            conn.execute(
                "INSERT INTO salesforce.contact (external_id__c, firstname, lastname)"
                " SELECT 'C-' || n, 'Crew', 'Member ' || n"
                " FROM generate_series(1, %s) AS n",
                (ROWS,),
            )
        half = wait_until(
            lambda: (n := contacts_in_org(org)) >= ROWS // 4 and n,
            "the writer a quarter of the way",
            log,
            timeout=60,
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert half < ROWS, "killed too late: every record was already written"

        process = start(config, tmp_path)
        wait_until(
            lambda: unsynced(fresh_database) == 0,
            "every row synced after the restart",
            log,
            timeout=120,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    external_ids = Counter(
        r["External_Id__c"]
        for r in org.salesforce().query_all("SELECT External_Id__c FROM Contact")[
            "records"
        ]
    )
    assert len(external_ids) == ROWS
    twice = [key for key, count in external_ids.items() if count != 1]
    assert twice == [], f"records created more than once: {twice[:10]}"
    assert contacts_in_org(org) == ROWS

    checked = forcelink(config, "verify", "--org", "local", "--object", "Contact")
    assert checked.returncode == 0, checked.stdout + checked.stderr
