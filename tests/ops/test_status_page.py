"""The status page in a real browser: headless Chromium draws the lag chart.

A real ``forcelink run`` (local org, example mappings) serves ``/status``
from its API. Chromium loads the page, its script fetches ``status.json``
and draws the table and the SVG chart; the DOM Chromium dumps after the
scripts ran must hold a lag polyline with at least two points. Neither the
page nor ``status.json`` may carry record data: the synced record's id and
name appear in neither.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ops.run_support import (
    get,
    insert_accounts,
    listen,
    run_config,
    slot_streaming,
    start_run,
    stop_run,
    unsynced,
)
from tests.sf_to_pg.harness import load_examples, rows
from tests.sf_to_pg.test_crash import wait_until
from tests.support.local_org import LocalOrg

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="chromium missing: apt-get install chromium (scripts/install.sh does)",
)


def dump_dom(url: str, profile: Path) -> str:
    done = subprocess.run(
        [
            CHROMIUM,
            *("--headless", "--no-sandbox", "--disable-gpu"),
            *("--disable-dev-shm-usage", "--disable-background-networking"),
            *("--disable-component-update", "--disable-sync", "--no-first-run"),
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _points(history: list[dict[str, Any]]) -> int:
    return sum(1 for p in history if "local/pg_to_sf" in p["lag"])


def test_status_page__chromium_draws_the_lag_chart_without_record_data(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    config = run_config(tmp_path, fresh_database, org)
    api = listen(config, "api")
    log = tmp_path / "run.log"
    process = start_run(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
        insert_accounts(fresh_database, "PAGE-", 1)
        wait_until(lambda: unsynced(fresh_database, "PAGE-") == 0, "the row", log)
        (account,) = rows(
            fresh_database,
            "SELECT sfid, name FROM salesforce.account WHERE external_id__c = 'PAGE-0'",
        )
        body = wait_until(
            lambda: (
                (answer := get(f"{api}/status.json"))[0] == 200
                and _points(json.loads(answer[1])["history"]) >= 2
                and answer[1]
            ),
            "two history points",
            log,
        )
        dom = dump_dom(f"{api}/status", tmp_path / "chromium")
    finally:
        stop_run(process)

    report = json.loads(body)["report"]
    assert report["service"] == "running"
    assert [o["name"] for o in report["orgs"]] == ["local"]

    lines = re.findall(r'<polyline[^>]*class="series lag"[^>]*>', dom)
    assert lines, dom[-3000:]
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', " ".join(lines))]
    assert max(counts) >= 2, lines
    assert 'data-series="local/pg_to_sf lag"' in dom
    assert "<td>Account</td>" in dom and "org local" in dom

    for secret in (account["sfid"], account["name"]):
        assert secret not in dom and secret not in body.decode()
