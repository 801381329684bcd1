"""pytest plugin: a real local org (``forcelink emulator``) for any test.

Fixtures:

- ``local_org`` (session): starts ``forcelink emulator`` as a subprocess on
  a free port, over TLS, with a temporary ``--tls-dir`` and ``--state``, and
  stops it at the end of the session. Yields a ``LocalOrg`` handle.
- ``org`` (function): the same handle, after ``/_emulator/reset`` (records,
  events, usage counters and faults forgotten; tokens stay valid). It starts
  the emulator again if a test left it stopped.

The handle (``LocalOrg``) is small on purpose; other areas depend on it:

- ``connection_file``, ``instance_url``, ``ca_file``: what clients need;
- ``connection()`` -> ``OrgConnection``, ``org_config()`` -> ``OrgConfig``;
- ``salesforce(client_tag="test")`` -> a simple-salesforce client, logged in
  with the JWT bearer flow (``connector/salesforce/auth.py``);
- ``admin(path, json=None)`` -> dict: POST (GET for ``/_emulator/stats``)
  to the admin API; ``reset()``, ``stats()``;
- ``stop()`` / ``start()``: restart on the same port; records and events
  survive (``--state``), tokens do not.

Set FORCELINK_LOCAL_ORG_PORT to pin the port. CometD connects are held
``COMETD_TIMEOUT_MS`` (3 s) instead of 110 s so that streaming tests run fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce

from forcelink.config import OrgConfig
from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    http_session,
    salesforce_client,
)

COMETD_TIMEOUT_MS = 3000
PORT_ENV = "FORCELINK_LOCAL_ORG_PORT"
"""Port for the local org; unset or 0: any free port the kernel gives."""
START_SECONDS = 30.0


class LocalOrg:
    """One ``forcelink emulator`` process and what a client needs to use it."""

    def __init__(self, workdir: Path, *, cometd_timeout_ms: int = COMETD_TIMEOUT_MS):
        self.workdir = workdir
        self.tls_dir = workdir / "tls"
        self.state_dir = workdir / "state"
        self.connection_file = self.tls_dir / "connection.json"
        self.ca_file = self.tls_dir / "ca.pem"
        self.instance_url = ""
        self.port = int(os.environ.get(PORT_ENV) or 0)
        self._cometd_timeout_ms = cometd_timeout_ms
        self._process: subprocess.Popen[str] | None = None
        self._http: requests.Session | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the emulator (on the port it had before, if any) and wait."""
        env = dict(os.environ)
        env["FORCELINK_EMULATOR_COMETD_TIMEOUT_MS"] = str(self._cometd_timeout_ms)
        command = [
            *(sys.executable, "-m", "forcelink.cli", "emulator"),
            *("--port", str(self.port), "--tls-dir", str(self.tls_dir)),
            *("--state", str(self.state_dir)),
        ]
        log = (self.workdir / "emulator.log").open("a")
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        # The first stdout line (the connection file's path) comes once
        # connection.json is written for this run.
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator did not start; see {self.workdir}")
        connection = json.loads(self.connection_file.read_text())
        self.instance_url = connection["instance_url"]
        self.port = int(self.instance_url.rsplit(":", 1)[1])
        self._http = http_session(self.connection())

        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                self._http.get(f"{self.instance_url}/_emulator/stats", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"emulator not serving after {START_SECONDS}s")

    def stop(self) -> None:
        """Stop it gracefully (state is saved), like an operator would."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def connection(self) -> OrgConnection:
        return OrgConnection.from_file(self.connection_file)

    def org_config(self, name: str = "local") -> OrgConfig:
        conn = self.connection()
        return OrgConfig(
            name=name,
            connection_file=str(self.connection_file),
            login_url=conn.login_url,
            client_id=conn.client_id,
            username=conn.username,
            private_key_file=conn.private_key_file,
            ca_file=conn.ca_file,
        )

    def salesforce(self, client_tag: str = "test") -> Salesforce:
        """A simple-salesforce client logged in with a fresh token."""
        conn = self.connection()
        return salesforce_client(conn, fetch_token(conn), client_tag=client_tag)

    def admin(self, path: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``/_emulator/<path>``; raises for a non-2xx answer."""
        assert self._http is not None, "the emulator is not started"
        url = f"{self.instance_url}/_emulator/{path.removeprefix('/_emulator/')}"
        if path.rstrip("/").endswith("stats") and json is None:
            response = self._http.get(url, timeout=60)
        else:
            response = self._http.post(url, json=json or {}, timeout=600)
        if response.status_code >= 300:
            raise AssertionError(f"{url}: {response.status_code} {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    def reset(self) -> dict[str, Any]:
        return self.admin("reset")

    def stats(self) -> dict[str, Any]:
        return self.admin("stats")


@pytest.fixture(scope="session")
def local_org() -> Iterator[LocalOrg]:
    with tempfile.TemporaryDirectory(prefix="forcelink-org-") as workdir:
        handle = LocalOrg(Path(workdir))
        handle.start()
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture
def org(local_org: LocalOrg) -> LocalOrg:
    if not local_org.running:
        local_org.start()
    local_org.reset()
    return local_org
