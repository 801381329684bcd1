"""Helpers for the operations tests that run a real ``forcelink run``.

The process is started like ``tests/sf_to_pg/test_crash.py`` does (same
config writer, FORCELINK_* variables stripped so the file rules), with the
API and metrics ports taken from this engineer's private range when
FORCELINK_PORT_BASE is set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.support import free_port
from tests.sf_to_pg.harness import slot_streaming  # noqa: F401 - re-exported
from tests.sf_to_pg.test_crash import write_config
from tests.support.local_org import LocalOrg


def run_config(workdir: Path, database_url: str, org: LocalOrg) -> Path:
    """test_crash's forcelink.yaml, listening on ports of the private range."""
    path = write_config(workdir, database_url, org)
    text = path.read_text()
    for section in ("api", "metrics"):
        text = re.sub(
            rf"({section}:\n  listen: )127\.0\.0\.1:\d+",
            rf"\g<1>127.0.0.1:{free_port()}",
            text,
        )
    path.write_text(text)
    return path


def clean_env() -> dict[str, str]:
    # FORCELINK_* variables of the test session would override the file.
    return {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}


def start_run(config: Path, workdir: Path, *options: str) -> subprocess.Popen[bytes]:
    """``forcelink [options] run``, output (stdout and stderr) in run.log."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "forcelink.cli", "-c", str(config), *options),
            *("run", "--run-file", str(workdir / "run.json")),
        ],
        stdout=open(workdir / "run.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=clean_env(),
    )


def stop_run(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def listen(config: Path, section: str) -> str:
    found = re.search(rf"{section}:\n  listen: (\S+)", config.read_text())
    assert found, config.read_text()
    return f"http://{found.group(1)}"


def get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def gauge(base: str, name: str, **labels: str) -> float | None:
    """One sample of ``name`` with exactly ``labels`` from ``base``/metrics."""
    status, body = get(f"{base}/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{base}/readyz")
    return status, json.loads(body) if body else {}


def status_cli(config: Path, workdir: Path, *options: str) -> str:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "forcelink.cli", "-c", str(config), "status"),
            *("--run-file", str(workdir / "run.json"), *options),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def unsynced(database_url: str, prefix: str) -> int:
    """Accounts whose external id starts with ``prefix`` not yet synced."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM salesforce.account"
            " WHERE external_id__c LIKE %s AND _sync_state <> 'synced'",
            (prefix + "%",),
        ).fetchone()
    return int(row[0]) if row else -1


def insert_accounts(database_url: str, prefix: str, count: int) -> None:
    with psycopg.connect(database_url) as conn:
        for i in range(count):
            conn.execute(
                "INSERT INTO salesforce.account (external_id__c, name) VALUES (%s, %s)",
                (f"{prefix}{i}", f"Account {prefix}{i}"),
            )
