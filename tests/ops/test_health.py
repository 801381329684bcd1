"""/metrics, /healthz and /readyz, served by serve() and by mount_on()."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from forcelink import health
from forcelink.errors import ConfigError, SourceUnavailable
from forcelink.health import ServerHandle, database_check, readiness, serve
from forcelink.metrics import Metrics
from tests.ops.support import ROOT, free_port

SECRET_DSN = "postgresql://sync:hunter2-very-secret@db.internal/forcelink"


def _fail_with_secret() -> None:
    raise SourceUnavailable(f"cannot reach {SECRET_DSN}")


def _ok() -> None:
    return None


def _get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture
def metrics() -> Metrics:
    metrics = Metrics()
    metrics.declare_org("acme")
    metrics.replication_lag.labels(org="acme", direction="pg_to_sf").set(2.5)
    return metrics


@pytest.fixture
def server(metrics: Metrics) -> Iterator[ServerHandle]:
    handle = serve("127.0.0.1:0", metrics.registry, {"database": _ok})
    yield handle
    handle.close()


def test_serve__metrics_in_text_format(server: ServerHandle) -> None:
    status, content_type, body = _get(server.url + "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain")
    line = 'forcelink_replication_lag_seconds{direction="pg_to_sf",org="acme"} 2.5'
    assert line in body.decode()


def test_serve__metrics_in_openmetrics_when_asked(server: ServerHandle) -> None:
    status, content_type, body = _get(
        server.url + "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )

    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


def test_serve__healthz_and_unknown_path(server: ServerHandle) -> None:
    assert _get(server.url + "/healthz")[::2] == (200, b'{"status": "alive"}')
    assert _get(server.url + "/nothing")[0] == 404


def test_serve__readyz_ok(server: ServerHandle) -> None:
    status, content_type, body = _get(server.url + "/readyz")

    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ready", "checks": {"database": "ok"}}


def test_serve__readyz_names_failures_without_secrets(metrics: Metrics) -> None:
    checks = {"database": _ok, "eventlog": _fail_with_secret, "org:acme": _ok}
    handle = serve("127.0.0.1:0", metrics.registry, checks)
    try:
        status, _, body = _get(handle.url + "/readyz")
    finally:
        handle.close()

    assert status == 503
    assert json.loads(body) == {
        "status": "not ready",
        "checks": {
            "database": "ok",
            "eventlog": "failed: SourceUnavailable",
            "org:acme": "ok",
        },
        "failing": ["eventlog"],
    }
    assert b"hunter2" not in body


def test_readiness__a_hung_check_times_out_alone() -> None:
    release = threading.Event()
    started = time.monotonic()
    try:
        ready, body = readiness(
            {"stuck": lambda: release.wait(10) and None, "database": _ok}, timeout=0.3
        )
    finally:
        release.set()

    assert time.monotonic() - started < 3
    assert not ready
    assert body["checks"] == {"stuck": "failed: Timeout", "database": "ok"}
    assert body["failing"] == ["stuck"]


def test_readiness__no_checks_means_ready() -> None:
    assert readiness({}) == (True, {"status": "ready", "checks": {}})


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9400", ("127.0.0.1", 9400)),
        ("[::1]:9400", ("::1", 9400)),
        (":9400", ("0.0.0.0", 9400)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert health.parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9400", "localhost", "host:port", ""])
def test_parse_listen__refuses_malformed(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        health.parse_listen(listen)


def test_serve__port_in_use_is_a_config_error(server: ServerHandle) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        serve(f"127.0.0.1:{server.port}", Metrics().registry)


def test_serve__close_frees_the_port(metrics: Metrics) -> None:
    port = free_port()
    serve(f"127.0.0.1:{port}", metrics.registry).close()

    again = serve(f"127.0.0.1:{port}", metrics.registry)
    again.close()


def test_mount_on__fastapi_app(metrics: Metrics) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    health.mount_on(app, metrics.registry, {"eventlog": _fail_with_secret})
    client = TestClient(app)

    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "forcelink_replication_lag_seconds" in scraped.text
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["eventlog"]
    assert "hunter2" not in ready.text


def test_database_check__real_postgres(database_url: str) -> None:
    database_check(database_url)()


def test_database_check__unreachable_is_source_unavailable() -> None:
    url = f"postgresql://sync:hunter2@127.0.0.1:{free_port()}/forcelink"

    with pytest.raises(SourceUnavailable) as raised:
        database_check(url, timeout=1)()
    assert "hunter2" not in str(raised.value)


def test_standalone__bad_listen_address_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "forcelink.health", "--listen", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "metrics.listen: listen address 'nonsense' is not host:port" in result.stderr
