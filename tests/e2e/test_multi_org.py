"""Two orgs at once: each its own mappings, tables and offsets, unseen by the other."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from forcelink.mapping import apply, load_mappings
from tests.sf_to_pg.harness import row, rows, slot_streaming
from tests.sf_to_pg.test_crash import free_port, start, wait_until
from tests.support.local_org import LocalOrg

MAPPING = """\
org: {org}
object: Account
table: {org}.account
mode: read_write
upsert_key: External_Id__c
fields:
  External_Id__c: external_id__c
  Name: name
  Website: website
"""


@pytest.fixture
def second_org() -> Iterator[LocalOrg]:
    with tempfile.TemporaryDirectory(prefix="forcelink-org-b-") as workdir:
        other = LocalOrg(Path(workdir))
        other.start()
        try:
            yield other
        finally:
            other.stop()


def test_two_orgs__each_syncs_only_its_own_tables(
    org: LocalOrg, second_org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    orgs = {"alpha": org, "beta": second_org}
    for name in orgs:
        (tmp_path / f"{name}.yaml").write_text(MAPPING.format(org=name))
    apply(
        fresh_database, load_mappings([tmp_path / "alpha.yaml", tmp_path / "beta.yaml"])
    )
    config = tmp_path / "forcelink.yaml"
    config.write_text(
        f"database:\n  url: {fresh_database}\n"
        "orgs:\n"
        + "".join(
            f"  - name: {name}\n    connection_file: {o.connection_file}\n"
            for name, o in orgs.items()
        )
        + f"mappings:\n  - {tmp_path}/alpha.yaml\n  - {tmp_path}/beta.yaml\n"
        f"images:\n  local_dir: {tmp_path / 'images'}\n"
        f"api:\n  listen: 127.0.0.1:{free_port()}\n  keys_dir: {tmp_path / 'keys'}\n"
        f"metrics:\n  listen: 127.0.0.1:{free_port()}\n"
    )
    log = tmp_path / "run.log"
    process = start(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader streaming", log)
        made = {
            name: o.salesforce(client_tag="office").Account.create(
                {"Name": f"Only in {name}", "External_Id__c": f"{name}-1"}
            )["id"]
            for name, o in orgs.items()
        }
        for name, sfid in made.items():
            wait_until(
                lambda n=name, s=sfid: row(fresh_database, f"{n}.account", s),
                f"{name}'s record in {name}.account",
                log,
            )
        with psycopg.connect(fresh_database) as conn:
            conn.execute(
                "INSERT INTO beta.account (external_id__c, name)"
                " VALUES ('beta-app', 'B')"
            )
        wait_until(
            lambda: rows(
                fresh_database,
                "SELECT sfid FROM beta.account WHERE"
                " external_id__c = 'beta-app' AND sfid IS NOT NULL",
            ),
            "beta's app row in org beta",
            log,
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        theirs = rows(fresh_database, f"SELECT name FROM {name}.account")
        assert all(r["name"] != f"Only in {other}" for r in theirs)
    alpha_names = [
        r["Name"]
        for r in org.salesforce().query_all("SELECT Name FROM Account")["records"]
    ]
    beta_names = [
        r["Name"]
        for r in second_org.salesforce().query_all("SELECT Name FROM Account")[
            "records"
        ]
    ]
    assert alpha_names == ["Only in alpha"]
    assert sorted(beta_names) == ["B", "Only in beta"]
    offsets = rows(
        fresh_database,
        "SELECT org FROM forcelink.offsets WHERE source = 'cometd' ORDER BY org",
    )
    assert [o["org"] for o in offsets] == ["alpha", "beta"]
