"""Backfill: copy every record of a mapped object from the org into Postgres.

One Bulk API 2.0 query job per mapping (``queryAll``, so deleted records
arrive with ``IsDeleted`` true), ordered by SystemModstamp. Its CSV result
is read one page at a time (``maxRecords``, 50,000 by default). Each page,
in ONE Postgres transaction on one of the merge sessions:

1. is COPYed as text into a temporary staging table (one text column per
   CSV column; the table empties itself at commit);
2. is merged into the mapped table by ``INSERT ... SELECT <casts> ... ON
   CONFLICT (sfid) DO UPDATE ... WHERE`` the stored row is not newer
   (``systemmodstamp``) and holds no local change waiting to go out
   (``_sync_state = 'pending'``): streaming may run during a backfill and
   must never be overwritten by an older copy of a record.

Then, in a transaction of its own on the position session, the resume
position in ``forcelink.backfill_progress`` moves over the page. Repeating
a page changes nothing (the merge is idempotent), so what a crash may cost
is repeating pages, never skipping one. The position is the job id and the
locator of the next page, kept with the SystemModstamp of the last row
merged, as JSON in the ``cursor`` column. A worked example, 120,000 records
in pages of 50,000::

    page 1: rows 0..49,999       cursor {"locator": "NTAwMDA", "modstamp":
                                 "2026-01-02T03:04:05Z", ...}, rows 50,000
    page 2: rows 50,000..99,999  cursor {"locator": "MTAwMDAw", ...}, rows 100,000
    -- crash while merging page 3: its transaction is rolled back --
    rerun: the job still exists -> GET results?locator=MTAwMDAw -> page 3
    rerun: the job is gone (jobs are kept a few days) -> a new job with
           "SystemModstamp >= 2026-01-02T03:04:05Z": records stamped at
           that second are read again and merge to the same row.

Pages side by side. Pages download one after the other (each answer
carries the locator of the next; the next page downloads during merges),
but ``Options.sessions`` pages (2 by default) merge at the same time, each
on its own session, and their transactions may commit in any order. The
position moves in page order only, over a page whose transaction has
committed and after every earlier page's position was stored::

    page 3 merging on session A, page 4 on session B
    B commits page 4 first   -> nothing stored yet (page 3 is not merged)
    A commits page 3         -> position after page 3, then after page 4
    -- crash after B committed page 4, before A committed page 3 --
    rerun: from the stored locator (after page 2) -> pages 3 and 4 again

So the stored position never passes a page that is not merged, and a crash
repeats at most the pages in flight (``sessions`` of them, plus those merged
but not yet recorded). The pages of one job hold distinct records (the
result is a snapshot taken when the job ran, each record once), so two
sessions never write the same row. A page that fails stops the backfill
with the position before it; pages after it that did commit are merged
again by the rerun.

Values are converted by Postgres while merging (``cast_sql``): text to the
column type exactly as ``Mapping.to_columns(row, form="csv")`` converts it
in Python. When Postgres refuses a page (a value that does not fit), the
page is merged again through ``to_columns``, record by record; a record
that does not convert is left out and listed in ``backfill_progress.error``
(``rejected``), and the others are merged: one bad record never stops the
rest.

Every API call is counted in METRICS, and the allowance the org reports in
``Sforce-Limit-Info`` is checked before each call: the backfill stops with
``BackfillStopped`` (saying how many calls remain) before it would eat the
reserve that the sync itself needs; a rerun resumes where it stopped.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import queue
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import requests
from psycopg import sql
from psycopg.types.json import Jsonb
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from tqdm import tqdm

from forcelink.connector.postgres.setup import apply_session_origin
from forcelink.connector.salesforce.auth import (
    OrgConnection,
    fetch_token,
    salesforce_client,
)
from forcelink.errors import (
    RecordRejected,
    SourceUnavailable,
    TerminalError,
    TransientError,
)
from forcelink.mapping import FieldMapping, Mapping
from forcelink.mapping.model import TRANSFORMS
from forcelink.mapping.types import DECIMAL_TYPES, TEXT_TYPES
from forcelink.metrics import METRICS, Metrics

log = logging.getLogger("forcelink.connector.salesforce.backfill")

PAGE_RECORDS = 50_000
MERGE_SESSIONS = 2
"""Pages merged at the same time, each on its own Postgres session."""
RESERVE_RATIO = 0.10
"""Default share of the daily API allowance a backfill leaves untouched."""
POLL_SHARE = 0.2
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 5.0
"""A running job's status is asked again after a fifth of the time it has
run so far, within these bounds: its end is seen at most about 20% late
(fixed steps of up to 5 s saw a 4 s job end 5 s late), and a one-minute
job costs about 30 status calls."""
RETRIES = 5
MAX_REJECTED_KEPT = 100
DIRECTION = "sf_to_pg"

T = TypeVar("T")

# "api-usage=N/M", but not "per-app-api-usage=..." (a connected app's quota).
_API_USAGE = re.compile(r"(?<![\w-])api-usage=(\d+)/(\d+)")


class BackfillStopped(TransientError):
    """Stopped before the org's API allowance ran out; a rerun resumes."""


class JobGone(TerminalError):
    """The org no longer has the query job (or refuses its locator)."""


@dataclass
class Options:
    since: datetime | None = None
    """Only records with SystemModstamp >= since (a new job, not a resume)."""
    restart: bool = False
    """Forget any stored position and start a new job."""
    page_records: int = PAGE_RECORDS
    api_reserve: int | None = None
    """API calls to leave for the sync; None: RESERVE_RATIO of the daily limit."""
    progress: bool = True
    """Show a tqdm bar on stderr."""
    origin: str = "forcelink"
    """Replication origin name for the writes (the capture reader's setting)."""
    sessions: int = MERGE_SESSIONS
    """Postgres sessions merging pages at the same time (at least 1)."""


@dataclass
class Result:
    object: str
    state: str
    """done, skipped (already done earlier) or empty (nothing matched)."""
    rows: int = 0
    total: int = 0
    job_id: str | None = None
    rejected: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------
# the org side: calls counted, allowance watched, session renewed


class OrgApi:
    """A logged-in client for one org that watches its API allowance.

    Every response passes a hook that counts the call in METRICS and reads
    ``Sforce-Limit-Info``; :meth:`call` checks the allowance first, renews
    an expired session once, and retries transient failures with backoff.
    """

    def __init__(
        self,
        name: str,
        conn: OrgConnection,
        client_tag: str = "forcelink",
        metrics: Metrics = METRICS,
    ) -> None:
        self.name = name
        self.conn = conn
        self.client_tag = client_tag
        self.metrics = metrics
        self.used: int | None = None
        self.limit: int | None = None
        self.reserve = 0
        self.client = self._login()

    def _login(self) -> Salesforce:
        self.metrics.api_call(self.name, "auth")
        client = salesforce_client(self.conn, fetch_token(self.conn), self.client_tag)
        client.session.hooks["response"].append(self._observe)
        return client

    def _observe(self, response: requests.Response, *args: Any, **kw: Any) -> None:
        kind = "bulk" if "/jobs/" in str(response.request.url or "") else "rest"
        self.metrics.api_call(self.name, kind)
        header = response.headers.get("Sforce-Limit-Info")
        found = _API_USAGE.search(header or "")
        if found:
            self.metrics.api_usage(self.name, header)
            self.used, self.limit = int(found.group(1)), int(found.group(2))

    @property
    def remaining(self) -> int | None:
        if self.used is None or self.limit is None:
            return None
        return max(self.limit - self.used, 0)

    def read_limits(self, reserve: int | None) -> None:
        """Read /limits; set the reserve (given, or a share of the daily limit)."""
        answer = self.call(lambda c: c.restful("limits"), check=False)
        daily = (answer or {}).get("DailyApiRequests") or {}
        if "Max" in daily and "Remaining" in daily:
            self.limit = int(daily["Max"])
            self.used = self.limit - int(daily["Remaining"])
        limit = self.limit or 0
        self.reserve = (
            reserve if reserve is not None else math.ceil(limit * RESERVE_RATIO)
        )
        log.info(
            "org %s: %s API calls left today, keeping %d in reserve",
            self.name,
            self.remaining if self.remaining is not None else "unknown",
            self.reserve,
        )

    def check_allowance(self) -> None:
        remaining = self.remaining
        if remaining is not None and remaining <= self.reserve:
            raise BackfillStopped(
                f"stopped to keep the org's API allowance: {remaining} call(s) left "
                f"today, {self.reserve} kept in reserve for the sync. The position "
                "is saved: rerun the same command once the 24-hour allowance has "
                "recovered, or lower --api-reserve",
                org=self.name,
            )

    def bulk(self, sobject: str) -> Any:
        # The private ``_client`` of simple-salesforce's Bulk 2.0 type: its
        # public ``query`` generator hides the job id and the locator, and
        # resuming after a crash needs both.
        return getattr(self.client.bulk2, sobject)._client

    def call(self, action: Callable[[Salesforce], T], check: bool = True) -> T:
        """Run ``action(client)`` with the allowance check, renewal and retries."""
        renewed = False
        for attempt in range(RETRIES):
            if check:
                self.check_allowance()
            try:
                return action(self.client)
            except SalesforceExpiredSession:
                if renewed:
                    raise
                log.info("org %s: session expired, logging in again", self.name)
                self.client, renewed = self._login(), True
            except SalesforceRefusedRequest as error:
                if "REQUEST_LIMIT_EXCEEDED" in str(error.content):
                    raise BackfillStopped(
                        "the org refused the call: its daily API allowance is "
                        "spent. The position is saved: rerun the same command "
                        "once the allowance has recovered",
                        org=self.name,
                    ) from error
                raise TerminalError(_sf_message(error), org=self.name) from error
            except SalesforceResourceNotFound:
                raise
            except (SalesforceError, requests.RequestException) as error:
                if attempt == RETRIES - 1 or not _transient(error):
                    raise _translate(error, self.name) from error
                pause = min(2.0**attempt, 30.0)
                log.warning("org %s: %s; retrying in %.0fs", self.name, error, pause)
                time.sleep(pause)
        raise SourceUnavailable("gave up after retries", org=self.name)


def _transient(error: Exception) -> bool:
    if isinstance(error, requests.RequestException):
        return True
    status = getattr(error, "status", 0)
    return status >= 500 or "UNABLE_TO_LOCK_ROW" in str(getattr(error, "content", ""))


def _sf_message(error: SalesforceError) -> str:
    content = error.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        return f"{first.get('errorCode')}: {first.get('message')}"
    return f"HTTP {error.status}"


def _translate(error: Exception, org: str) -> Exception:
    if isinstance(error, requests.RequestException):
        return SourceUnavailable(f"org unreachable: {type(error).__name__}", org=org)
    assert isinstance(error, SalesforceError)
    if error.status >= 500:
        return SourceUnavailable(_sf_message(error), org=org)
    return TerminalError(_sf_message(error), org=org)


# --------------------------------------------------------------------------
# values: CSV text -> column, in SQL, exactly as Mapping.to_columns does


@functools.cache
def _py_whitespace() -> str:
    """What ``str.strip`` removes: Postgres ``btrim`` is given the same set.

    Built on first use: walking every code point takes 0.2 s, which every
    ``forcelink`` command paid at start when it was built on import."""
    return "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())


def cast_sql(f: FieldMapping, source: sql.Composable) -> sql.Composable:
    """SQL turning the CSV text ``source`` into this field's column value.

    Agrees with ``f.to_column(text, form="csv")`` (tests compare both on a
    table of values). A value Python would refuse makes Postgres raise too,
    by casting a message to the target type, which Postgres cannot parse.
    """
    value: sql.Composable = sql.SQL("NULLIF({}, '')").format(source)
    kind = f.column_type.kind
    if f.sf_type in TEXT_TYPES or f.sf_type == "multipicklist":
        value = _transform_sql(f.transform, value)
        if kind == "text[]":
            return sql.SQL("string_to_array({}, ';')").format(value)
        return value
    if f.sf_type == "boolean":
        # What Bulk API writes first; other spellings Python takes next.
        return sql.SQL(
            "CASE {v} WHEN 'true' THEN true WHEN 'false' THEN false ELSE "
            "CASE lower({v}) WHEN 'true' THEN true WHEN '1' THEN true "
            "WHEN 'false' THEN false WHEN '0' THEN false "
            "ELSE ('expected true or false: ' || {v})::boolean END END"
        ).format(v=value)
    if f.sf_type == "int":
        # Digits only (what Bulk API writes) cast straight; "5.0" or "1E3"
        # go the long way, which Python's int parsing also accepts.
        whole = sql.SQL(
            "CASE WHEN strpos({v}, '.') + strpos({v}, 'e') + strpos({v}, 'E') = 0 "
            "THEN {v}::bigint::numeric "
            "WHEN {v}::numeric = trunc({v}::numeric) THEN trunc({v}::numeric) "
            "ELSE ('expected a whole number: ' || {v})::numeric END"
        ).format(v=value)
        if kind == "integer":
            return sql.SQL("({})::bigint").format(whole)
        return sql.SQL("({})::text").format(whole) if kind == "text" else whole
    if f.sf_type in DECIMAL_TYPES:
        number = sql.SQL("({})::numeric").format(value)
        return sql.SQL("{}::text").format(number) if kind == "text" else number
    if f.sf_type == "date":
        day = sql.SQL("({})::date").format(value)
        return (
            sql.SQL("to_char({}, 'YYYY-MM-DD')").format(day) if kind == "text" else day
        )
    if f.sf_type == "datetime":
        moment = sql.SQL("({})::timestamptz").format(value)
        if kind == "text":
            return sql.SQL(
                "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            ).format(moment)
        return moment
    raise TerminalError(f"no SQL conversion for {f.sf_type} -> {f.column_type.sql}")


def _transform_sql(name: str | None, value: sql.Composable) -> sql.Composable:
    if name is None:
        return value
    if name == "trim":
        # Most values start and end with a visible ASCII character: nothing to
        # trim, and btrim with a multi-byte set is slow (1 us a value).
        return sql.SQL(
            "CASE WHEN ascii({v}) BETWEEN 33 AND 126 "
            "AND ascii(right({v}, 1)) BETWEEN 33 AND 126 THEN {v} "
            "ELSE btrim({v}, {spaces}) END"
        ).format(v=value, spaces=sql.Literal(_py_whitespace()))
    if name in ("lower", "upper"):
        # ICU's root locale maps case over all of Unicode like str.lower and
        # str.upper; the database's own collation may be "C" (ASCII only).
        return sql.SQL('{}({} COLLATE "und-x-icu")').format(sql.SQL(name), value)
    if name == "empty_to_null":
        return sql.SQL("NULLIF({}, '')").format(value)
    raise TerminalError(f"unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")


# --------------------------------------------------------------------------
# Postgres side: staging, merging, position


@dataclass
class _Plan:
    """The SQL of one mapping's backfill, built once."""

    mapping: Mapping
    fields: list[FieldMapping]
    header: list[str]
    """The CSV columns expected, in SELECT order (``Account.External_Id__c``)."""
    stage: sql.Identifier
    typed_stage: sql.Identifier
    merge_from_text: sql.Composed = field(init=False)
    merge_from_typed: sql.Composed = field(init=False)

    def __post_init__(self) -> None:
        index = {path.lower(): i for i, path in enumerate(self.header)}
        text_exprs = [
            cast_sql(f, sql.Identifier(f"c{index[f.salesforce_path.lower()]}"))
            for f in self.fields
        ]
        typed_exprs = [sql.Identifier(f.column) for f in self.fields]
        self.merge_from_text = _merge_sql(self, self.stage, text_exprs)
        self.merge_from_typed = _merge_sql(self, self.typed_stage, typed_exprs)


def _plan(mapping: Mapping) -> _Plan:
    fields = [f for f in mapping.fields if f.reads]
    header = list(dict.fromkeys(f.salesforce_path for f in fields))
    name = mapping.table_name
    return _Plan(
        mapping,
        fields,
        header,
        sql.Identifier(f"_fl_stage_{name}"),
        sql.Identifier(f"_fl_typed_{name}"),
    )


def _merge_sql(
    plan: _Plan, source: sql.Identifier, exprs: Sequence[sql.Composable]
) -> sql.Composed:
    columns = [sql.Identifier(f.column) for f in plan.fields]
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(c) for c in columns if c != "sfid"]
    table = sql.Identifier(plan.mapping.schema, plan.mapping.table_name)
    return sql.SQL(
        "INSERT INTO {table} AS target ({columns}, _sync_state, _sync_error, _sync_at)"
        " SELECT {exprs}, 'synced', NULL, now() FROM {source}"
        " ON CONFLICT (sfid) DO UPDATE SET {updates},"
        " _sync_state = 'synced', _sync_error = NULL, _sync_at = EXCLUDED._sync_at"
        " WHERE target._sync_state <> 'pending' AND (target.systemmodstamp IS NULL"
        " OR target.systemmodstamp <= EXCLUDED.systemmodstamp)"
    ).format(
        table=table,
        columns=sql.SQL(", ").join(columns),
        exprs=sql.SQL(", ").join(exprs),
        source=source,
        updates=sql.SQL(", ").join(updates),
    )


def _create_stages(pg: psycopg.Connection[Any], plan: _Plan) -> None:
    """Temporary tables that empty themselves when each page commits."""
    text_columns = [
        sql.SQL("{} text").format(sql.Identifier(f"c{i}"))
        for i in range(len(plan.header))
    ]
    pg.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
            plan.stage, sql.SQL(", ").join(text_columns)
        )
    )
    table = sql.Identifier(plan.mapping.schema, plan.mapping.table_name)
    columns = sql.SQL(", ").join(sql.Identifier(f.column) for f in plan.fields)
    pg.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS"
            " AS SELECT {} FROM {} WITH NO DATA"
        ).format(plan.typed_stage, columns, table)
    )
    pg.commit()


@dataclass
class _Merged:
    """What merging one page did, for the position to move over it."""

    count: int
    """Records read from the page (merged, or left out as rejected)."""
    modstamp: str | None
    rejected: list[dict[str, Any]]


@dataclass
class _Position:
    """A stored backfill position (one row of forcelink.backfill_progress)."""

    job_id: str | None = None
    locator: str | None = None
    modstamp: str | None = None
    since: str | None = None
    rows: int = 0
    state: str = "pending"
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def cursor(self) -> str:
        return json.dumps(
            {"locator": self.locator, "modstamp": self.modstamp, "since": self.since}
        )


def _load_position(pg: psycopg.Connection[Any], org: str, obj: str) -> _Position | None:
    row = pg.execute(
        "SELECT job_id, cursor, rows, state, error FROM forcelink.backfill_progress"
        " WHERE org = %s AND object = %s",
        (org, obj),
    ).fetchone()
    pg.commit()
    if row is None:
        return None
    cursor = json.loads(row["cursor"]) if row["cursor"] else {}
    error = row["error"] or {}
    return _Position(
        job_id=row["job_id"],
        locator=cursor.get("locator"),
        modstamp=cursor.get("modstamp"),
        since=cursor.get("since"),
        rows=int(row["rows"]),
        state=str(row["state"]),
        rejected=list(error.get("rejected", [])),
    )


def _save_position(
    pg: psycopg.Connection[Any], org: str, obj: str, position: _Position
) -> None:
    """Write the position (inside the caller's transaction)."""
    error = (
        {"rejected": position.rejected[:MAX_REJECTED_KEPT]}
        if position.rejected
        else None
    )
    pg.execute(
        """
        INSERT INTO forcelink.backfill_progress
            (org, object, job_id, cursor, rows, state, error, started_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())
        ON CONFLICT (org, object) DO UPDATE SET
            job_id = EXCLUDED.job_id, cursor = EXCLUDED.cursor, rows = EXCLUDED.rows,
            state = EXCLUDED.state, error = EXCLUDED.error, updated_at = now()
        """,
        (
            org,
            obj,
            position.job_id,
            position.cursor(),
            position.rows,
            position.state,
            Jsonb(error) if error else None,
        ),
    )


# --------------------------------------------------------------------------
# the run


def soql_for(mapping: Mapping, since: str | None) -> str:
    """The mapping's query, ``SystemModstamp >= since`` added, in stamp order.

    The order is what makes "start again from the last stamp merged" safe
    when a job is gone: every record not yet merged is stamped later.
    """
    base = replace(mapping, soql_filter=None).soql()
    conditions = [f"({mapping.soql_filter})"] if mapping.soql_filter else []
    if since:
        conditions.append(f"SystemModstamp >= {since}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"{base}{where} ORDER BY SystemModstamp"


def _parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal, cut to the second (so ``>=`` keeps ties)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backfill(
    database_url: str,
    api: OrgApi,
    mappings: Sequence[Mapping],
    options: Options | None = None,
) -> list[Result]:
    """Backfill each mapping that reads from Salesforce, one after the other.

    The mapped tables must exist (``forcelink mappings apply``). Raises
    ``BackfillStopped`` when the API allowance comes near its reserve; what
    was merged stays, and calling again resumes.
    """
    options = options or Options()
    if options.sessions < 1:
        raise ValueError(f"sessions must be at least 1, not {options.sessions}")
    readable = [m for m in mappings if m.mode in ("read_only", "read_write")]
    api.read_limits(options.api_reserve)
    results = []
    with ExitStack() as stack:
        # The position session writes only forcelink.backfill_progress, which
        # no publication holds: it needs no replication origin.
        pg = stack.enter_context(_session(database_url, origin=None))
        merging = [
            stack.enter_context(_session(database_url, options.origin))
            for _ in range(options.sessions)
        ]
        for mapping in readable:
            results.append(_ObjectBackfill(api, pg, merging, mapping, options).run())
    return results


def _session(database_url: str, origin: str | None) -> psycopg.Connection[Any]:
    """A Postgres session reading text as the merge expects (UTC, ISO dates)."""
    try:
        pg = psycopg.connect(database_url, row_factory=psycopg.rows.dict_row)
    except psycopg.OperationalError as error:
        raise SourceUnavailable(f"cannot reach the database: {error}") from error
    if origin is not None:
        # Tagged as forcelink's own writes: the capture reader skips them (no
        # echo back to the org) and the pending trigger leaves them 'synced'.
        apply_session_origin(pg, origin)  # type: ignore[arg-type]  # any row type
    pg.execute("SET TIME ZONE 'UTC'")
    pg.execute("SET DateStyle = 'ISO, YMD'")
    pg.commit()
    return pg


class _ObjectBackfill:
    """The backfill of one mapping: find or create the job, merge its pages."""

    def __init__(
        self,
        api: OrgApi,
        pg: psycopg.Connection[Any],
        merging: Sequence[psycopg.Connection[Any]],
        mapping: Mapping,
        options: Options,
    ) -> None:
        self.api = api
        self.pg = pg
        """The session that reads and moves the stored position."""
        self.merging = merging
        """The sessions that merge pages, one page each at a time."""
        self.mapping = mapping
        self.options = options
        self.org = mapping.org
        self.obj = mapping.object
        self.plan = _plan(mapping)
        self.bulk = api.bulk(mapping.object)
        self.position = _Position()
        self.total = 0
        self.logged_tenths = 0

    def run(self) -> Result:
        started = time.monotonic()
        stored = self._stored()
        if stored is not None and stored.state == "done" and not self.options.since:
            log.info(
                "%s: done earlier (%d rows); --restart to copy again",
                self.obj,
                stored.rows,
            )
            return Result(self.obj, "skipped", stored.rows, stored.rows, stored.job_id)
        for session in self.merging:
            _create_stages(session, self.plan)
        since = soql_datetime(self.options.since) if self.options.since else None
        # An unfinished run resumes, unless this one asks for another --since.
        unfinished = stored is not None and stored.state != "done" and stored.job_id
        if stored is not None and unfinished and stored.since == since:
            self.position = stored
            self._resume()
        else:
            self.position = _Position(since=since)
            self._start_job(since, base_rows=0)
        self._copy_pages()
        seconds = time.monotonic() - started
        p = self.position
        log.info("%s: backfill done, %d rows in %.1fs", self.obj, p.rows, seconds)
        state = "done" if self.total else "empty"
        return Result(
            self.obj, state, p.rows, self.total, p.job_id, len(p.rejected), seconds
        )

    def _stored(self) -> _Position | None:
        if self.options.restart:
            self.pg.execute(
                "DELETE FROM forcelink.backfill_progress"
                " WHERE org = %s AND object = %s",
                (self.org, self.obj),
            )
            self.pg.commit()
            return None
        return _load_position(self.pg, self.org, self.obj)

    # -- the job

    def _start_job(self, since: str | None, base_rows: int) -> None:
        query = soql_for(self.mapping, since)
        log.info("%s: starting a Bulk API query job: %s", self.obj, query)
        info = self.api.call(lambda c: self.bulk.create_job("queryAll", query))
        p = self.position
        p.job_id, p.locator, p.state = str(info["id"]), None, "running"
        self._commit_position()
        self.total = base_rows + self._wait(p.job_id)

    def _resume(self) -> None:
        p = self.position
        assert p.job_id is not None  # checked by the caller
        try:
            total = self._wait(p.job_id)
        except JobGone:
            since = p.modstamp or p.since
            log.warning(
                "%s: job %s is gone; a new job from SystemModstamp %s",
                self.obj, p.job_id, since or "(the start)",
            )  # fmt: skip
            self._start_job(since, base_rows=p.rows)
            return
        log.info("%s: resuming job %s after %d rows", self.obj, p.job_id, p.rows)
        self.total = total

    def _wait(self, job_id: str) -> int:
        """Poll until the job is complete; its record count."""
        started = time.monotonic()
        for _ in range(10_000):
            info = self._get_job(job_id)
            state = info.get("state")
            if state == "JobComplete":
                total = int(info.get("numberRecordsProcessed") or 0)
                log.info("%s: job %s complete, %d records", self.obj, job_id, total)
                return total
            if state in ("Failed", "Aborted"):
                raise TerminalError(
                    f"query job {state}: {info.get('errorMessage', '')}",
                    org=self.org, object=self.obj, job=job_id,
                )  # fmt: skip
            ran = time.monotonic() - started
            time.sleep(min(max(ran * POLL_SHARE, POLL_MIN_SECONDS), POLL_MAX_SECONDS))
        raise SourceUnavailable("query job never completed", org=self.org, job=job_id)

    def _get_job(self, job_id: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = self.api.call(
                lambda c: self.bulk.get_job(job_id, True)
            )
        except SalesforceResourceNotFound as error:
            raise JobGone("query job not found", org=self.org, job=job_id) from error
        return info

    def _fetch(self, locator: str) -> dict[str, Any]:
        job_id = self.position.job_id
        size = self.options.page_records
        started = time.monotonic()
        try:
            page: dict[str, Any] = self.api.call(
                lambda c: self.bulk.get_query_results(job_id, locator, size)
            )
        except SalesforceResourceNotFound as error:
            raise JobGone("query job not found", org=self.org, job=job_id) from error
        except TerminalError as error:
            if "INVALIDLOCATOR" in error.message or "INVALIDJOBSTATE" in error.message:
                raise JobGone(error.message, org=self.org, job=job_id) from error
            raise
        log.debug(
            "%s: page of %d records fetched in %.2fs",
            self.obj, page["number_of_records"], time.monotonic() - started,
        )  # fmt: skip
        return page

    # -- the pages

    def _copy_pages(self) -> None:
        """Merge the pages, several at once (see "Pages side by side")."""
        idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        for session in self.merging:
            idle.put(session)
        with (
            self._bar() as bar,
            ThreadPoolExecutor(1) as fetcher,
            ThreadPoolExecutor(len(self.merging)) as merger,
        ):
            try:
                self._page_loop(fetcher, merger, idle, bar)
            except JobGone:
                p = self.position
                self._start_job(p.modstamp or p.since, base_rows=p.rows)
                bar.total = self.total
                self._page_loop(fetcher, merger, idle, bar)

    def _page_loop(
        self,
        fetcher: ThreadPoolExecutor,
        merger: ThreadPoolExecutor,
        idle: queue.SimpleQueue[psycopg.Connection[Any]],
        bar: tqdm[Any],
    ) -> None:
        """Download pages in order, merge as many at once as there are merge
        sessions, and move the position over each page in page order."""
        merging: deque[tuple[Future[_Merged], str | None]] = deque()
        ahead: Future[dict[str, Any]] | None = fetcher.submit(
            self._fetch, self.position.locator or ""
        )
        try:
            while ahead is not None:
                if len(merging) == len(self.merging):
                    self._advance(*merging.popleft(), bar)
                    continue
                page = ahead.result()
                following = page["locator"] or None
                ahead = fetcher.submit(self._fetch, following) if following else None
                merged = merger.submit(self._merge, idle, page["records"])
                merging.append((merged, following))
        except JobGone:
            self._settle(merging, bar)  # a new job starts after what merged
            raise
        self._settle(merging, bar)

    def _settle(
        self, merging: deque[tuple[Future[_Merged], str | None]], bar: tqdm[Any]
    ) -> None:
        """Wait for the pages still merging and record them, in page order."""
        while merging:
            self._advance(*merging.popleft(), bar)

    def _advance(
        self, merged: Future[_Merged], following: str | None, bar: tqdm[Any]
    ) -> None:
        """Move the stored position over the oldest page still in flight.

        Called in page order only, so every earlier page is recorded already;
        ``merged.result()`` raises that page's error, and then the position
        stays before it."""
        page = merged.result()
        p = self.position
        p.rows += page.count
        p.locator = following
        p.modstamp = page.modstamp or p.modstamp
        p.state = "running" if following else "done"
        p.rejected.extend(page.rejected)
        self._commit_position()
        self.api.metrics.backfill_rows.labels(
            org=self.org, direction=DIRECTION, object=self.obj
        ).inc(page.count)
        bar.update(page.count)
        self._report()

    def _merge(
        self, idle: queue.SimpleQueue[psycopg.Connection[Any]], text: str
    ) -> _Merged:
        """One page in one transaction on a free merge session (a worker
        thread); committed here, recorded later by ``_advance``."""
        self._check_header(text)
        pg = idle.get()
        try:
            return self._merge_on(pg, text)
        except BaseException:
            with suppress(psycopg.Error):  # the session must go back clean
                pg.rollback()
            raise
        finally:
            idle.put(pg)

    def _merge_on(self, pg: psycopg.Connection[Any], text: str) -> _Merged:
        started = time.monotonic()
        rejected: list[dict[str, Any]] = []
        try:
            count, modstamp = self._merge_in_sql(pg, text)
        except psycopg.errors.DataError as error:
            pg.rollback()
            log.warning("%s: Postgres refused a page (%s); converting it row by row",
                        self.obj, str(error).splitlines()[0])  # fmt: skip
            count, modstamp = self._merge_in_python(pg, text, rejected)
        except psycopg.errors.IntegrityError as error:
            # A row of the table already holds a unique value (the upsert
            # key) that a record of this page brings under another sfid.
            raise TerminalError(
                f"Postgres refused a page: {str(error).splitlines()[0]}"
                f" ({error.diag.message_detail or 'no detail'}); fix the row"
                " in the table, then rerun to resume",
                org=self.org, object=self.obj, job=self.position.job_id,
            ) from error  # fmt: skip
        pg.commit()
        log.debug(
            "%s: %d rows merged in %.2fs", self.obj, count, time.monotonic() - started
        )
        return _Merged(count, modstamp, rejected)

    def _check_header(self, text: str) -> None:
        line = text[: text.find("\n")].strip("\r\n")
        got = [name.strip('"').lower() for name in line.split(",")]
        if got != [name.lower() for name in self.plan.header]:
            raise TerminalError(
                f"the query result's columns are {line!r}, expected "
                f"{','.join(self.plan.header)!r} (did the mapping change since "
                "the job started? --restart begins a new one)",
                org=self.org, object=self.obj,
            )  # fmt: skip

    def _merge_in_sql(
        self, pg: psycopg.Connection[Any], text: str
    ) -> tuple[int, str | None]:
        plan = self.plan
        stamp = plan.header.index("SystemModstamp")
        with pg.cursor() as cur:
            copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)")
            with cur.copy(copy_sql.format(plan.stage)) as copy:
                copy.write(text)
            cur.execute(plan.merge_from_text)
            row = cur.execute(
                sql.SQL(
                    "SELECT max(NULLIF({}, '')::timestamptz) AS stamp,"
                    " count(*) AS n FROM {}"
                ).format(sql.Identifier(f"c{stamp}"), plan.stage)
            ).fetchone()
        assert row is not None  # an aggregate always answers
        stamp_value: datetime | None = row["stamp"]
        count = int(row["n"])
        return count, soql_datetime(stamp_value) if stamp_value else None

    def _merge_in_python(
        self, pg: psycopg.Connection[Any], text: str, rejected: list[dict[str, Any]]
    ) -> tuple[int, str | None]:
        """The page through ``to_columns``; a record that does not convert, or
        that Postgres refuses, is left out and added to ``rejected``.

        Returns the records read (merged or left out) and the latest stamp."""
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        good: list[tuple[dict[str, str], list[Any]]] = []
        stamps: list[str] = []
        for raw in reader:
            record = dict(zip(header, raw, strict=False))
            stamps.append(record.get("SystemModstamp") or "")
            try:
                values = self.mapping.to_columns(record, form="csv")
            except RecordRejected as error:
                rejected.append(
                    self._reject(record, error.message, error.context.get("field"))
                )
                continue
            good.append((record, [values.get(f.column) for f in self.plan.fields]))
        try:
            with pg.transaction():
                self._merge_typed(pg, [row for _, row in good])
        except psycopg.errors.DataError:
            for source, row in good:
                self._merge_one(pg, source, row, rejected)
        latest = max(filter(None, stamps), default=None)
        return len(stamps), soql_datetime(_parse_stamp(latest)) if latest else None

    def _merge_typed(self, pg: psycopg.Connection[Any], rows: list[list[Any]]) -> None:
        with pg.cursor() as cur:
            copy_sql = sql.SQL("COPY {} FROM STDIN").format(self.plan.typed_stage)
            with cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(self.plan.merge_from_typed)
            cur.execute(sql.SQL("DELETE FROM {}").format(self.plan.typed_stage))

    def _merge_one(
        self,
        pg: psycopg.Connection[Any],
        record: dict[str, str],
        values: list[Any],
        rejected: list[dict[str, Any]],
    ) -> None:
        """One record under its own savepoint: Postgres says which ones fail."""
        try:
            with pg.transaction():
                self._merge_typed(pg, [values])
        except psycopg.errors.DataError as error:
            message = str(error).splitlines()[0]
            rejected.append(
                self._reject(record, f"Postgres refused it: {message}", None)
            )

    def _reject(
        self, record: dict[str, str], message: str, field_name: str | None
    ) -> dict[str, Any]:
        log.warning("%s: record %s left out: %s", self.obj, record.get("Id"), message)
        return {"record": record.get("Id"), "field": field_name,
                "error": message, "job": self.position.job_id}  # fmt: skip

    def _commit_position(self) -> None:
        _save_position(self.pg, self.org, self.obj, self.position)
        self.pg.commit()

    # -- progress

    @contextmanager
    def _bar(self) -> Iterator[tqdm[Any]]:
        bar = tqdm(
            total=self.total, initial=self.position.rows, desc=f"{self.org}/{self.obj}",
            unit=" rows", unit_scale=True, disable=not self.options.progress,
            file=sys.stderr, dynamic_ncols=True,
        )  # fmt: skip
        try:
            yield bar
        finally:
            bar.close()

    def _report(self) -> None:
        done, total = self.position.rows, self.total
        self.api.metrics.backfill_progress(self.org, DIRECTION, self.obj, done, total)
        tenths = min(done * 10 // total, 10) if total else 0
        if tenths > self.logged_tenths:
            self.logged_tenths = tenths
            percent = min(done * 100 // total, 100)
            log.info("%s: %d%% (%d of %d rows)", self.obj, percent, done, total)
