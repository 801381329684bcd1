"""Compare Postgres and Salesforce record by record (invariant 10).

For each mapping of an org:

1. **counts**: ``SELECT COUNT()`` in the org (the mapping's filter
   applied), ``count(*)`` of the rows not deleted in Postgres;
2. **records**: one Bulk API 2.0 query job reads ``Id`` and every compared
   field; its CSV pages are read one at a time. For each page, the Postgres
   rows with those sfids are read, and each field is compared; the page's
   ids go into a temporary table of ids seen. Afterwards, an anti-join of
   the table against that temporary table (through a server-side cursor)
   lists the rows the org does not have. So memory holds one page and the
   ids live in Postgres, whatever the size (invariant 7).

**What is compared**: fields that travel both ways (``direction: both``),
system columns and parent external-id columns left out (change events never
carry a parent's external id, so that column is legitimately empty on rows
filled from Salesforce). Both sides go through the mapping's conversions
into Salesforce's JSON form before comparing: the Bulk CSV value is read as
the column would hold it (``FieldMapping.to_column(value, "csv")``), then,
like the Postgres value, turned into the field's canonical value and its
JSON form (``types.to_salesforce``). Decimals compare by value (``1.50`` ==
``1.5``), datetimes in UTC to the millisecond (Salesforce keeps no finer),
multipicklists as sets of values; as Salesforce stores them, an empty text
is null and a null checkbox is false.

**Repair** (``repair=True``), the choice made: Salesforce is the reference
for every record both sides know, Postgres for the rows it never sent.

* a record missing in Postgres, a row that differs, and a row whose sfid
  the org does not have (deleted there): re-read from the org through the
  Salesforce→Postgres applier (``processors.sf_to_pg``), fed a ``GAP_UPDATE``
  event per record. The applier fetches the records over REST, applies them
  whole (a record the org no longer has marks the row deleted), in a session
  tagged with forcelink's origin, with its staleness check and conflict
  policy: a row with a local change still ``pending`` is decided by the
  mapping's policy, as a live change would be.
* a row without an sfid: sent with ``processors.push`` (Bulk upsert on the
  external id).

Verify then runs again and reports what is left.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from forcelink.connector.salesforce.backfill import OrgApi
from forcelink.errors import SourceUnavailable, TerminalError
from forcelink.eventlog.base import Event
from forcelink.mapping import FieldMapping, Mapping, types
from forcelink.mapping.types import ConversionError

log = logging.getLogger("forcelink.processors.verify")

PAGE_RECORDS = 10_000
KEPT_DIFFERENCES = 100
"""Differences kept per object for printing; all are counted."""
POLL_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Difference:
    kind: str
    """``missing_in_postgres``, ``missing_in_salesforce`` or ``field``."""
    object: str
    sfid: str | None
    row_id: int | None = None
    field: str | None = None
    salesforce: Any = None
    postgres: Any = None

    def line(self) -> str:
        """One line for people: what, which record, both values."""
        where = f"{self.object} {self.sfid or '(no sfid)'}"
        if self.row_id is not None:
            where += f" (row id {self.row_id})"
        if self.kind == "field":
            return (
                f"{where}: {self.field} differs: Salesforce {_show(self.salesforce)}"
                f", Postgres {_show(self.postgres)}"
            )
        return f"{where}: {self.kind.replace('_', ' ')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object": self.object,
            "sfid": self.sfid,
            "row_id": self.row_id,
            "field": self.field,
            "salesforce": _jsonable(self.salesforce),
            "postgres": _jsonable(self.postgres),
        }


@dataclass
class ObjectReport:
    object: str
    table: str
    salesforce_count: int = 0
    postgres_count: int = 0
    missing_in_postgres: int = 0
    missing_in_salesforce: int = 0
    differing_records: int = 0
    differing_fields: int = 0
    differences: list[Difference] = field(default_factory=list)
    """The first KEPT_DIFFERENCES of them."""

    @property
    def total(self) -> int:
        return (
            self.missing_in_postgres
            + self.missing_in_salesforce
            + self.differing_records
        )

    @property
    def lines(self) -> int:
        """Difference lines: one per missing record, one per differing field."""
        return (
            self.missing_in_postgres
            + self.missing_in_salesforce
            + self.differing_fields
        )

    @property
    def clean(self) -> bool:
        return self.total == 0 and self.salesforce_count == self.postgres_count

    def add(self, difference: Difference) -> None:
        if len(self.differences) < KEPT_DIFFERENCES:
            self.differences.append(difference)

    def as_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "table": self.table,
            "salesforce_count": self.salesforce_count,
            "postgres_count": self.postgres_count,
            "missing_in_postgres": self.missing_in_postgres,
            "missing_in_salesforce": self.missing_in_salesforce,
            "differing_records": self.differing_records,
            "differing_fields": self.differing_fields,
            "clean": self.clean,
            "differences": [d.as_json() for d in self.differences],
        }


Repairer = Callable[[Mapping, list[str], datetime], None]
"""Takes Salesforce's version of these record ids into Postgres; the
datetime is the org's time when verify read it (see ``gap_events``)."""


def compared_fields(mapping: Mapping) -> list[FieldMapping]:
    """The fields verify compares (module doc)."""
    return [
        f
        for f in mapping.fields
        if not f.system and f.reads and f.writes and f.parent_key is None
    ]


def verify_mapping(
    database_url: str,
    api: OrgApi,
    mapping: Mapping,
    *,
    repair: Repairer | None = None,
    page_records: int = PAGE_RECORDS,
) -> ObjectReport:
    """Compare one mapping's table with the org; ``repair`` as it goes (if given).

    Raises the ``OrgApi``'s errors when the org cannot be read.
    """
    report = ObjectReport(mapping.object, mapping.table)
    report.salesforce_count = _salesforce_count(api, mapping)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute("CREATE TEMP TABLE _fl_verify_seen (sfid text PRIMARY KEY)")
        report.postgres_count = _postgres_count(conn, mapping)
        org_time = datetime.now(UTC)
        for page, org_time in _salesforce_pages(api, mapping, page_records):
            stale = _compare_page(conn, mapping, page, report)
            if repair is not None and stale:
                repair(mapping, stale, org_time)
        gone_ids: list[str] = []
        for difference in _missing_in_salesforce(conn, mapping):
            report.missing_in_salesforce += 1
            report.add(difference)
            if difference.sfid:
                gone_ids.append(difference.sfid)
            if repair is not None and len(gone_ids) >= page_records:
                repair(mapping, gone_ids, org_time)
                gone_ids = []
        if repair is not None and gone_ids:
            repair(mapping, gone_ids, org_time)
    return report


# -------------------------------------------------------------- Salesforce


def salesforce_query(mapping: Mapping) -> str:
    paths = ["Id", *(f.salesforce_path for f in compared_fields(mapping))]
    query = f"SELECT {', '.join(dict.fromkeys(paths))} FROM {mapping.object}"
    return f"{query} WHERE {mapping.soql_filter}" if mapping.soql_filter else query


def _salesforce_count(api: OrgApi, mapping: Mapping) -> int:
    query = f"SELECT COUNT() FROM {mapping.object}"
    if mapping.soql_filter:
        query += f" WHERE {mapping.soql_filter}"
    answer = api.call(lambda c: c.query(query))
    return int(answer["totalSize"])


def _salesforce_pages(
    api: OrgApi, mapping: Mapping, page_records: int
) -> Iterator[tuple[list[dict[str, str]], datetime]]:
    """The org's records, one Bulk result page at a time (CSV values), with
    the org's time when the job was made."""
    bulk = api.bulk(mapping.object)
    job = api.call(lambda c: bulk.create_job("query", salesforce_query(mapping)))
    job_id = str(job["id"])
    created = str(job.get("createdDate") or "")
    org_time = datetime.fromisoformat(created) if created else datetime.now(UTC)
    _wait_for(api, bulk, job_id, mapping)
    locator = ""
    while True:
        page = api.call(_page_getter(bulk, job_id, locator, page_records))
        reader = csv.DictReader(io.StringIO(page["records"], newline=""))
        yield list(reader), org_time
        locator = page["locator"] or ""
        if not locator:
            return


def _page_getter(
    bulk: Any, job_id: str, locator: str, size: int
) -> Callable[[Any], dict[str, Any]]:
    def get(client: Any) -> dict[str, Any]:
        page: dict[str, Any] = bulk.get_query_results(job_id, locator, size)
        return page

    return get


def _wait_for(api: OrgApi, bulk: Any, job_id: str, mapping: Mapping) -> None:
    for attempt in range(100_000):
        info = api.call(lambda c: bulk.get_job(job_id, True))
        state = info.get("state")
        if state == "JobComplete":
            return
        if state in ("Failed", "Aborted"):
            raise TerminalError(
                f"verify query job {state}: {info.get('errorMessage', '')}",
                org=mapping.org,
                object=mapping.object,
                job=job_id,
            )
        time.sleep(POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)])
    raise SourceUnavailable("verify query job never completed", job=job_id)


# ---------------------------------------------------------------- Postgres


def _table(mapping: Mapping) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(mapping.schema), sql.Identifier(mapping.table_name)
    )


def _postgres_count(conn: psycopg.Connection[dict[str, Any]], mapping: Mapping) -> int:
    found = conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {} WHERE isdeleted IS NOT TRUE").format(
            _table(mapping)
        )
    ).fetchone()
    return int(found["n"]) if found else 0


def _compare_page(
    conn: psycopg.Connection[dict[str, Any]],
    mapping: Mapping,
    page: list[dict[str, str]],
    report: ObjectReport,
) -> list[str]:
    """Compare one page of records; returns the ids Postgres should re-read."""
    ids = [record["Id"] for record in page]
    with conn.cursor() as cur, cur.copy("COPY _fl_verify_seen FROM STDIN") as copy:
        for record_id in ids:
            copy.write_row((record_id,))
    columns = sql.SQL(", ").join(
        sql.Identifier(f.column) for f in compared_fields(mapping)
    )
    rows = conn.execute(
        sql.SQL("SELECT id, sfid, isdeleted, {} FROM {} WHERE sfid = ANY(%s)").format(
            columns, _table(mapping)
        ),
        (ids,),
    ).fetchall()
    by_sfid = {str(r["sfid"]): r for r in rows}
    stale: list[str] = []
    for record in page:
        row = by_sfid.get(record["Id"])
        if row is None or row["isdeleted"]:
            report.missing_in_postgres += 1
            report.add(
                Difference(
                    "missing_in_postgres",
                    mapping.object,
                    record["Id"],
                    None if row is None else int(row["id"]),
                )
            )
            stale.append(record["Id"])
            continue
        found = _field_differences(mapping, record, row)
        if found:
            report.differing_records += 1
            report.differing_fields += len(found)
            for difference in found:
                report.add(difference)
            stale.append(record["Id"])
    conn.commit()
    return stale


def _field_differences(
    mapping: Mapping, record: dict[str, str], row: dict[str, Any]
) -> list[Difference]:
    present = {name.lower(): value for name, value in record.items()}
    out = []
    for f in compared_fields(mapping):
        cell = present.get(f.salesforce_path.lower(), "")
        try:
            theirs = _comparable(f, f.to_column(cell, "csv"))
        except ConversionError as error:
            theirs = f"(does not convert: {error})"
        try:
            ours = _comparable(f, row[f.column])
        except ConversionError as error:
            ours = f"(does not convert: {error})"
        if theirs != ours:
            out.append(
                Difference(
                    "field",
                    mapping.object,
                    record["Id"],
                    int(row["id"]),
                    f.field,
                    _wire(theirs),
                    _wire(ours),
                )
            )
    return out


def _missing_in_salesforce(
    conn: psycopg.Connection[dict[str, Any]], mapping: Mapping
) -> Iterator[Difference]:
    """Rows not deleted whose sfid the org did not list (or that have none)."""
    query = sql.SQL(
        "SELECT t.id, t.sfid FROM {} AS t WHERE t.isdeleted IS NOT TRUE"
        " AND (t.sfid IS NULL OR NOT EXISTS"
        " (SELECT 1 FROM _fl_verify_seen s WHERE s.sfid = t.sfid)) ORDER BY t.id"
    ).format(_table(mapping))
    with conn.transaction(), conn.cursor("_fl_verify_missing") as cur:
        cur.itersize = 2000
        for row in cur.execute(query):
            yield Difference(
                "missing_in_salesforce",
                mapping.object,
                None if row["sfid"] is None else str(row["sfid"]),
                int(row["id"]),
            )


# ------------------------------------------------------------------ values


def _comparable(f: FieldMapping, column_value: Any) -> Any:
    """A column value in the form both sides are compared in (module doc)."""
    value = types.to_salesforce(f.from_column(column_value))
    if f.sf_type == "boolean" and value is None:
        return False  # a checkbox has no null in Salesforce: null is stored false
    if f.sf_type == "multipicklist" and isinstance(value, str):
        return frozenset(part for part in value.split(";") if part)
    if isinstance(value, list):  # a text[] column holding a multipicklist
        return frozenset(value)
    if value == "" and f.sf_type not in ("boolean",):
        return None  # Salesforce stores no empty text: "" reads back as null
    return value


def _wire(value: Any) -> Any:
    if isinstance(value, frozenset):
        return ";".join(sorted(value))
    return value


def _show(value: Any) -> str:
    return "null" if value is None else json.dumps(_jsonable(value))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


# ------------------------------------------------------------------ repair


def gap_events(
    org: str, mapping: Mapping, ids: list[str], at: datetime | None = None
) -> list[Event]:
    """``GAP_UPDATE`` events for ``ids``, as the CDC subscriber would publish
    them: the Salesforce→Postgres applier fetches each record and applies it
    whole.

    ``at`` (default now) is the events' commit time. A record still there
    takes its own SystemModstamp instead; a deleted one keeps ``at``, so it
    must be the org's time (its clock may differ from ours), or the applier
    would find the delete older than the row and skip it.
    """
    now_ms = int((at or datetime.now(UTC)).timestamp() * 1000)
    events = []
    for record_id in ids:
        header = {
            "entityName": mapping.object,
            "recordIds": [record_id],
            "changeType": "GAP_UPDATE",
            "commitTimestamp": now_ms,
            "changeOrigin": "",
        }
        value = {
            "org": org,
            "entity": mapping.object,
            "record_id": record_id,
            "replay_id": None,
            "change_type": "GAP_UPDATE",
            "payload": {"ChangeEventHeader": header},
        }
        events.append(
            Event(
                topic="verify",
                partition=0,
                offset=-1,
                key=record_id.encode(),
                value=json.dumps(value).encode(),
                headers={"source": "verify"},
                timestamp=now_ms / 1000,
            )
        )
    return events


def applier_repairer(handler: Any) -> Repairer:
    """A ``Repairer`` feeding a ``SalesforceToPostgres`` handler gap events."""

    def repair(mapping: Mapping, ids: list[str], at: datetime) -> None:
        log.info("%s: re-reading %d record(s) from the org", mapping.object, len(ids))
        asyncio.run(handler.handle(gap_events(mapping.org, mapping, ids, at)))

    return repair
