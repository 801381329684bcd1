"""Shared helpers for the operations tests: paths, promtool, free ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from forcelink.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "forcelink.json"

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

needs_promtool = pytest.mark.skipif(
    not os.access(PROMTOOL, os.X_OK),
    reason="promtool missing: apt-get install prometheus (scripts/install.sh does)",
)
needs_prometheus = pytest.mark.skipif(
    not os.access(PROMETHEUS, os.X_OK),
    reason="prometheus missing: apt-get install prometheus (scripts/install.sh does)",
)


def exposed_names(metrics: Metrics) -> set[str]:
    """Every metric name as a scraper sees it (``# TYPE`` lines)."""
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


_handed_out: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1: from FORCELINK_PORT_BASE + 50 .. + 99
    when that is set (private ranges on shared machines), else any.

    Ports from the private range are handed out once per test session, so
    the range allows 50 servers per session."""
    base = os.environ.get("FORCELINK_PORT_BASE")
    candidates = range(int(base) + 50, int(base) + 100) if base else [0] * 20
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen = int(sock.getsockname()[1])
        # The caller binds it later: never hand the same port out twice.
        _handed_out.add(chosen)
        return chosen
    raise RuntimeError(f"no free port in {candidates}")
