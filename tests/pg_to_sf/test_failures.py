"""Rejected records fail alone; transient faults end synced, nothing doubled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from forcelink import cli
from tests.pg_to_sf.conftest import Pipeline, start_pipeline, stop_pipeline
from tests.support.local_org import LocalOrg

INSERT_MANY = (
    "INSERT INTO salesforce.account (external_id__c, name, numberofemployees)"
    " SELECT 'E' || g, 'Account ' || g, CASE WHEN g = %s THEN -1 ELSE g END"
    " FROM generate_series(1, %s) AS g"
)


def letters(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    with psycopg.connect(pipeline.db) as conn:
        return conn.execute(
            "SELECT state, attempts, object, record_key, error_class"
            " FROM forcelink.dead_letters ORDER BY id"
        ).fetchall()


async def dlq(
    pipeline: Pipeline, folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> int:
    """``forcelink -c <this run's forcelink.yaml> dlq ...``, in process."""
    config = pipeline.config_file(folder)
    # The environment wins over the file: point it at this test's database.
    monkeypatch.setenv("FORCELINK_DATABASE_URL", pipeline.db)
    return await asyncio.to_thread(cli.main, ["-c", config, "dlq", *args])


async def test_one_invalid_row_among_1000__fails_alone_then_dlq_retry(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.execute((INSERT_MANY, (500, 1000)))
    await pipeline.settled(1000)

    rows = pipeline.rows("salesforce.account")
    failed = [r for r in rows if r["_sync_state"] == "failed"]
    assert [r["external_id__c"] for r in failed] == ["E500"]
    [bad] = failed
    assert bad["sfid"] is None
    error = bad["_sync_error"]["errors"][0]
    assert error["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "cannot be negative" in error["message"]
    synced = [r for r in rows if r["_sync_state"] == "synced"]
    assert len(synced) == 999 and all(r["sfid"] for r in synced)
    assert pipeline.write_calls()["collections"] <= 6  # 5 of 200 in one batch
    key = f"salesforce.account:{bad['id']}"
    assert letters(pipeline) == [
        ("open", 1, "Account", key, "_Rejected"),
    ]

    # Retried as is: it fails again, and the same letter is open again.
    assert await dlq(pipeline, tmp_path, monkeypatch, "retry", "--all") == 0
    await pipeline.eventually(lambda: letters(pipeline)[0][:2] == ("open", 2))
    assert len(letters(pipeline)) == 1

    # The app fixes the row (pending again); the fix syncs, the retry resolves.
    pipeline.execute(
        f"UPDATE salesforce.account SET numberofemployees = 7 WHERE id = {bad['id']}"
    )
    await pipeline.settled(1000)
    assert await dlq(pipeline, tmp_path, monkeypatch, "retry", "--all") == 0
    await pipeline.eventually(lambda: letters(pipeline)[0][0] == "resolved")
    [fixed] = pipeline.rows("salesforce.account", f"id = {bad['id']}")
    assert fixed["_sync_state"] == "synced" and fixed["_sync_error"] is None
    assert pipeline.record("Account", fixed["sfid"])["NumberOfEmployees"] == 7
    assert len(pipeline.query("SELECT Id FROM Account")) == 1000


async def test_transient_faults__everything_synced_nothing_duplicated(
    pipeline: Pipeline,
) -> None:
    org = pipeline.org
    org.admin("faults", {"kind": "collections", "fault": "503", "count": 3})
    pipeline.execute(
        (INSERT_MANY, (0, 150)),
        # No external id: created with a plain create call.
        "INSERT INTO salesforce.account (name) SELECT 'Plain ' || g"
        " FROM generate_series(1, 5) AS g",
    )
    await pipeline.settled(155)

    # More lock faults than the writer's own retries: the batch is handed
    # back by run_consumer and succeeds later.
    org.admin(
        "faults", {"kind": "collections", "fault": "UNABLE_TO_LOCK_ROW", "count": 7}
    )
    pipeline.execute(
        (INSERT_MANY.replace("'E' || g", "'F' || g"), (0, 140)),
        "UPDATE salesforce.account SET phone = '1' WHERE name LIKE 'Plain%'",
    )
    await pipeline.settled(295)

    # An expired session: the writer logs in again.
    org.admin("tokens/revoke")
    pipeline.execute("UPDATE salesforce.account SET phone = '2'")
    await pipeline.eventually(
        lambda: len(pipeline.query("SELECT Id FROM Account WHERE Phone = '2'")) == 295
    )
    await pipeline.settled(295)

    records = pipeline.query("SELECT Id, External_Id__c, Name FROM Account")
    assert len(records) == len({r["Id"] for r in records}) == 295
    rows = pipeline.rows("salesforce.account")
    assert all(r["_sync_state"] == "synced" for r in rows)
    assert sorted(r["sfid"] for r in rows) == sorted(r["Id"] for r in records)
    assert pipeline.handler.writer.stats.logins >= 2
    # 3 retried 503s; 5 retried locks, the 6th went up as RateLimited (batch
    # handed back), the 7th was retried in the next round.
    assert pipeline.handler.writer.stats.retries == 3 + 5 + 1


@pytest.fixture
async def bulk_pipeline(
    request: pytest.FixtureRequest, fresh_database: str, org: LocalOrg
) -> AsyncIterator[Pipeline]:
    pipe = await start_pipeline(
        request, "embedded", fresh_database, org, bulk_threshold=50
    )
    try:
        yield pipe
    finally:
        await stop_pipeline(pipe)


async def test_bulk_ingest__above_threshold__with_one_rejected_row(
    bulk_pipeline: Pipeline,
) -> None:
    pipeline = bulk_pipeline
    pipeline.execute((INSERT_MANY, (60, 120)))
    await pipeline.settled(120)

    rows = pipeline.rows("salesforce.account")
    [bad] = [r for r in rows if r["_sync_state"] == "failed"]
    assert bad["external_id__c"] == "E60"
    assert bad["_sync_error"]["errors"][0]["statusCode"] == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    )
    assert sum(r["_sync_state"] == "synced" and bool(r["sfid"]) for r in rows) == 119
    calls = pipeline.write_calls()
    assert calls["collections"] == 0 and 5 <= calls["bulk"] <= 12

    pipeline.execute(
        "UPDATE salesforce.account SET name = name || '!' WHERE numberofemployees > 0"
    )
    await pipeline.settled(120)
    names = {r["Name"] for r in pipeline.query("SELECT Name FROM Account")}
    assert len(names) == 119 and all(n.endswith("!") for n in names)
    assert pipeline.write_calls()["collections"] == 0
