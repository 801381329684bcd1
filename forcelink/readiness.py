"""The readiness checks of ``forcelink run``: event log and org tokens.

``/readyz`` (see :mod:`forcelink.health`) runs every check on each probe, so
each must be cheap, bounded and free of Salesforce API calls (the brief
allows none when idle, and probes come every few seconds forever):

* ``eventlog``: embedded, a query on the log's partition table; Kafka, a TCP
  connection to one of the bootstrap servers.
* ``org:<name>``: the org's instance answers its public version list
  (``GET /services/data/``, not counted as an API call), and a JWT bearer
  login succeeds. The login is repeated only every ``LOGIN_RECHECK_SECONDS``
  after a success, and at the next probe after any failure; a login is an
  OAuth grant, not an API call.

A failing check raises; the probe shows only the error's class name.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import psycopg
import requests

from forcelink.config import Config, OrgConfig
from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    http_session,
)
from forcelink.errors import SourceUnavailable

LOGIN_RECHECK_SECONDS = 300.0
TIMEOUT_SECONDS = 3.0

Check = Callable[[], None]


def eventlog_check(config: Config) -> Check:
    """Reachability of the configured event log."""
    if config.eventlog.backend == "kafka":
        servers = config.eventlog.kafka.bootstrap_servers
        return lambda: _any_broker(servers)
    url = config.database.url

    def embedded() -> None:
        try:
            with psycopg.connect(url, connect_timeout=int(TIMEOUT_SECONDS)) as conn:
                conn.execute("SELECT 1 FROM forcelink.eventlog_partitions LIMIT 1")
        except psycopg.Error as error:
            raise SourceUnavailable("event log tables not reachable") from error

    return embedded


def _any_broker(servers: str) -> None:
    for server in (s.strip() for s in servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection(
                (host.strip("[]") or "localhost", int(port)), timeout=TIMEOUT_SECONDS
            ):
                return
        except (OSError, ValueError):
            continue
    raise SourceUnavailable("no Kafka bootstrap server accepts connections")


class OrgCheck:
    """Is the org reachable and does it still accept forcelink's key?"""

    def __init__(self, org: OrgConfig, conn: OrgConnection) -> None:
        self.org = org.name
        self.conn = conn
        self._logged_in_at: float | None = None
        self._instance_url = conn.instance_url or ""
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            session = http_session(self.conn)
            try:
                self._login_if_due(session)
                self._ping(session)
            except Exception:
                self._logged_in_at = None
                raise
            finally:
                session.close()

    def _login_if_due(self, session: requests.Session) -> None:
        due = self._logged_in_at is None or (
            time.monotonic() - self._logged_in_at > LOGIN_RECHECK_SECONDS
        )
        if not due:
            return
        token = fetch_token(self.conn, session, timeout=TIMEOUT_SECONDS)
        self._instance_url = token.instance_url or self._instance_url
        self._logged_in_at = time.monotonic()

    def _ping(self, session: requests.Session) -> None:
        url = f"{self._instance_url.rstrip('/')}/services/data/"
        try:
            response = session.get(url, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise SourceUnavailable(
                f"org {self.org} not reachable: {type(error).__name__}", org=self.org
            ) from error
        if response.status_code >= 400:
            raise SourceUnavailable(
                f"org {self.org} answered HTTP {response.status_code}", org=self.org
            )


def org_checks(orgs: dict[str, tuple[OrgConfig, OrgConnection]]) -> dict[str, Check]:
    """One ``org:<name>`` check per configured org."""
    return {f"org:{name}": OrgCheck(org, conn) for name, (org, conn) in orgs.items()}
