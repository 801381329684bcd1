"""apply/diff against a real database: idempotent, additive, never loses data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from forcelink.mapping import Mapping, apply, diff, load_mappings

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
org: local
object: Account
mode: read_write
upsert_key: External_Id__c
fields:
  External_Id__c: external_id__c
  Name: name
  Rating__c: rating__c
"""


def _load(tmp_path: Path, text: str) -> list[Mapping]:
    file = tmp_path / "account.yaml"
    file.write_text(text)
    return load_mappings([file])


def _columns(url: str, table: str = "account") -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'salesforce' AND table_name = %s",
            (table,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _query(url: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(text, params).fetchall()


def test_apply__creates_tables_with_sync_columns_then_changes_nothing(
    fresh_database: str,
) -> None:
    mappings = load_mappings([ROOT / "mappings"])

    first = apply(fresh_database, mappings)
    second = apply(fresh_database, mappings)

    assert any(s.startswith('CREATE TABLE "salesforce"."account"') for s in first)
    assert second == []
    assert diff(fresh_database, mappings) == []
    columns = _columns(fresh_database)
    assert columns["id"] == "bigint"
    assert columns["sfid"] == "character varying"
    assert columns["systemmodstamp"] == "timestamp with time zone"
    assert columns["isdeleted"] == "boolean"
    assert columns["_sync_state"] == "text"
    assert columns["_sync_error"] == "jsonb"
    assert columns["_sync_at"] == "timestamp with time zone"
    assert columns["annualrevenue"] == "numeric"
    versions = _query(
        fresh_database, "SELECT object, version FROM forcelink.mapping_versions"
    )
    assert sorted(versions) == [
        ("Account", 1),
        ("Contact", 1),
        ("Site_Photo__c", 1),
        ("WorkOrder", 1),
    ]


def test_rows_inserted_by_an_application_start_pending(fresh_database: str) -> None:
    apply(fresh_database, load_mappings([ROOT / "mappings"]))

    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO salesforce.account (name) VALUES ('Acme')")
        row = conn.execute("SELECT _sync_state, isdeleted FROM salesforce.account")
        assert row.fetchone() == ("pending", False)
        # An application's write is marked pending whatever it says ...
        conn.execute("UPDATE salesforce.account SET _sync_state = 'synced'")
        row = conn.execute("SELECT _sync_state FROM salesforce.account")
        assert row.fetchone() == ("pending",)
        # ... and a state outside the four is refused even without the trigger.
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE salesforce.account SET _sync_state = 'lost'")


def test_adding_a_field_adds_a_column_and_keeps_the_data(
    fresh_database: str, tmp_path: Path
) -> None:
    apply(fresh_database, _load(tmp_path, BASE))
    _query(
        fresh_database,
        "INSERT INTO salesforce.account (external_id__c, name) VALUES ('A-1', 'Acme')"
        " RETURNING id",
    )
    wider = _load(tmp_path, BASE + "  Website: website\n  BillingAddress:\n")

    planned = diff(fresh_database, wider)
    done = apply(fresh_database, wider)

    assert planned == done
    assert 'ALTER TABLE "salesforce"."account" ADD COLUMN "website" ' in done[0]
    assert len(done) == 8  # website + seven address components
    assert _query(fresh_database, "SELECT name, website FROM salesforce.account") == [
        ("Acme", None)
    ]
    versions = _query(
        fresh_database,
        "SELECT version FROM forcelink.mapping_versions ORDER BY version",
    )
    assert versions == [(1,), (2,)]


def test_a_column_holding_data_is_kept_without_allow_drop(
    fresh_database: str, tmp_path: Path
) -> None:
    apply(fresh_database, _load(tmp_path, BASE))
    _query(
        fresh_database,
        "INSERT INTO salesforce.account (external_id__c, rating__c) VALUES ('A', 4.5)"
        " RETURNING id",
    )
    narrower = _load(tmp_path, BASE.replace("  Rating__c: rating__c\n", ""))

    planned = diff(fresh_database, narrower)
    apply(fresh_database, narrower)

    assert planned == [
        "-- kept: salesforce.account.rating__c is no longer mapped but holds data "
        "(drop it with --allow-drop)"
    ]
    assert "rating__c" in _columns(fresh_database)

    dropped = apply(fresh_database, narrower, allow_drop=True)

    assert dropped == ['ALTER TABLE "salesforce"."account" DROP COLUMN "rating__c";']
    assert "rating__c" not in _columns(fresh_database)


def test_an_empty_unmapped_column_is_dropped_and_user_columns_are_left_alone(
    fresh_database: str, tmp_path: Path
) -> None:
    apply(fresh_database, _load(tmp_path, BASE))
    with psycopg.connect(fresh_database) as conn:
        conn.execute("ALTER TABLE salesforce.account ADD COLUMN my_notes text")
    narrower = _load(tmp_path, BASE.replace("  Rating__c: rating__c\n", ""))

    done = apply(fresh_database, narrower)

    assert done == ['ALTER TABLE "salesforce"."account" DROP COLUMN "rating__c";']
    assert "my_notes" in _columns(fresh_database)


def test_a_type_change_that_could_lose_data_is_kept_unless_allowed(
    fresh_database: str, tmp_path: Path
) -> None:
    apply(fresh_database, _load(tmp_path, BASE))
    _query(
        fresh_database,
        "INSERT INTO salesforce.account (name) VALUES ('A long name') RETURNING id",
    )
    shorter = _load(tmp_path, BASE.replace("Name: name", "Name: {type: varchar(4)}"))
    longer = _load(tmp_path, BASE.replace("Name: name", "Name: {type: text}"))

    assert diff(fresh_database, shorter) == [
        "-- kept: salesforce.account.name stays character varying(255): changing it "
        "to character varying(4) could lose data it holds (allow it with --allow-drop)"
    ]
    widened = apply(fresh_database, longer)

    assert widened == [
        'ALTER TABLE "salesforce"."account" ALTER COLUMN "name" TYPE text '
        'USING "name"::text;'
    ]
    assert _query(fresh_database, "SELECT name FROM salesforce.account") == [
        ("A long name",)
    ]
