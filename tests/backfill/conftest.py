"""A database with the example mappings applied and a config naming the local org."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from forcelink.connector.salesforce.backfill import OrgApi
from forcelink.mapping import Mapping, apply, load_mappings
from forcelink.metrics import Metrics
from tests.support.local_org import LocalOrg

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    database_url: str
    config_file: Path
    mappings: list[Mapping]
    org: LocalOrg
    metrics: Metrics

    def api(self, name: str = "local") -> OrgApi:
        return OrgApi(name, self.org.connection(), "forcelink", self.metrics)

    def mapping(self, obj: str) -> Mapping:
        return next(m for m in self.mappings if m.object == obj)


@pytest.fixture
def setup(
    fresh_database: str, org: LocalOrg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Setup:
    monkeypatch.setenv("FORCELINK_DATABASE_URL", fresh_database)
    mappings = load_mappings([ROOT / "mappings"])
    apply(fresh_database, mappings)
    config_file = tmp_path / "forcelink.yaml"
    config_file.write_text(
        f"database: {{url: '{fresh_database}'}}\n"
        f"orgs:\n  - {{name: local, connection_file: '{org.connection_file}'}}\n"
        f"mappings: ['{ROOT / 'mappings'}/*.yaml']\n"
    )
    return Setup(fresh_database, config_file, mappings, org, Metrics())
