"""How the local org counts a call, from its path (benchmarks read these counts)."""

from __future__ import annotations

import pytest

from forcelink.emulator.auth import call_kind


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/services/data/v60.0/sobjects/Account", "rest"),
        ("/services/data/v60.0/sobjects/Account/001000000000001AAA", "rest"),
        ("/services/data/v60.0/composite/sobjects", "collections"),
        ("/services/data/v60.0/query", "query"),
        ("/services/data/v60.0/queryAll", "query"),
        ("/services/data/v60.0/query/01g000000000001-2000", "query"),
        ("/services/data/v60.0/jobs/query", "bulk"),
        ("/services/data/v60.0/jobs/query/750000000000001AAA/results", "bulk"),
        ("/services/data/v60.0/jobs/ingest/750000000000002AAA/batches", "bulk"),
        ("/cometd/60.0", "streaming"),
        ("/services/oauth2/token", None),
        ("/_emulator/stats", None),
    ],
)
def test_call_kind(path: str, kind: str | None) -> None:
    assert call_kind(path) == kind
