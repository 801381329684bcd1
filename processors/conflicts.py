"""Deciding a conflict: a record changed on both sides since its last sync.

The Salesforce-to-Postgres applier detects a conflict when a change from
Salesforce (not our own echo) reaches a row whose ``_sync_state`` is
``pending``: the application changed it and forcelink has not written that
change to Salesforce yet. The mapping's policy decides (invariant 5):

==================  ========================================================
policy              outcome
==================  ========================================================
salesforce_wins     the row takes the whole Salesforce record; the local
                    change is not sent
postgres_wins       the row is left as it is and stays ``pending``; the
                    writer then sends the whole row, so Salesforce takes it
last_writer_wins    whichever side committed later wins as above; the local
                    side's time is the row's ``_sync_at`` (set by the
                    pending trigger), Salesforce's the event's commit time
merge_fields        when the two sides changed different fields, the row
                    takes Salesforce's fields and keeps its own, and stays
                    ``pending`` so the merged row goes back to Salesforce;
                    when they changed a field in common, last_writer_wins
==================  ========================================================

Which fields the local side changed: the mapped columns whose values differ
from ``forcelink.sync_records.last_values`` (what both sides held after the
last sync). Every decision is stored in ``forcelink.conflicts`` with both
versions and counted in ``forcelink_conflicts_total``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Outcome(enum.Enum):
    SALESFORCE_WON = "salesforce_won"
    POSTGRES_WON = "postgres_won"
    MERGED = "merged"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str


def decide(
    policy: str,
    *,
    salesforce_time: datetime,
    postgres_time: datetime | None,
    salesforce_changed: Iterable[str],
    postgres_changed: Iterable[str],
) -> Decision:
    """The outcome of one conflict under ``policy``.

    Ties in ``last_writer_wins`` go to Salesforce: it is the system of
    record, and its commit time is the one both sides can see.
    """
    if policy == "salesforce_wins":
        return Decision(Outcome.SALESFORCE_WON, "policy salesforce_wins")
    if policy == "postgres_wins":
        return Decision(Outcome.POSTGRES_WON, "policy postgres_wins")
    if policy == "merge_fields":
        common = set(salesforce_changed) & set(postgres_changed)
        if not common:
            return Decision(Outcome.MERGED, "different fields changed")
        later = _later(salesforce_time, postgres_time)
        return Decision(
            later.outcome, f"both changed {', '.join(sorted(common))}; " + later.reason
        )
    if policy == "last_writer_wins":
        return _later(salesforce_time, postgres_time)
    raise ValueError(f"unknown conflict policy {policy!r}")


def _later(salesforce_time: datetime, postgres_time: datetime | None) -> Decision:
    if postgres_time is not None and postgres_time > salesforce_time:
        return Decision(Outcome.POSTGRES_WON, "Postgres changed it later")
    return Decision(Outcome.SALESFORCE_WON, "Salesforce changed it later")


def changed_columns(
    current: Mapping[str, Any], last_synced: Mapping[str, Any] | None
) -> set[str]:
    """Columns of ``current`` whose value differs from the last synced values.

    With no record of the last sync every column counts as changed.
    """
    if last_synced is None:
        return set(current)
    return {
        column
        for column, value in current.items()
        if _comparable(value) != _comparable(last_synced.get(column))
    }


def _comparable(value: Any) -> Any:
    # last_values come back from jsonb as JSON scalars (decimals and times as
    # text); compare everything in that form.
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
