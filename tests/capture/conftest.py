"""Fixtures for capture tests: a fresh database with a slot and a publication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from forcelink.connector.postgres.pgoutput import Message, PgOutputDecoder

SESSION = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET extra_float_digits = 3"


class SlotPeek:
    """Reads the real pgoutput bytes of a slot through SQL (no streaming)."""

    def __init__(self, conn: psycopg.Connection[Any], slot: str, publication: str):
        self.conn = conn
        self.slot = slot
        self.publication = publication
        self.decoder = PgOutputDecoder()

    def raw(self) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
            (self.slot, self.publication),
        ).fetchall()
        return [bytes(data) for (data,) in rows]

    def messages(self) -> list[Message]:
        return [self.decoder.decode(payload) for payload in self.raw()]


@pytest.fixture
def conn(fresh_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute(SESSION)
        yield connection


@pytest.fixture
def peek(conn: psycopg.Connection[Any]) -> SlotPeek:
    conn.execute(
        "CREATE TABLE account (id int PRIMARY KEY, name text, amount numeric,"
        " at timestamptz, tags text[], doc jsonb, notes text)"
    )
    conn.execute("CREATE PUBLICATION pub FOR TABLE account")
    conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
    return SlotPeek(conn, "s", "pub")
