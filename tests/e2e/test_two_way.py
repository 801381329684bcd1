"""The main job as people run it: one ``forcelink run`` process, both directions.

An application row inserted in Postgres reaches the org and gets its sfid
back; an edit made in the org reaches Postgres; and once both sides are
quiet, no call goes back and forth (no echo).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.sf_to_pg.harness import load_examples, row, slot_streaming
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg


def writes(stats: dict[str, Any]) -> int:
    calls = stats.get("calls") or stats.get("by_kind") or stats
    return sum(int(v) for k, v in calls.items() if k in ("rest", "collections", "bulk"))


def test_two_way_sync_without_echo(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    process = start(write_config(tmp_path, fresh_database, org), tmp_path)
    log = tmp_path / "run.log"
    try:
        # Changes are captured from the moment the slot exists: rows written
        # before that are what `forcelink push` is for.
        wait_until(lambda: slot_streaming(fresh_database), "the reader streaming", log)
        with psycopg.connect(fresh_database) as conn:
            conn.execute(
                "INSERT INTO salesforce.account (external_id__c, name, website)"
                " VALUES ('APP-1', 'From the app', 'https://app.example')"
            )
        synced = wait_until(
            lambda: (
                (r := _by_ext(fresh_database, "APP-1"))
                and r["sfid"]
                and r["_sync_state"] == "synced"
                and r
            ),
            "the app's row in the org with its sfid back",
            log,
        )
        sf = org.salesforce(client_tag="office")
        in_org = sf.Account.get(synced["sfid"])
        assert in_org["Name"] == "From the app"
        assert in_org["Website"] == "https://app.example"

        sf.Account.update(synced["sfid"], {"Website": "https://office.example"})
        wait_until(
            lambda: (
                (r := row(fresh_database, "salesforce.account", synced["sfid"]))
                and r["website"] == "https://office.example"
            ),
            "the office's edit in Postgres",
            log,
        )

        time.sleep(3)
        before = org.stats()
        time.sleep(4)
        after = org.stats()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    assert writes(after) == writes(before), (before, after)
    final = row(fresh_database, "salesforce.account", synced["sfid"])
    assert final is not None and final["_sync_state"] == "synced"
    assert sf.Account.get(synced["sfid"])["Website"] == "https://office.example"


def _by_ext(database_url: str, ext: str) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM salesforce.account WHERE external_id__c = %s", (ext,)
        ).fetchone()
