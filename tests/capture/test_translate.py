"""Errors from the replication stream, translated at the reader's boundary."""

from __future__ import annotations

import psycopg2
import pytest

from forcelink.connector.postgres.reader import _translate
from forcelink.errors import SourceUnavailable


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            psycopg2.OperationalError("server closed the connection"),
            SourceUnavailable,
            id="connection-closed",
        ),
        pytest.param(
            psycopg2.InterfaceError("connection already closed"),
            SourceUnavailable,
            id="interface",
        ),
        pytest.param(
            psycopg2.DatabaseError("no COPY in progress"),
            SourceUnavailable,
            id="stream-gone-after-shutdown",
        ),
        pytest.param(ValueError("a bug"), ValueError, id="not-a-database-error"),
    ],
)
def test_translate(error: BaseException, expected: type[BaseException]) -> None:
    translated = _translate(error, "forcelink_t")

    assert isinstance(translated, expected)
    if translated is not error:
        assert translated.__cause__ is error
