"""The pgoutput decoder against messages a real PostgreSQL 15 wrote."""

from __future__ import annotations

import struct
from typing import Any

import psycopg
import pytest

from forcelink.connector.postgres.pgoutput import (
    Begin,
    Commit,
    DecodeError,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputDecoder,
    Relation,
    Truncate,
    TypeInfo,
    Update,
    format_lsn,
    format_pg_time,
    parse_lsn,
    pg_time,
)
from forcelink.connector.postgres.setup import apply_session_origin

from .conftest import SlotPeek

# Incompressible and over 2 kB: stored out of line (TOASTed), so an update
# that does not touch it writes no value for it to WAL.
BIG = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g"


def kinds(messages: list[Any]) -> list[str]:
    return [type(m).__name__ for m in messages]


def test_decode__insert_carries_every_type(
    conn: psycopg.Connection[Any], peek: SlotPeek
) -> None:
    conn.execute(
        "INSERT INTO account VALUES (1, 'Zoë ☃', 12.300, '2024-03-01 10:00+02',"
        " '{a,\"b c\",NULL}', '{\"k\": [1, 2]}', NULL)"
    )
    xid_row = conn.execute("SELECT xmin::text::int FROM account").fetchone()
    assert xid_row is not None

    messages = peek.messages()

    assert kinds(messages) == ["Begin", "Relation", "Insert", "Commit"]
    begin, relation, insert, commit = messages
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.xid == xid_row[0]
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_time == commit.commit_time
    assert isinstance(relation, Relation)
    assert relation.qualified_name == "public.account"
    assert relation.replica_identity == "d"
    assert [c.name for c in relation.columns if c.in_identity] == ["id"]
    assert isinstance(insert, Insert)
    assert insert.new.values == {
        "id": 1,
        "name": "Zoë ☃",
        "amount": "12.300",
        "at": "2024-03-01T08:00:00Z",
        "tags": ["a", "b c", None],
        "doc": {"k": [1, 2]},
        "notes": None,
    }
    assert insert.new.unchanged == []


def test_decode__default_identity_update_and_delete(
    conn: psycopg.Connection[Any], peek: SlotPeek
) -> None:
    conn.execute("INSERT INTO account (id, name) VALUES (1, 'a')")
    conn.execute("UPDATE account SET name = 'b' WHERE id = 1")
    conn.execute("UPDATE account SET id = 2 WHERE id = 1")
    conn.execute("DELETE FROM account WHERE id = 2")

    changes = [m for m in peek.messages() if isinstance(m, (Insert, Update, Delete))]

    update, key_change, delete = changes[1:]
    assert isinstance(update, Update) and update.old is None
    assert update.new.values["name"] == "b"
    assert isinstance(key_change, Update) and key_change.old is not None
    assert key_change.old.values == {"id": 1}
    assert key_change.new.values["id"] == 2
    assert isinstance(delete, Delete)
    assert delete.old.values == {"id": 2}


def test_decode__full_identity_carries_old_rows(
    conn: psycopg.Connection[Any], peek: SlotPeek
) -> None:
    conn.execute("ALTER TABLE account REPLICA IDENTITY FULL")
    conn.execute("INSERT INTO account (id, name, amount) VALUES (1, 'a', 1.5)")
    conn.execute("UPDATE account SET name = 'b' WHERE id = 1")
    conn.execute("DELETE FROM account WHERE id = 1")

    messages = peek.messages()

    relation = next(m for m in messages if isinstance(m, Relation))
    assert relation.replica_identity == "f"
    update = next(m for m in messages if isinstance(m, Update))
    delete = next(m for m in messages if isinstance(m, Delete))
    assert update.old is not None
    assert update.old.values["name"] == "a" and update.new.values["name"] == "b"
    assert delete.old.values["amount"] == "1.5"
    assert delete.old.values["name"] == "b"


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_decode__unchanged_toast_is_not_a_value(
    conn: psycopg.Connection[Any], peek: SlotPeek, identity: str
) -> None:
    conn.execute(f"ALTER TABLE account REPLICA IDENTITY {identity}")
    conn.execute(f"INSERT INTO account (id, name, notes) VALUES (1, 'a', ({BIG}))")
    conn.execute("UPDATE account SET name = 'b' WHERE id = 1")

    update = next(m for m in peek.messages() if isinstance(m, Update))

    assert update.new.unchanged == ["notes"]
    assert "notes" not in update.new.values
    assert update.new.values["name"] == "b"


def test_decode__truncate(conn: psycopg.Connection[Any], peek: SlotPeek) -> None:
    conn.execute("INSERT INTO account (id) VALUES (1)")
    conn.execute("TRUNCATE account RESTART IDENTITY")

    truncate = next(m for m in peek.messages() if isinstance(m, Truncate))

    assert [r.name for r in truncate.relations] == ["account"]
    assert truncate.restart_identity and not truncate.cascade


def test_decode__origin_follows_begin(
    conn: psycopg.Connection[Any], peek: SlotPeek, fresh_database: str
) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as applier:
        name = apply_session_origin(applier)
        applier.execute("INSERT INTO account (id) VALUES (7)")

    messages = peek.messages()

    assert name == "forcelink"
    assert kinds(messages) == ["Begin", "Origin", "Relation", "Insert", "Commit"]
    origin = messages[1]
    assert isinstance(origin, Origin) and origin.name == "forcelink"


def test_decode__logical_message_and_custom_type(
    conn: psycopg.Connection[Any], peek: SlotPeek
) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
    conn.execute("ALTER TABLE account ADD COLUMN mood mood")
    conn.execute("SELECT pg_logical_emit_message(false, 'forcelink.test', 'héllo')")
    conn.execute("INSERT INTO account (id, mood) VALUES (1, 'sad')")

    messages = peek.messages()

    message = messages[0]
    assert isinstance(message, LogicalMessage)
    assert not message.transactional
    assert (message.prefix, message.content) == ("forcelink.test", "héllo".encode())
    type_info = next(m for m in messages if isinstance(m, TypeInfo))
    assert (type_info.schema, type_info.name) == ("public", "mood")
    insert = next(m for m in messages if isinstance(m, Insert))
    assert insert.new.values["mood"] == "sad"


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (b"Z", "unexpected pgoutput message"),
        (b"B\x00\x01", "malformed"),
        (b"I" + struct.pack("!I", 99) + b"N\x00\x00", "before its R message"),
        (b"", "unexpected"),
    ],
)
def test_decode__refuses_bad_messages(payload: bytes, complaint: str) -> None:
    with pytest.raises(DecodeError, match=complaint):
        PgOutputDecoder().decode(payload)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0, "0/0"),
        (0x16B374D848, "16/B374D848"),
        (0xFFFFFFFF, "0/FFFFFFFF"),
        (1 << 32, "1/0"),
        ((1 << 64) - 1, "FFFFFFFF/FFFFFFFF"),
    ],
)
def test_lsn_text_round_trip(number: int, text: str) -> None:
    assert format_lsn(number) == text
    assert parse_lsn(text) == number


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "2000-01-01T00:00:00Z"),
        (1, "2000-01-01T00:00:00.000001Z"),
        (999_999, "2000-01-01T00:00:00.999999Z"),
        (1_000_000, "2000-01-01T00:00:01Z"),
        (600_000_000_000_500, "2019-01-05T10:40:00.000500Z"),
        (-1, "1999-12-31T23:59:59.999999Z"),
    ],
)
def test_commit_time_text(micros: int, text: str) -> None:
    # The same text as isoformat() of the datetime, with Z for +00:00.
    assert format_pg_time(micros) == text
    assert pg_time(micros).isoformat().replace("+00:00", "Z") == text
