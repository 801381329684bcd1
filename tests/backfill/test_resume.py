"""A backfill SIGKILLed half way resumes its job and ends with an exact copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg

from tests.backfill.conftest import Setup

RECORDS = 100_000
PAGE = 5_000
SEED_CHUNK = 25_000


def _command(setup: Setup) -> list[str]:
    return [
        sys.executable, "-m", "forcelink.cli", "-c", str(setup.config_file),
        "backfill", "--org", "local", "--object", "Account", "--no-progress",
        "--page-size", str(PAGE),
    ]  # fmt: skip


def _position(url: str) -> tuple[Any, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT rows, state, job_id FROM forcelink.backfill_progress"
            " WHERE object = 'Account'"
        ).fetchone()


def _kill_past(setup: Setup, rows: int) -> tuple[Any, ...]:
    """Start the backfill; SIGKILL it once the stored position passes ``rows``."""
    process = subprocess.Popen(
        _command(setup), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            position = _position(setup.database_url)
            if position is not None and position[0] >= rows:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return position
            assert process.poll() is None, "the backfill ended before the kill"
            time.sleep(0.02)
        raise AssertionError("the backfill never reached the kill point")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_backfill__killed_half_way_resumes_to_an_exact_copy(setup: Setup) -> None:
    ids: list[str] = []
    for start in range(0, RECORDS, SEED_CHUNK):
        records = [{"Name": f"Acct {i}", "NumberOfEmployees": i}
                   for i in range(start, start + SEED_CHUNK)]  # fmt: skip
        answer = setup.org.admin(
            "records", {"sobject": "Account", "records": records, "events": False}
        )
        ids.extend(answer["ids"])

    at_kill = _kill_past(setup, RECORDS // 2)
    after_kill = _position(setup.database_url)
    calls_before = setup.org.stats()["calls"]["query"]
    resumed = subprocess.run(
        _command(setup), capture_output=True, text=True, timeout=300
    )
    calls_after = setup.org.stats()["calls"]["query"]

    assert at_kill[1] == "running" and at_kill[0] < RECORDS
    assert after_kill is not None and after_kill[0] < RECORDS  # killed, not done
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming job {at_kill[2]}" in resumed.stderr
    final = _position(setup.database_url)
    assert final is not None and final[1:] == ("done", at_kill[2])
    pages_left = -(-(RECORDS - after_kill[0]) // PAGE)
    assert calls_after - calls_before <= pages_left + 2  # job status + pages
    with psycopg.connect(setup.database_url) as conn:
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT sfid) FROM salesforce.account"
        ).fetchone() or (0, 0)
        stored = {r[0] for r in conn.execute("SELECT sfid FROM salesforce.account")}
    assert count == distinct == RECORDS
    assert stored == set(ids)
