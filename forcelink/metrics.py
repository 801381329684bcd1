"""Every Prometheus instrument forcelink exposes, defined in one place.

Metric names are a public interface: the dashboard in ``deploy/grafana/`` and
the alert rules in ``deploy/prometheus/`` are written against them, and so are
the operators' own. Rename one only with a release note. Units are seconds and
bytes; counters end in ``_total``. ``docs/metrics.md`` repeats this table.

Label values must stay bounded: an org name from forcelink.yaml, a mapped
object name, an error class name, one of the fixed sets below. A record id,
an LSN, a replay id or a message never becomes a label value (it would make
one time series per record, and could carry data an operator should not see).

Each entry: name (type; labels), then what it measures.

forcelink_events_read_total (counter; org, direction, source, object, operation)
    changes read from a source; ``direction`` follows from ``source``
forcelink_events_applied_total (counter; org, direction, object, operation)
    changes written to the target side
forcelink_apply_errors_total (counter; org, direction, object, error_class)
    failed applies, by forcelink error class name
forcelink_end_to_end_delay_seconds (histogram; org, direction)
    source commit to target write; buckets 10 ms .. 60 s
forcelink_replication_lag_seconds (gauge; org, direction)
    age of the oldest change read but not yet applied; 0 when caught up
forcelink_slot_retained_wal_bytes (gauge; org)
    WAL the Postgres slot keeps: current WAL LSN minus the slot's restart LSN
forcelink_replay_position_age_seconds (gauge; org)
    age of the change behind the stored replay id (the org keeps 72 h)
forcelink_eventlog_consumer_lag_events (gauge; org, direction)
    events in the event log the consumer has not committed yet
forcelink_dead_letters_waiting (gauge; org, direction)
    dead letters not yet replayed or discarded
forcelink_conflicts_total (counter; org, object, policy, outcome)
    conflicts decided, by the mapping's policy and the outcome
forcelink_salesforce_api_calls_total (counter; org, kind)
    API requests sent to the org
forcelink_salesforce_api_remaining (gauge; org)
    the org's remaining daily API allowance (M - N of api-usage=N/M)
forcelink_salesforce_api_limit (gauge; org)
    the org's daily API allowance (M of api-usage=N/M)
forcelink_backfill_rows_total (counter; org, direction, object)
    rows copied by backfills
forcelink_backfill_progress_ratio (gauge; org, direction, object)
    done / total of the running or last backfill, 0 to 1
forcelink_connector_up (gauge; org, source)
    1 while the source connector is connected, else 0
forcelink_auth_failures_total (counter; org)
    authentications the org refused (JWT bearer grant, expired key)
forcelink_build_info (info; version, python)
    always 1; the labels say which build runs
forcelink_config_info (info; eventlog_backend, images_backend, orgs, digest)
    always 1; digest is the first 12 hex digits of the config file's SHA-256

Fixed label sets: ``direction`` is ``sf_to_pg`` or ``pg_to_sf``; ``source`` is
``postgres`` or ``salesforce``; ``operation`` is ``create``, ``update``,
``delete`` or ``undelete``; ``kind`` is ``rest``, ``collections``, ``query``,
``bulk``, ``streaming`` or ``auth``. The helpers below refuse other values, so
a typo fails the first test that reaches it instead of splitting a series.

Processes record into ``METRICS`` (built on prometheus_client's default
registry, which also carries the process and Python collectors). Tests build
their own ``Metrics()`` so that counts never leak from one test to the next.
"""

from __future__ import annotations

import hashlib
import platform
import re
from importlib import metadata

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

from forcelink.config import Config

DIRECTIONS = ("sf_to_pg", "pg_to_sf")
SOURCES = ("postgres", "salesforce")
OPERATIONS = ("create", "update", "delete", "undelete")
API_KINDS = ("rest", "collections", "query", "bulk", "streaming", "auth")

DIRECTION_OF_SOURCE = {"postgres": "pg_to_sf", "salesforce": "sf_to_pg"}

DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""End-to-end delay buckets: the 100 ms capture, 1 s and 2 s targets fall on
bucket bounds, so ``histogram_quantile`` is exact where it matters."""

# The header may also carry "per-app-api-usage=17/250(appName=x)": that is a
# connected app's own quota, not the org's, hence the look-behind.
_API_USAGE = re.compile(r"(?<![\w-])api-usage=(\d+)/(\d+)")


def _check(label: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"metric label {label}={value!r} is not one of {allowed}")
    return value


class Metrics:
    """The instruments, registered on ``registry`` (a new one when ``None``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._define_flow()
        self._define_positions()
        self._define_salesforce()
        self._define_state()

    def _define_flow(self) -> None:
        r = self.registry
        self.events_read = Counter(
            "forcelink_events_read_total",
            "Changes read from a source.",
            ["org", "direction", "source", "object", "operation"],
            registry=r,
        )
        self.events_applied = Counter(
            "forcelink_events_applied_total",
            "Changes written to the target side.",
            ["org", "direction", "object", "operation"],
            registry=r,
        )
        self.apply_errors = Counter(
            "forcelink_apply_errors_total",
            "Failed applies, by forcelink error class.",
            ["org", "direction", "object", "error_class"],
            registry=r,
        )
        self.end_to_end_delay = Histogram(
            "forcelink_end_to_end_delay_seconds",
            "Time from the commit at the source to the write at the target.",
            ["org", "direction"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.conflicts = Counter(
            "forcelink_conflicts_total",
            "Conflicts decided, by mapping policy and outcome.",
            ["org", "object", "policy", "outcome"],
            registry=r,
        )

    def _define_positions(self) -> None:
        r = self.registry
        self.replication_lag = Gauge(
            "forcelink_replication_lag_seconds",
            "Age of the oldest change read but not yet applied; 0 when caught up.",
            ["org", "direction"],
            registry=r,
        )
        self.slot_retained_wal = Gauge(
            "forcelink_slot_retained_wal_bytes",
            "WAL bytes the Postgres replication slot keeps on disk.",
            ["org"],
            registry=r,
        )
        self.replay_position_age = Gauge(
            "forcelink_replay_position_age_seconds",
            "Age of the change behind the stored Salesforce replay id.",
            ["org"],
            registry=r,
        )
        self.eventlog_consumer_lag = Gauge(
            "forcelink_eventlog_consumer_lag_events",
            "Events in the event log not yet committed by forcelink's consumer.",
            ["org", "direction"],
            registry=r,
        )
        self.backfill_rows = Counter(
            "forcelink_backfill_rows_total",
            "Rows copied by backfills.",
            ["org", "direction", "object"],
            registry=r,
        )
        self.backfill_progress_ratio = Gauge(
            "forcelink_backfill_progress_ratio",
            "Done / total of the running or last backfill, 0 to 1.",
            ["org", "direction", "object"],
            registry=r,
        )

    def _define_salesforce(self) -> None:
        r = self.registry
        self.api_calls = Counter(
            "forcelink_salesforce_api_calls_total",
            "API requests sent to the org, by kind.",
            ["org", "kind"],
            registry=r,
        )
        self.api_remaining = Gauge(
            "forcelink_salesforce_api_remaining",
            "The org's remaining daily API allowance.",
            ["org"],
            registry=r,
        )
        self.api_limit = Gauge(
            "forcelink_salesforce_api_limit",
            "The org's daily API allowance.",
            ["org"],
            registry=r,
        )
        self.auth_failures = Counter(
            "forcelink_auth_failures_total",
            "Refused authentications against the org.",
            ["org"],
            registry=r,
        )

    def _define_state(self) -> None:
        r = self.registry
        self.dead_letters_waiting = Gauge(
            "forcelink_dead_letters_waiting",
            "Dead letters not yet replayed or discarded.",
            ["org", "direction"],
            registry=r,
        )
        self.connector_up = Gauge(
            "forcelink_connector_up",
            "1 while the source connector is connected, else 0.",
            ["org", "source"],
            registry=r,
        )
        self.build_info = Info(
            "forcelink_build", "The forcelink build that runs.", registry=r
        )
        self.config_info = Info(
            "forcelink_config", "The configuration in use.", registry=r
        )
        self.build_info.info(
            {"version": _version(), "python": platform.python_version()}
        )

    # Helpers: they check the bounded label sets, then record.

    def declare_org(self, org: str) -> None:
        """Create an org's zero-valued series before anything happens.

        ``increase()`` cannot see a counter's first step from "absent" to 1,
        so an alert on the first authentication failure needs the series to
        exist at 0 beforehand; the dashboard's org list also comes from here.
        """
        self.auth_failures.labels(org=org)
        for direction in DIRECTIONS:
            self.dead_letters_waiting.labels(org=org, direction=direction).set(0)
            self.replication_lag.labels(org=org, direction=direction).set(0)

    def event_read(
        self, org: str, source: str, obj: str, operation: str, count: int = 1
    ) -> None:
        direction = DIRECTION_OF_SOURCE[_check("source", source, SOURCES)]
        self.events_read.labels(
            org=org,
            direction=direction,
            source=source,
            object=obj,
            operation=_check("operation", operation, OPERATIONS),
        ).inc(count)

    def event_applied(
        self,
        org: str,
        direction: str,
        obj: str,
        operation: str,
        delay_seconds: float | None = None,
    ) -> None:
        """Count one applied change and, when its source commit time is known,
        observe its end-to-end delay."""
        _check("direction", direction, DIRECTIONS)
        self.events_applied.labels(
            org=org,
            direction=direction,
            object=obj,
            operation=_check("operation", operation, OPERATIONS),
        ).inc()
        if delay_seconds is not None:
            self.end_to_end_delay.labels(org=org, direction=direction).observe(
                max(delay_seconds, 0.0)
            )

    def apply_error(
        self, org: str, direction: str, obj: str, error: BaseException
    ) -> None:
        """Count a failed apply under the error's class name (a bounded set)."""
        self.apply_errors.labels(
            org=org,
            direction=_check("direction", direction, DIRECTIONS),
            object=obj,
            error_class=type(error).__name__,
        ).inc()

    def conflict(self, org: str, obj: str, policy: str, outcome: str) -> None:
        self.conflicts.labels(org=org, object=obj, policy=policy, outcome=outcome).inc()

    def api_call(self, org: str, kind: str, count: int = 1) -> None:
        self.api_calls.labels(org=org, kind=_check("kind", kind, API_KINDS)).inc(count)

    def api_usage(self, org: str, limit_info: str | None) -> bool:
        """Record the allowance from a ``Sforce-Limit-Info`` header value.

        ``"api-usage=25/15000"`` sets remaining to 14975 and the limit to
        15000. Returns False (and records nothing) when the header is absent
        or carries no api-usage part.
        """
        found = _API_USAGE.search(limit_info or "")
        if not found:
            return False
        used, limit = int(found.group(1)), int(found.group(2))
        self.api_remaining.labels(org=org).set(max(limit - used, 0))
        self.api_limit.labels(org=org).set(limit)
        return True

    def backfill_progress(
        self, org: str, direction: str, obj: str, done: int, total: int
    ) -> None:
        """Set the progress ratio; a backfill of nothing is complete."""
        ratio = 1.0 if total <= 0 else min(done / total, 1.0)
        self.backfill_progress_ratio.labels(
            org=org, direction=_check("direction", direction, DIRECTIONS), object=obj
        ).set(ratio)

    def set_connector_up(self, org: str, source: str, up: bool) -> None:
        self.connector_up.labels(org=org, source=_check("source", source, SOURCES)).set(
            1 if up else 0
        )

    def set_config(self, config: Config) -> None:
        """Publish which configuration runs, without any value from it that
        could be a secret: backends, the org count and a short digest."""
        self.config_info.info(
            {
                "eventlog_backend": config.eventlog.backend,
                "images_backend": config.images.backend,
                "orgs": str(len(config.orgs)),
                "digest": _config_digest(config.source),
            }
        )


def _config_digest(source: str | None) -> str:
    """First 12 hex digits of the config file's SHA-256: enough to tell two
    deployments apart, too short to guess anything in the file from."""
    if not source:
        return "defaults"
    try:
        with open(source, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()[:12]
    except OSError:
        return "defaults"


def _version() -> str:
    try:
        return metadata.version("forcelink")
    except metadata.PackageNotFoundError:
        return "unknown"


METRICS = Metrics(REGISTRY)
"""The process-wide instance served at ``/metrics``."""
