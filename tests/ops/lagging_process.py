"""A forcelink process whose Postgres side is behind by a known lag.

Run as ``python -m tests.ops.lagging_process LISTEN LAG_SECONDS``: it records
the lag into forcelink's process-wide METRICS, serves them with
forcelink.health.serve() and prints its URL, then runs until killed. The
scrape test uses it to see a value it chose travel through the real exporter
and a real Prometheus server.
"""

from __future__ import annotations

import sys
import time

from forcelink.health import serve
from forcelink.metrics import METRICS


def main(listen: str, lag_seconds: float) -> None:
    METRICS.declare_org("acme")
    METRICS.replication_lag.labels(org="acme", direction="pg_to_sf").set(lag_seconds)
    handle = serve(listen, METRICS.registry, {"database": lambda: None})
    print(f"listening on {handle.url}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
