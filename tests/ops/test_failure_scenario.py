"""The org goes away while work piles up; everything shows it, then recovers.

A real ``forcelink run`` with the local org syncs a first row, then the
org goes away (the emulator stopped, or answering every call with 503)
while rows keep arriving in Postgres. The replication lag on ``/metrics``
must rise, ``/readyz`` must answer 503 naming ``org:local``, and
``forcelink status`` (text and JSON) must call the org failing. Once the
org is back, the rows reach it, the lag returns to 0, ``/readyz`` to 200
and the status to ok.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ops.run_support import (
    gauge,
    insert_accounts,
    listen,
    readyz,
    run_config,
    slot_streaming,
    start_run,
    status_cli,
    stop_run,
    unsynced,
)
from tests.sf_to_pg.harness import load_examples
from tests.sf_to_pg.test_crash import wait_until
from tests.support.local_org import LocalOrg

LAG = "forcelink_replication_lag_seconds"
PILED_UP = 20


def _stop(org: LocalOrg) -> None:
    org.stop()


def _start(org: LocalOrg) -> None:
    if not org.running:
        org.start()


def _fail_every_call(org: LocalOrg) -> None:
    org.admin("faults", {"kind": "any", "fault": "503", "count": 1_000_000})


def _answer_again(org: LocalOrg) -> None:
    if org.running:
        org.admin("faults", {"kind": "any", "fault": "503", "count": 0})


OUTAGES: dict[str, tuple[Callable[[LocalOrg], None], Callable[[LocalOrg], None]]] = {
    "stopped": (_stop, _start),
    "answering-503": (_fail_every_call, _answer_again),
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_org_outage__lag_readiness_and_status_show_it_then_recover(
    outage: str, org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    begin, end = OUTAGES[outage]
    load_examples(fresh_database)
    config = run_config(tmp_path, fresh_database, org)
    metrics = listen(config, "metrics")
    log = tmp_path / "run.log"
    process = start_run(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
        wait_until(lambda: readyz(metrics)[0] == 200, "ready", log)
        insert_accounts(fresh_database, "BEFORE-", 1)
        wait_until(lambda: unsynced(fresh_database, "BEFORE-") == 0, "first row", log)

        begin(org)
        insert_accounts(fresh_database, "OUTAGE-", PILED_UP)
        _shows_the_outage(config, tmp_path, metrics, log)

        end(org)
        _recovers(config, tmp_path, metrics, fresh_database, log)
    finally:
        _start(org)
        _answer_again(org)
        stop_run(process)


def _shows_the_outage(config: Path, workdir: Path, metrics: str, log: Path) -> None:
    wait_until(
        lambda: (gauge(metrics, LAG, org="local", direction="pg_to_sf") or 0) > 2,
        "the pg_to_sf lag rising",
        log,
    )
    waiting = gauge(
        metrics,
        "forcelink_eventlog_consumer_lag_events",
        org="local",
        direction="pg_to_sf",
    )
    assert waiting is not None and waiting >= PILED_UP

    _, body = wait_until(
        lambda: (r := readyz(metrics))[0] == 503 and r, "readyz 503", log
    )
    assert "org:local" in body["failing"], body
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["org:local"] == "failed: SourceUnavailable"

    report = json.loads(status_cli(config, workdir, "--json"))
    assert report["service"] == "running"
    (local,) = report["orgs"]
    assert local["state"] == "failing", local
    assert any("org:local" in reason for reason in local["reasons"])
    assert local["lag_seconds"]["pg_to_sf"] > 2
    assert local["waiting_events"]["pg_to_sf"] >= PILED_UP
    account = next(m for m in local["mappings"] if m["object"] == "Account")
    assert account["pending"] >= PILED_UP and account["state"] == "failing"

    text = status_cli(config, workdir)
    assert "org local: failing" in text
    assert "\033[" not in text  # not a terminal: no colours


def _recovers(
    config: Path, workdir: Path, metrics: str, database_url: str, log: Path
) -> None:
    wait_until(lambda: unsynced(database_url, "OUTAGE-") == 0, "piled-up rows", log)
    wait_until(
        lambda: gauge(metrics, LAG, org="local", direction="pg_to_sf") == 0,
        "the lag back to 0",
        log,
    )
    wait_until(lambda: readyz(metrics)[0] == 200, "ready again", log)
    # The change stream reconnects after its own backoff (up to a minute
    # after a long outage), so the status may say "failing" a while longer.
    local = wait_until(
        lambda: (
            (o := json.loads(status_cli(config, workdir, "--json"))["orgs"][0])
            and o["state"] == "ok"
            and o
        ),
        "the status back to ok",
        log,
        timeout=120,
    )
    assert local["waiting_events"]["pg_to_sf"] == 0
    assert local["api_remaining"] is not None and local["api_limit"] > 0
