"""The metric names are a public interface: check them, their docs and users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forcelink import config as config_module
from forcelink import metrics as metrics_module
from forcelink.errors import RecordRejected, SessionExpired
from forcelink.metrics import DELAY_BUCKETS, Metrics
from tests.ops.support import ROOT, exposed_names

REQUIRED = {
    "forcelink_events_read_total",
    "forcelink_events_applied_total",
    "forcelink_apply_errors_total",
    "forcelink_end_to_end_delay_seconds",
    "forcelink_replication_lag_seconds",
    "forcelink_slot_retained_wal_bytes",
    "forcelink_replay_position_age_seconds",
    "forcelink_eventlog_consumer_lag_events",
    "forcelink_dead_letters_waiting",
    "forcelink_conflicts_total",
    "forcelink_salesforce_api_calls_total",
    "forcelink_salesforce_api_remaining",
    "forcelink_backfill_rows_total",
    "forcelink_backfill_progress_ratio",
    "forcelink_connector_up",
    "forcelink_auth_failures_total",
    "forcelink_build_info",
    "forcelink_config_info",
}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def test_metrics__required_names_are_exposed(metrics: Metrics) -> None:
    assert exposed_names(metrics) >= REQUIRED


def test_metrics__names_follow_the_naming_rules(metrics: Metrics) -> None:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    assert types
    for name, kind in types.items():
        assert name.startswith("forcelink_"), name
        assert not re.search(r"_(ms|milliseconds|minutes|kb|mb)(_|$)", name), name
        assert (kind == "counter") == name.endswith("_total"), (name, kind)


def test_metrics__each_registry_counts_alone() -> None:
    first, second = Metrics(), Metrics()
    first.api_call("acme", "rest")

    value = first.registry.get_sample_value(
        "forcelink_salesforce_api_calls_total", {"org": "acme", "kind": "rest"}
    )
    other = second.registry.get_sample_value(
        "forcelink_salesforce_api_calls_total", {"org": "acme", "kind": "rest"}
    )
    assert (value, other) == (1.0, None)


def test_metrics__event_read_derives_direction_from_source(metrics: Metrics) -> None:
    metrics.event_read("acme", "postgres", "Account", "update", count=3)
    metrics.event_read("acme", "salesforce", "Account", "create")

    get = metrics.registry.get_sample_value
    base = {"org": "acme", "object": "Account"}
    assert get(
        "forcelink_events_read_total",
        {**base, "direction": "pg_to_sf", "source": "postgres", "operation": "update"},
    ) == pytest.approx(3)
    assert get(
        "forcelink_events_read_total",
        {
            **base,
            "direction": "sf_to_pg",
            "source": "salesforce",
            "operation": "create",
        },
    ) == pytest.approx(1)


def test_metrics__event_applied_observes_delay(metrics: Metrics) -> None:
    metrics.event_applied("acme", "pg_to_sf", "Contact", "create", delay_seconds=0.08)
    metrics.event_applied("acme", "pg_to_sf", "Contact", "create", delay_seconds=3.0)
    metrics.event_applied("acme", "pg_to_sf", "Contact", "create")

    get = metrics.registry.get_sample_value
    labels = {"org": "acme", "direction": "pg_to_sf"}
    assert get(
        "forcelink_events_applied_total",
        {**labels, "object": "Contact", "operation": "create"},
    ) == pytest.approx(3)
    assert get("forcelink_end_to_end_delay_seconds_count", labels) == 2
    assert get(
        "forcelink_end_to_end_delay_seconds_bucket", {**labels, "le": "0.1"}
    ) == pytest.approx(1)
    assert get(
        "forcelink_end_to_end_delay_seconds_bucket", {**labels, "le": "5.0"}
    ) == pytest.approx(2)


def test_metrics__delay_buckets_span_10ms_to_60s() -> None:
    assert DELAY_BUCKETS[0] == 0.01 and DELAY_BUCKETS[-1] == 60.0
    assert list(DELAY_BUCKETS) == sorted(DELAY_BUCKETS)
    for target in (0.1, 1.0, 2.0):
        assert target in DELAY_BUCKETS


def test_metrics__apply_error_is_labelled_by_class(metrics: Metrics) -> None:
    error = RecordRejected("FIELD_CUSTOM_VALIDATION_EXCEPTION", record="001xx0000001")
    metrics.apply_error("acme", "pg_to_sf", "Account", error)
    metrics.apply_error("acme", "pg_to_sf", "Account", SessionExpired("token gone"))

    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'error_class="RecordRejected"' in text
    assert 'error_class="SessionExpired"' in text
    # The record id stays in the error, never in a label.
    assert "001xx0000001" not in text


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("event_read", ("acme", "kafka", "Account", "update")),
        ("event_read", ("acme", "postgres", "Account", "upsert")),
        ("event_applied", ("acme", "both", "Account", "update")),
        ("api_call", ("acme", "soap")),
        ("set_connector_up", ("acme", "s3", True)),
        ("backfill_progress", ("acme", "sideways", "Account", 1, 2)),
    ],
)
def test_metrics__unbounded_label_values_are_refused(
    metrics: Metrics, call: str, args: tuple[object, ...]
) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        getattr(metrics, call)(*args)


@pytest.mark.parametrize(
    ("header", "remaining", "limit"),
    [
        ("api-usage=25/15000", 14975, 15000),
        ("api-usage=18/5000; per-app-api-usage=17/250(appName=x)", 4982, 5000),
        ("per-app-api-usage=17/250(appName=x); api-usage=18/5000", 4982, 5000),
        ("api-usage=16000/15000", 0, 15000),
        ("per-app-api-usage=17/250(appName=x)", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_metrics__api_usage_header(
    metrics: Metrics, header: str | None, remaining: int | None, limit: int | None
) -> None:
    recorded = metrics.api_usage("acme", header)

    get = metrics.registry.get_sample_value
    assert recorded == (limit is not None)
    assert get("forcelink_salesforce_api_remaining", {"org": "acme"}) == remaining
    assert get("forcelink_salesforce_api_limit", {"org": "acme"}) == limit


@pytest.mark.parametrize(
    ("done", "total", "ratio"),
    [(0, 100, 0.0), (25, 100, 0.25), (100, 100, 1.0), (120, 100, 1.0), (0, 0, 1.0)],
)
def test_metrics__backfill_progress(
    metrics: Metrics, done: int, total: int, ratio: float
) -> None:
    metrics.backfill_progress("acme", "sf_to_pg", "Account", done, total)

    value = metrics.registry.get_sample_value(
        "forcelink_backfill_progress_ratio",
        {"org": "acme", "direction": "sf_to_pg", "object": "Account"},
    )
    assert value == pytest.approx(ratio)


def test_metrics__declare_org_publishes_zeroes(metrics: Metrics) -> None:
    metrics.declare_org("acme")

    get = metrics.registry.get_sample_value
    assert get("forcelink_auth_failures_total", {"org": "acme"}) == 0
    for direction in ("sf_to_pg", "pg_to_sf"):
        labels = {"org": "acme", "direction": direction}
        assert get("forcelink_dead_letters_waiting", labels) == 0
        assert get("forcelink_replication_lag_seconds", labels) == 0


def test_metrics__build_and_config_info(metrics: Metrics, tmp_path: Path) -> None:
    file = tmp_path / "forcelink.yaml"
    file.write_text(
        "orgs:\n  - name: acme\n    login_url: https://login.example.test\n"
        "    client_id: 3MVG9client\n    username: sync@acme.test\n"
        "    private_key_file: /secret/place/key.pem\n"
        "eventlog:\n  backend: kafka\n"
    )
    metrics.set_config(config_module.load(file, environ={}))

    from importlib import metadata

    from prometheus_client import generate_latest

    get = metrics.registry.get_sample_value
    version = metadata.version("forcelink")
    assert get("forcelink_build_info", {"version": version, "python": _python()}) == 1
    text = generate_latest(metrics.registry).decode()
    info = re.search(r"^forcelink_config_info\{(.*)\} 1\.0$", text, re.MULTILINE)
    assert info, text
    assert 'eventlog_backend="kafka"' in info.group(1)
    assert 'orgs="1"' in info.group(1)
    assert re.search(r'digest="[0-9a-f]{12}"', info.group(1))
    assert "/secret/place" not in text


def _python() -> str:
    import platform

    return platform.python_version()


def test_metrics__every_metric_is_documented(metrics: Metrics) -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text()
    module_doc = metrics_module.__doc__ or ""
    for name in exposed_names(metrics):
        assert name in module_doc, f"{name} missing from forcelink/metrics.py"
        assert f"`{name}`" in docs, f"{name} missing from docs/metrics.md"
