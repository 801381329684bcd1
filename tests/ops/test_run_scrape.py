"""A real Prometheus scrapes a real ``forcelink run`` and gets its lag.

The service runs with the local org and the example mappings; Prometheus
(Debian's package, started as in ``test_scrape.py``) scrapes its
``metrics.listen`` every second. The lag series the lag sampler feeds must
come back from a query, per org and direction, and at 0 once a row written
in Postgres has reached the org.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.ops.run_support import (
    insert_accounts,
    listen,
    run_config,
    slot_streaming,
    start_run,
    stop_run,
    unsynced,
)
from tests.ops.support import PROMETHEUS, PROMETHEUS_DIR, free_port, needs_prometheus
from tests.ops.test_scrape import _query_until, _start, _stop, _wait_for_line
from tests.sf_to_pg.harness import load_examples
from tests.sf_to_pg.test_crash import wait_until
from tests.support.local_org import LocalOrg

pytestmark = needs_prometheus


def _prometheus(workdir: Path, target: str) -> tuple[str, subprocess.Popen[bytes]]:
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "forcelink", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    log = workdir / "prometheus.log"
    server = _start(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={address}",
        ],
        log,
    )
    _wait_for_line(server, log, "Server is ready to receive web requests")
    return f"http://{address}", server


def test_prometheus_scrapes_forcelink_run__lag_query_answers(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    config = run_config(tmp_path, fresh_database, org)
    target = listen(config, "metrics").removeprefix("http://")
    log = tmp_path / "run.log"
    process = start_run(config, tmp_path)
    prometheus, server = _prometheus(tmp_path, target)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
        insert_accounts(fresh_database, "SCRAPED-", 3)
        wait_until(lambda: unsynced(fresh_database, "SCRAPED-") == 0, "rows", log)

        up = _query_until(prometheus, 'up{job="forcelink"} == 1', 1)
        assert up[0]["metric"]["instance"] == target
        lag = _query_until(
            prometheus,
            'max by (org, direction) (forcelink_replication_lag_seconds{org="local"})',
            2,
        )
        assert {s["metric"]["direction"] for s in lag} == {"sf_to_pg", "pg_to_sf"}
        assert all(float(s["value"][1]) >= 0 for s in lag)
        applied = _query_until(
            prometheus,
            'forcelink_events_applied_total{org="local",direction="pg_to_sf"} >= 3',
            1,
        )
        assert applied
        remaining = _query_until(
            prometheus, 'forcelink_salesforce_api_remaining{org="local"} > 0', 1
        )
        assert remaining
    finally:
        _stop(server)
        stop_run(process)
