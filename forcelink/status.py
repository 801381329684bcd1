"""What ``forcelink status`` and the status page show: one report per call.

The report is built from two sources:

* the database, always: per mapping the rows pending / failed / in conflict
  (``_sync_state``, through the partial index on unsynced rows) and the last
  sync time, dead letters waiting, conflicts decided today, and the lag of
  each consumer group read straight from the event log (``forcelink.lag``);
* the running service, when it answers: ``/metrics`` for the lag it sampled,
  the API allowance its clients saw and its connector states, ``/readyz``
  for what is failing. Where it listens comes from the run file
  (``.forcelink/run.json``) or else ``metrics.listen``.

When the service does not answer, the report says so (``service: down``)
and every org is ``stopped``; the database numbers are still there.

States, worst first: ``stopped`` (no service), ``failing`` (a readiness check
of the org, the database or the event log fails, or its Salesforce stream is
down), ``lagging`` (the oldest waiting change is older than
``LAGGING_SECONDS``), ``errors`` (failed rows or dead letters waiting),
``ok``. The report holds counts and states only, never record data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from forcelink.config import Config
from forcelink.errors import ForcelinkError, SourceUnavailable
from forcelink.lag import GroupLag, History, groups_for, sample_lag
from forcelink.mapping import Mapping, load_mappings

log = logging.getLogger("forcelink.status")

LAGGING_SECONDS = 60.0
"""Matches the ``ForcelinkSyncLagHigh`` alert's threshold."""

HTTP_TIMEOUT = 8.0
STATES = ("stopped", "failing", "lagging", "errors", "ok")

DIRECTION_OF_MODE = {
    "read_only": ("sf_to_pg",),
    "write_only": ("pg_to_sf",),
    "read_write": ("sf_to_pg", "pg_to_sf"),
}
_SHORT = {"sf_to_pg": "sf→pg", "pg_to_sf": "pg→sf"}


@dataclass
class MappingStatus:
    object: str
    table: str
    direction: str
    """``sf→pg``, ``pg→sf`` or ``both``."""
    state: str = "ok"
    lag_seconds: float | None = None
    last_sync: str | None = None
    pending: int = 0
    failed: int = 0
    conflict_rows: int = 0
    dead_letters: int = 0
    conflicts_today: int = 0


@dataclass
class OrgStatus:
    name: str
    state: str = "ok"
    reasons: list[str] = field(default_factory=list)
    lag_seconds: dict[str, float] = field(default_factory=dict)
    waiting_events: dict[str, int] = field(default_factory=dict)
    api_calls: int | None = None
    """Calls forcelink made since the service started."""
    api_used: int | None = None
    """The org's usage today, as the last ``Sforce-Limit-Info`` said."""
    api_remaining: int | None = None
    api_limit: int | None = None
    mappings: list[MappingStatus] = field(default_factory=list)


@dataclass
class Report:
    generated_at: str
    service: str
    """``running`` or ``down``."""
    service_url: str | None
    failing_checks: list[str]
    orgs: list[OrgStatus]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ServiceView:
    """What the running service said, if it answered."""

    up: bool = False
    url: str | None = None
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(
        default_factory=dict
    )
    failing: list[str] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over the series of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        found = [
            v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls)
        ]
        return sum(found) if found else None


def service_url(config: Config, run_file: Path | None) -> str:
    """Where the service's /metrics and /readyz are: run file, else config."""
    if run_file is not None:
        try:
            info = json.loads(run_file.read_text(encoding="utf-8"))
            metrics_url = str(info.get("metrics_url") or "")
            if metrics_url:
                return metrics_url.removesuffix("/metrics")
        except (OSError, ValueError):
            pass
    return f"http://{config.metrics.listen}"


def read_service(base_url: str, timeout: float = HTTP_TIMEOUT) -> ServiceView:
    """Scrape ``/metrics`` and ask ``/readyz``; ``up=False`` if no answer."""
    view = ServiceView(url=base_url)
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as answer:
            text = answer.read().decode("utf-8")
    except (OSError, urllib.error.URLError) as error:
        log.debug("service at %s not answering: %s", base_url, error)
        return view
    view.up = True
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            view.samples[key] = float(sample.value)
    view.failing = _failing_checks(base_url, timeout)
    return view


def _failing_checks(base_url: str, timeout: float) -> list[str]:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout) as answer:
            body = json.load(answer)
    except urllib.error.HTTPError as error:
        try:
            body = json.load(error)
        except ValueError:
            return ["readyz"]
    except (OSError, ValueError):
        return ["readyz"]
    return [str(name) for name in body.get("failing", [])]


def collect(
    config: Config,
    *,
    run_file: Path | None = None,
    org: str | None = None,
    mappings: Sequence[Mapping] | None = None,
    service: ServiceView | None = None,
    history: History | None = None,
) -> Report:
    """Build the report; raises SourceUnavailable when the database is down.

    With ``history``, the event-log lag read here is also offered to it as a
    point (it keeps one per ~10 s, so a busy page does not crowd it).
    """
    names = [o.name for o in config.orgs if org is None or o.name == org]
    if mappings is None:
        mappings = load_mappings(config.mappings)
    mine = [m for m in mappings if m.org in names]
    if service is None:
        service = read_service(service_url(config, run_file))
    lags = _event_log_lag(config, mine)
    if history is not None and lags:
        history.record(lags)
    tables = _database_counts(config.database.url, mine)
    orgs = [_org_status(name, mine, tables, lags, service) for name in names]
    return Report(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        service="running" if service.up else "down",
        service_url=service.url,
        failing_checks=service.failing,
        orgs=orgs,
    )


def _event_log_lag(config: Config, mappings: Sequence[Mapping]) -> list[GroupLag]:
    groups = groups_for(mappings)
    try:
        return asyncio.run(sample_lag(config, groups))
    except ForcelinkError as error:
        log.warning("event log lag unknown: %s", error)
        return []


@dataclass
class _Counts:
    pending: int = 0
    failed: int = 0
    conflict: int = 0
    last_sync: datetime | None = None


@dataclass
class _Tables:
    counts: dict[tuple[str, str], _Counts]
    dead_letters: dict[tuple[str, str], int]
    conflicts_today: dict[tuple[str, str], int]


def _database_counts(url: str, mappings: Sequence[Mapping]) -> _Tables:
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            counts = {(m.org, m.object): _table_counts(conn, m) for m in mappings}
            dead = conn.execute(
                "SELECT org, object, count(*) FROM forcelink.dead_letters"
                " WHERE state IN ('open', 'retrying') GROUP BY org, object"
            ).fetchall()
            conflicts = conn.execute(
                "SELECT org, object, count(*) FROM forcelink.conflicts"
                " WHERE decided_at >= date_trunc('day', now()) GROUP BY org, object"
            ).fetchall()
    except psycopg.Error as error:
        raise SourceUnavailable(
            f"cannot read the database: {type(error).__name__}"
        ) from error
    return _Tables(
        counts,
        {(o, obj): int(n) for o, obj, n in dead},
        {(o, obj): int(n) for o, obj, n in conflicts},
    )


def _table_counts(conn: psycopg.Connection[Any], mapping: Mapping) -> _Counts:
    """Unsynced rows by state (partial index) and the newest ``_sync_at``.

    A mapped table that does not exist yet (mappings not applied) counts as
    empty rather than failing the whole report.
    """
    table = sql.Identifier(mapping.schema, mapping.table_name)
    try:
        states = conn.execute(
            sql.SQL(
                "SELECT _sync_state, count(*) FROM {} WHERE _sync_state <> 'synced'"
                " GROUP BY _sync_state"
            ).format(table)
        ).fetchall()
        last = conn.execute(sql.SQL("SELECT max(_sync_at) FROM {}").format(table))
        newest = last.fetchone()
    except psycopg.errors.UndefinedTable:
        return _Counts()
    by_state = {str(s): int(n) for s, n in states}
    return _Counts(
        pending=by_state.get("pending", 0),
        failed=by_state.get("failed", 0),
        conflict=by_state.get("conflict", 0),
        last_sync=newest[0] if newest else None,
    )


def _org_status(
    name: str,
    mappings: Sequence[Mapping],
    tables: _Tables,
    lags: Sequence[GroupLag],
    service: ServiceView,
) -> OrgStatus:
    status = OrgStatus(name=name)
    now = time.time()
    for item in lags:
        if item.group.org == name:
            status.lag_seconds[item.group.direction] = round(item.seconds(now), 1)
            status.waiting_events[item.group.direction] = item.waiting
    _service_numbers(status, service)
    for m in mappings:
        if m.org == name:
            status.mappings.append(_mapping_status(m, status, tables))
    _decide(status, service)
    return status


def _service_numbers(status: OrgStatus, service: ServiceView) -> None:
    """Prefer the lag the service sampled; take the allowance it saw."""
    name = status.name
    for direction in list(status.lag_seconds):
        sampled = service.value(
            "forcelink_replication_lag_seconds", org=name, direction=direction
        )
        if sampled is not None:
            status.lag_seconds[direction] = round(sampled, 1)
    calls = service.total("forcelink_salesforce_api_calls_total", org=name)
    remaining = service.value("forcelink_salesforce_api_remaining", org=name)
    limit = service.value("forcelink_salesforce_api_limit", org=name)
    status.api_calls = None if calls is None else int(calls)
    if remaining is not None and limit is not None:
        status.api_remaining, status.api_limit = int(remaining), int(limit)
        status.api_used = int(limit - remaining)


def _mapping_status(mapping: Mapping, org: OrgStatus, tables: _Tables) -> MappingStatus:
    key = (mapping.org, mapping.object)
    counts = tables.counts.get(key, _Counts())
    directions = DIRECTION_OF_MODE[mapping.mode]
    lags = [org.lag_seconds[d] for d in directions if d in org.lag_seconds]
    return MappingStatus(
        object=mapping.object,
        table=mapping.table,
        direction="both" if len(directions) == 2 else _SHORT[directions[0]],
        lag_seconds=max(lags) if lags else None,
        last_sync=counts.last_sync.isoformat(timespec="seconds")
        if counts.last_sync
        else None,
        pending=counts.pending,
        failed=counts.failed,
        conflict_rows=counts.conflict,
        dead_letters=tables.dead_letters.get(key, 0),
        conflicts_today=tables.conflicts_today.get(key, 0),
    )


def _decide(status: OrgStatus, service: ServiceView) -> None:
    """Set the org's and each mapping's state, worst reason first."""
    reasons = _org_reasons(status, service)
    status.reasons = [text for _, text in reasons]
    base = min((state for state, _ in reasons), key=STATES.index, default="ok")
    for m in status.mappings:
        own = "errors" if m.failed or m.dead_letters else "ok"
        if (m.lag_seconds or 0) > LAGGING_SECONDS:
            own = "lagging"
        m.state = min(base, own, key=STATES.index)
    worst = [m.state for m in status.mappings] + [base]
    status.state = min(worst, key=STATES.index)


def _org_reasons(status: OrgStatus, service: ServiceView) -> list[tuple[str, str]]:
    if not service.up:
        return [("stopped", "the service is not running (or not answering)")]
    reasons: list[tuple[str, str]] = []
    for check in service.failing:
        if check in (f"org:{status.name}", "database", "eventlog", "readyz"):
            reasons.append(("failing", f"readiness check {check} fails"))
    stream = service.value(
        "forcelink_connector_up", org=status.name, source="salesforce"
    )
    if stream == 0:
        reasons.append(("failing", "the Salesforce change stream is disconnected"))
    for direction, seconds in sorted(status.lag_seconds.items()):
        if seconds > LAGGING_SECONDS:
            reasons.append(("lagging", f"{_SHORT[direction]} {seconds:.0f} s behind"))
    return reasons
