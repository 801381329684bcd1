"""The image API run on its own also answers /healthz, /readyz and /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.sf_to_pg.test_crash import free_port


def test_standalone_api_process__serves_health_and_metrics(
    fresh_database: str, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "forcelink.yaml"
    config.write_text(
        f"database:\n  url: {fresh_database}\n"
        f"images:\n  local_dir: {tmp_path / 'images'}\n"
        f"api:\n  keys_dir: {tmp_path / 'keys'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forcelink.api.server",
            "-c",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        metrics = httpx.get(f"{base}/metrics", timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert "forcelink_build_info" in metrics.text
