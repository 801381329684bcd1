"""``forcelink push``: rows written before forcelink's slot existed reach the org.

Rows inserted by the application before any slot exists are invisible to
the change stream; ``push`` sends them with Bulk API 2.0 upserts and writes
the sfids back in a session forcelink's own capture skips, so the running
service sends nothing back (no echo) and a second push does nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg

from forcelink import topics
from tests.sf_to_pg.harness import load_examples, rows, slot_streaming
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg
from tests.verify.cli import forcelink

ROWS = 500


def calls(org: LocalOrg) -> dict[str, int]:
    return {k: int(v) for k, v in org.stats()["calls"].items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    kinds = set(before) | set(after)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in kinds}
    return {k: v for k, v in moved.items() if v}


def insert_accounts(database_url: str, values: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO salesforce.account"
            " (external_id__c, name, numberofemployees, annualrevenue)"
            " VALUES (%s, %s, %s, %s)",
            values,
        )


def test_push__rows_from_before_the_slot_reach_the_org_once_without_echo(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    insert_accounts(
        fresh_database,
        [(f"OLD-{i}", f"Old site {i}", i, f"{i}.25") for i in range(ROWS)],
    )
    config = write_config(tmp_path, fresh_database, org)
    process = start(config, tmp_path)
    log = tmp_path / "run.log"
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader streaming", log)
        time.sleep(2)
        before = calls(org)

        pushed = forcelink(config, "push", "--org", "local", "--table", "account")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert f"{ROWS} row(s) sent, {ROWS} created" in pushed.stdout

        time.sleep(4)  # time for an echo, if there were one, to travel
        after_push = calls(org)
        again = forcelink(config, "push", "--org", "local", "--table", "account")
        time.sleep(1)
        after_again = calls(org)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    assert org.stats()["records"]["Account"] == ROWS
    moved = delta(before, after_push)
    assert moved.get("bulk", 0) > 0, moved
    assert "collections" not in moved and "query" not in moved, moved
    assert again.returncode == 0 and "0 row(s) sent" in again.stdout, again.stdout
    assert delta(after_push, after_again).get("bulk", 0) == 0

    synced = rows(
        fresh_database,
        "SELECT sfid, external_id__c, _sync_state FROM salesforce.account",
    )
    assert len(synced) == ROWS
    assert all(r["sfid"] and r["_sync_state"] == "synced" for r in synced)
    in_org = {
        r["External_Id__c"]: r
        for r in org.salesforce().query_all(
            "SELECT Id, External_Id__c, NumberOfEmployees, AnnualRevenue FROM Account"
        )["records"]
    }
    assert len(in_org) == ROWS
    for r in synced:
        assert in_org[r["external_id__c"]]["Id"][:15] == r["sfid"][:15]
    assert in_org["OLD-7"]["NumberOfEmployees"] == 7
    assert str(in_org["OLD-7"]["AnnualRevenue"]) == "7.25"


def test_push__rejected_rows_fail_alone_with_a_dead_letter(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    insert_accounts(
        fresh_database,
        [
            ("OK-1", "Fine", 1, None),
            ("BAD-1", "Negative staff", -1, None),
            (None, "No external id", 2, None),
            ("OK-2", "Fine too", 3, None),
        ],
    )
    config = write_config(tmp_path, fresh_database, org)

    pushed = forcelink(config, "push", "--org", "local", "--table", "account")
    assert pushed.returncode == 1, pushed.stdout + pushed.stderr
    assert "4 row(s) sent, 2 created, 0 updated, 2 failed" in pushed.stdout

    states = {
        r["name"]: r
        for r in rows(
            fresh_database,
            "SELECT name, sfid, _sync_state, _sync_error FROM salesforce.account",
        )
    }
    assert states["Fine"]["_sync_state"] == "synced" and states["Fine"]["sfid"]
    assert states["Fine too"]["_sync_state"] == "synced"
    negative = states["Negative staff"]
    assert negative["_sync_state"] == "failed" and negative["sfid"] is None
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in negative["_sync_error"]["message"]
    missing = states["No external id"]
    assert missing["_sync_state"] == "failed"
    assert "External_Id__c" in missing["_sync_error"]["message"]
    letters = rows(
        fresh_database,
        "SELECT direction, object, record_key, state, payload->>'topic' AS topic"
        " FROM forcelink.dead_letters",
    )
    assert len(letters) == 2
    assert {(r["direction"], r["object"], r["state"]) for r in letters} == {
        ("to_salesforce", "Account", "open")
    }
    # `dlq retry` republishes there: it must be the topic the writer reads.
    assert {r["topic"] for r in letters} == {topics.PG_CHANGES}
    assert org.stats()["records"]["Account"] == 2

    again = forcelink(config, "push", "--org", "local", "--table", "account")
    assert again.returncode == 0 and "0 row(s) sent" in again.stdout
