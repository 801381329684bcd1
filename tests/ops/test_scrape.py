"""A real Prometheus server (Debian's package) scrapes real forcelink
processes, loads the real alert rules, and answers queries for their metrics.

Two targets: ``python -m forcelink.health`` (the stand-alone entry point, with
a configuration naming two orgs) and a process that sets a replication lag
through forcelink's METRICS. One second scrape interval; the test waits for
the first scrapes, a few seconds at most.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.support import (
    PROMETHEUS,
    PROMETHEUS_DIR,
    ROOT,
    free_port,
    needs_prometheus,
)

pytestmark = needs_prometheus

DEADLINE_SECONDS = 30


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, marker: str) -> str:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if marker in line:
                return line
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} from {process.args}: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def targets(tmp_path: Path, database_url: str) -> Iterator[list[str]]:
    config = tmp_path / "forcelink.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database_url},
                "orgs": [
                    {"name": name, "connection_file": f"/nonexistent/{name}.json"}
                    for name in ("north", "south")
                ],
            }
        )
    )
    standalone = _start(
        [
            sys.executable,
            "-m",
            "forcelink.health",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        tmp_path / "standalone.log",
    )
    lagging = _start(
        [
            sys.executable,
            "-m",
            "tests.ops.lagging_process",
            f"127.0.0.1:{free_port()}",
            "4.25",
        ],
        tmp_path / "lagging.log",
    )
    try:
        urls = [
            _wait_for_line(process, tmp_path / f"{name}.log", "listening on ")
            for process, name in ((standalone, "standalone"), (lagging, "lagging"))
        ]
        yield [url.rsplit("http://", 1)[1] for url in urls]
    finally:
        _stop(standalone)
        _stop(lagging)


@pytest.fixture
def prometheus(tmp_path: Path, targets: list[str]) -> Iterator[str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "forcelink", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    listen = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    server = _start(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={listen}",
        ],
        log,
    )
    try:
        _wait_for_line(server, log, "Server is ready to receive web requests")
        yield f"http://{listen}"
    finally:
        _stop(server)


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _query_until(base: str, query: str, count: int) -> list[dict[str, Any]]:
    """Poll an instant query until it returns ``count`` series."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = _api(base, "query", query=query)["result"]
        if len(result) >= count:
            return result
        time.sleep(0.25)
    raise AssertionError(f"{query} gave {result} after {DEADLINE_SECONDS}s")


def test_prometheus_scrapes_forcelink(prometheus: str, targets: list[str]) -> None:
    up = _query_until(prometheus, 'up{job="forcelink"} == 1', 2)
    assert {series["metric"]["instance"] for series in up} == set(targets)

    lag = _query_until(
        prometheus,
        'forcelink_replication_lag_seconds{org="acme",direction="pg_to_sf"}',
        1,
    )
    assert float(lag[0]["value"][1]) == pytest.approx(4.25)

    # The stand-alone process declared its configured orgs at zero lag.
    declared = _query_until(
        prometheus, 'forcelink_replication_lag_seconds{org=~"north|south"}', 4
    )
    assert {float(series["value"][1]) for series in declared} == {0.0}
    build = _query_until(prometheus, "forcelink_build_info", 2)
    assert all(series["metric"]["version"] for series in build)
    config = _query_until(prometheus, 'forcelink_config_info{orgs="2"}', 1)
    assert config[0]["metric"]["eventlog_backend"] == "embedded"

    # The stand-alone process reaches the real database for /readyz.
    with urllib.request.urlopen(f"http://{targets[0]}/readyz", timeout=10) as ready:
        assert json.load(ready)["checks"] == {"database": "ok"}

    # The real alert rules loaded and evaluate without errors.
    groups = _api(prometheus, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 6
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
