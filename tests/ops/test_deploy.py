"""The alert rules and the dashboard: valid, tested, and written against the
metric names forcelink really exposes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forcelink.metrics import Metrics
from tests.ops.support import (
    DASHBOARD,
    PROMETHEUS_DIR,
    PROMTOOL,
    exposed_names,
    needs_promtool,
)

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"

# Series a histogram exposes beyond its name, and Prometheus' own.
_SUFFIXES = ("_bucket", "_sum", "_count")
_PROMETHEUS_OWN = {"up"}


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(forcelink_[a-z0-9_]+)", expr))


def _known_names() -> set[str]:
    names = exposed_names(Metrics())
    return names | {name + suffix for name in names for suffix in _SUFFIXES}


@needs_promtool
def test_alerts__promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


@needs_promtool
def test_alerts__promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS_DIR)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts__each_alert_is_tested_firing_and_silent() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in _alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires"
        assert any(not case["exp_alerts"] for case in mine), (
            f"{rule['alert']} is never shown silent"
        )


def test_alerts__required_situations_are_covered() -> None:
    names = {rule["alert"] for rule in _alert_rules()}
    for required in (
        "ForcelinkSyncLagHigh",
        "ForcelinkSlotWalRetentionGrowing",
        "ForcelinkDeadLettersWaiting",
        "ForcelinkApiAllowanceLow",
        "ForcelinkConnectorDown",
        "ForcelinkAuthenticationFailed",
    ):
        assert required in names


def test_alerts__use_only_exposed_metric_names() -> None:
    known = _known_names()
    for rule in _alert_rules():
        used = _metric_names(rule["expr"])
        assert used or "up{" in rule["expr"], rule["alert"]
        assert used <= known, (rule["alert"], used - known)


def test_dashboard__uses_only_exposed_metric_names() -> None:
    known = _known_names()
    exprs = _dashboard_exprs()
    assert exprs
    for expr in exprs:
        assert _metric_names(expr) <= known, (expr, _metric_names(expr) - known)


def test_dashboard__row_per_org_line_per_direction() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    panels = list(_panels(dashboard))

    assert {"org", "direction"} <= set(variables)
    assert variables["direction"]["query"] == "sf_to_pg,pg_to_sf"
    assert variables["org"]["includeAll"] and variables["org"]["multi"]
    rows = [p for p in panels if p["type"] == "row" and p.get("repeat") == "org"]
    assert len(rows) == 1
    per_direction = [p for p in panels if p.get("repeat") == "direction"]
    titles = " ".join(p["title"].lower() for p in per_direction)
    for topic in ("lag", "throughput", "errors", "dead letters"):
        assert topic in titles
    for panel in per_direction:
        for target in panel["targets"]:
            assert 'direction=~"$direction"' in target["expr"], target["expr"]
    every_title = " ".join(p["title"].lower() for p in panels)
    assert "api allowance" in every_title and "conflicts" in every_title
    assert len({p["id"] for p in panels}) == len(panels)


@needs_promtool
def test_dashboard__queries_parse_as_promql(tmp_path: Path) -> None:
    # promtool parses recording rules' expressions: wrap each dashboard query
    # in one, with Grafana's variables replaced as Grafana would.
    rules = []
    for number, expr in enumerate(_dashboard_exprs()):
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$org", "acme")
            .replace("$direction", "pg_to_sf")
        )
        rules.append(
            {"record": f"forcelink:dashboard_query_{number}", "expr": concrete}
        )
    file = tmp_path / "dashboard_rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = _promtool("check", "rules", str(file))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", [ALERTS, ALERT_TESTS])
def test_deploy__yaml_files_load(path: Path) -> None:
    assert yaml.safe_load(path.read_text())
