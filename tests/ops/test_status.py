"""``forcelink status`` and the lag arithmetic, against a real database.

No service runs here: the report must still come from the database (rows by
sync state, dead letters, conflicts, event-log lag) and say the service is
down. The event log is forcelink's real embedded log.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from forcelink.commands.status import render, use_colour
from forcelink.config import (
    Config,
    DatabaseConfig,
    EmbeddedLogConfig,
    EventLogConfig,
    MetricsConfig,
    OrgConfig,
)
from forcelink.eventlog import open_event_log
from forcelink.eventlog.base import Event, EventRecord
from forcelink.lag import Group, GroupLag, History, _summed, embedded_lag
from forcelink.status import ServiceView, collect
from tests.ops.run_support import clean_env
from tests.ops.support import free_port
from tests.sf_to_pg.harness import load_examples

GROUP = Group("acme", "pg_to_sf", "forcelink.pg_to_sf.acme", "forcelink.pg.changes")


@pytest.mark.parametrize(
    ("rows", "waiting", "committed", "oldest"),
    [
        ([], 0, 0, None),
        ([(120, 120, None)], 0, 120, None),
        ([(120, 120, None), (57, 50, 1000.0)], 7, 170, 1000.0),
        ([(10, 0, 1005.0), (57, 50, 1000.0)], 17, 50, 1000.0),
        ([(3, 1, None)], 2, 1, None),  # waiting records purged: age unknown
    ],
)
def test_summed__waiting_committed_and_oldest(
    rows: list[tuple[int, int, float | None]],
    waiting: int,
    committed: int,
    oldest: float | None,
) -> None:
    lag = _summed(GROUP, rows)
    assert (lag.waiting, lag.committed, lag.oldest) == (waiting, committed, oldest)


@pytest.mark.parametrize(
    ("waiting", "oldest", "now", "seconds"),
    [(0, None, 50.0, 0.0), (7, 1000.0, 1042.0, 42.0), (7, 1000.0, 990.0, 0.0)],
)
def test_lag_seconds(
    waiting: int, oldest: float | None, now: float, seconds: float
) -> None:
    assert GroupLag(GROUP, waiting, 0, oldest).seconds(now) == seconds


def test_history__rate_from_committed_growth_and_one_hour_window() -> None:
    history = History(step=10, window=3600)
    assert history.record([GroupLag(GROUP, 0, 100, None)], now=0)
    assert not history.record([GroupLag(GROUP, 0, 150, None)], now=5)  # too soon
    assert history.record([GroupLag(GROUP, 4, 300, 15.0)], now=20)
    points = history.series()
    assert [p["rate"]["acme/pg_to_sf"] for p in points] == [0.0, 10.0]
    assert [p["lag"]["acme/pg_to_sf"] for p in points] == [0.0, 5.0]
    history.record([GroupLag(GROUP, 0, 300, None)], now=3700)
    assert [p["at"] for p in history.series()] == [3700]


def test_embedded_lag__counts_records_past_the_committed_position(
    fresh_database: str,
) -> None:
    config = _config(fresh_database)
    from forcelink.db import migrate

    migrate(fresh_database)
    asyncio.run(_publish_and_commit(config, published=5, committed=2))
    (lag,) = embedded_lag(fresh_database, [GROUP])
    assert lag.waiting == 3 and lag.committed == 2
    assert lag.oldest is not None


async def _publish_and_commit(config: Config, published: int, committed: int) -> None:
    async with open_event_log(config) as log:
        await log.ensure_topic(GROUP.topic, 1)
        records = [EventRecord(f"k{i}".encode(), b"v") for i in range(published)]
        await log.publish(GROUP.topic, records)
        consumer = await log.consumer(GROUP.group_id, [GROUP.topic])
        try:
            events: list[Event] = []
            while len(events) < committed:
                events += await consumer.poll(max_records=committed - len(events))
            await consumer.commit(events[:committed])
        finally:
            await consumer.close()


def test_report__service_down__database_counts_and_stopped(
    fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    _troubles(fresh_database)
    config = _config(fresh_database, org="local")

    report = collect(config, service=ServiceView(url="http://127.0.0.1:1"))
    assert report.service == "down"
    (org,) = report.orgs
    assert org.state == "stopped" and org.api_limit is None
    account = next(m for m in org.mappings if m.object == "Account")
    assert (account.pending, account.failed, account.conflict_rows) == (1, 2, 0)
    assert (account.dead_letters, account.conflicts_today) == (1, 1)
    assert account.direction == "both" and account.state == "stopped"
    assert account.last_sync is not None

    text = render(report, colour=False)
    assert "service down" in text and "org local: stopped" in text
    assert "\033[" not in text
    assert "\033[31mstopped\033[0m" in render(report, colour=True)


def test_status_command__json_when_the_service_is_down(
    fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    _troubles(fresh_database)
    path = tmp_path / "forcelink.yaml"
    path.write_text(
        f"database:\n  url: {fresh_database}\n"
        "orgs:\n  - name: local\n    connection_file: /nonexistent.json\n"
        f"mappings:\n  - {Path(__file__).resolve().parents[2] / 'mappings'}/*.yaml\n"
        f"metrics:\n  listen: 127.0.0.1:{free_port()}\n"
    )
    command = [sys.executable, "-m", "forcelink.cli", "-c", str(path), "status"]
    done = subprocess.run(
        [*command, "--json", "--run-file", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["service"] == "down"
    assert report["orgs"][0]["state"] == "stopped"
    unknown = subprocess.run(
        [*command, "--org", "elsewhere"],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert unknown.returncode != 0 and "elsewhere" in unknown.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour__only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(_Terminal()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(_Terminal())


def _config(database_url: str, org: str = "acme") -> Config:
    return Config(
        database=DatabaseConfig(url=database_url),
        eventlog=EventLogConfig(embedded=EmbeddedLogConfig(partitions=1)),
        orgs=[OrgConfig(name=org, connection_file="/nonexistent.json")],
        mappings=[str(Path(__file__).resolve().parents[2] / "mappings")],
        metrics=MetricsConfig(listen=f"127.0.0.1:{free_port()}"),
    )


def _troubles(database_url: str) -> None:
    """One pending and two failed Accounts, a dead letter, a conflict today."""
    with psycopg.connect(database_url) as conn:
        # As forcelink's applier would: without the "edited by the app,
        # so pending" trigger firing on the state change itself.
        conn.execute("SET session_replication_role = replica")
        for ext, state in (("P1", "pending"), ("F1", "failed"), ("F2", "failed")):
            conn.execute(
                "INSERT INTO salesforce.account (external_id__c, name)"
                " VALUES (%s, 'x')",
                (ext,),
            )
            conn.execute(
                "UPDATE salesforce.account SET _sync_state = %s, _sync_at = now()"
                " WHERE external_id__c = %s",
                (state, ext),
            )
        conn.execute(
            "INSERT INTO forcelink.dead_letters"
            " (org, direction, object, payload, error, error_class)"
            " VALUES ('local', 'to_salesforce', 'Account', '{}', '{}',"
            " 'RecordRejected')"
        )
        conn.execute(
            "INSERT INTO forcelink.conflicts (org, object, policy, outcome)"
            " VALUES ('local', 'Account', 'salesforce_wins', 'salesforce')"
        )


def test_kafka_lag__counts_records_past_the_committed_position(
    fresh_database: str, kafka_bootstrap: str
) -> None:
    import uuid

    from forcelink.lag import kafka_lag

    config = _config(fresh_database)
    config.eventlog.backend = "kafka"
    config.eventlog.kafka.bootstrap_servers = kafka_bootstrap
    config.eventlog.kafka.topic_prefix = f"lag{uuid.uuid4().hex[:8]}."

    asyncio.run(_publish_and_commit(config, published=5, committed=2))
    (lag,) = asyncio.run(kafka_lag(config, [GROUP]))

    assert lag.waiting == 3 and lag.committed == 2
    assert lag.oldest is not None
