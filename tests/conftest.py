"""Fixtures shared by the whole suite: the real backing services.

``make test`` starts Postgres, Kafka and S3 with ``scripts/services.py`` and
exports their URLs; a bare ``pytest`` does the same on first use, so both
ways test against real servers. Set FORCELINK_SERVICES_DIR and
FORCELINK_PORT_BASE to run a private set beside another one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.support.local_org"]

_VARS = {
    "postgres": "FORCELINK_DATABASE_URL",
    "kafka": "FORCELINK_EVENTLOG_KAFKA_BOOTSTRAP_SERVERS",
    "s3": "FORCELINK_IMAGES_S3_ENDPOINT_URL",
}


def _service_url(name: str) -> str:
    var = _VARS[name]
    if not os.environ.get(var):
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "services.py"),
                "up",
                "--only",
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = value
    return os.environ[var]


@pytest.fixture(scope="session")
def database_url() -> str:
    """The development cluster's ``forcelink`` database (shared; don't drop it)."""
    return _service_url("postgres")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _service_url("kafka")


@pytest.fixture(scope="session")
def s3_endpoint_url() -> str:
    return _service_url("s3")


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
