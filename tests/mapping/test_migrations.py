"""The bookkeeping schema: migrations run from the package, twice, and concurrently."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from forcelink import db
from forcelink.errors import SourceUnavailable

TABLES = {
    "orgs",
    "offsets",
    "dead_letters",
    "conflicts",
    "mapping_versions",
    "backfill_progress",
    "sync_records",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'forcelink'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrate__from_another_directory_creates_the_bookkeeping_tables(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    db.migrate(fresh_database)

    assert _tables(fresh_database) >= TABLES
    assert db.current_revision(fresh_database) == _head()


def test_migrate__twice_and_concurrently_is_harmless(fresh_database: str) -> None:
    code = "import sys; from forcelink import db; db.migrate(sys.argv[1])"
    others = [
        subprocess.Popen([sys.executable, "-c", code, fresh_database]) for _ in range(2)
    ]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            db.migrate(fresh_database)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = [process.wait(timeout=60) for process in others]
    db.migrate(fresh_database)

    assert errors == []
    assert codes == [0, 0]
    assert db.current_revision(fresh_database) == _head()


def test_revision_chain__is_linear_and_starts_at_0001() -> None:
    script = ScriptDirectory(str(db.migrations_dir()))

    heads = script.get_heads()
    base = script.get_bases()

    assert len(heads) == 1, f"the migration chain forked: heads {heads}"
    assert base == ["0001_bookkeeping"]


def test_bookkeeping_tables__accept_what_the_sync_writes(fresh_database: str) -> None:
    db.migrate(fresh_database)

    with db.connect(fresh_database) as conn:
        conn.execute("INSERT INTO forcelink.orgs (name) VALUES ('local')")
        conn.execute(
            "INSERT INTO forcelink.offsets (org, source, key, position) "
            "VALUES ('local', 'cometd', '/data/AccountChangeEvent', '17')"
        )
        conn.execute(
            "INSERT INTO forcelink.dead_letters "
            "(org, direction, object, record_key, payload, error, error_class) "
            "VALUES ('local', 'to_salesforce', 'Account', 'A-1', '{}', "
            "'[{\"errorCode\": \"REQUIRED_FIELD_MISSING\"}]', 'RecordRejected')"
        )
        letter = conn.execute("SELECT state, attempts FROM forcelink.dead_letters")
        assert letter.fetchone() == {"state": "open", "attempts": 1}


def _head() -> str:
    head = ScriptDirectory(str(db.migrations_dir())).get_current_head()
    assert head is not None
    return head


def test_migrate__unreachable_database_is_transient() -> None:
    url = "postgresql://forcelink@localhost:55599/none?connect_timeout=2"

    with pytest.raises(SourceUnavailable, match="cannot reach the database"):
        db.migrate(url)
