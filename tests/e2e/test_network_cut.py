"""Network cuts between forcelink and Postgres in the middle of a sync.

``forcelink run`` reaches Postgres only through a proxy that drops every
connection on demand (the replication stream, the event log, the appliers).
The application writes 2,000 rows directly; the proxy cuts everything twice
while they are being synced. Every row must reach the org exactly once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.sf_to_pg.harness import load_examples, rows, slot_streaming
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.local_org import LocalOrg

ROWS = 2000


def through(proxy: FaultProxy, database_url: str) -> str:
    parts = urlsplit(database_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


def test_cuts_mid_sync__every_row_reaches_the_org_exactly_once(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    target = urlsplit(fresh_database)
    with FaultProxy(target.hostname or "localhost", target.port or 5432) as proxy:
        config = write_config(tmp_path, through(proxy, fresh_database), org)
        log = tmp_path / "run.log"
        process = start(config, tmp_path)
        try:
            wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
            with psycopg.connect(fresh_database) as conn:
                conn.execute(
                    "INSERT INTO salesforce.contact (external_id__c, lastname)"
                    " SELECT 'CUT-' || n, 'Cut ' || n FROM generate_series(1, %s) n",
                    (ROWS,),
                )
            for _ in range(2):
                wait_until(lambda: _synced(fresh_database) > 0, "some rows synced", log)
                time.sleep(0.3)
                proxy.cut(refuse=1.0)
            wait_until(
                lambda: _synced(fresh_database) == ROWS,
                "every row synced",
                log,
                timeout=180,
            )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        assert proxy.cuts >= 2

    in_org = org.salesforce().query_all(
        "SELECT External_Id__c FROM Contact WHERE External_Id__c LIKE 'CUT-%'"
    )["records"]
    ids = [r["External_Id__c"] for r in in_org]
    assert len(ids) == ROWS, "every row once"
    assert len(set(ids)) == ROWS, "no duplicates"
    assert "restarting in" in log.read_text(), "the cuts were felt and survived"


def _synced(database_url: str) -> int:
    found = rows(
        database_url,
        "SELECT count(*) AS n FROM salesforce.contact"
        " WHERE external_id__c LIKE 'CUT-%%' AND _sync_state = 'synced'"
        " AND sfid IS NOT NULL",
    )
    return int(found[0]["n"])
