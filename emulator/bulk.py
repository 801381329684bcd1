"""Bulk API 2.0: query jobs and ingest jobs under ``/services/data/vXX.X/jobs/``.

Query jobs. ``POST jobs/query`` checks the SOQL at once (the same errors as
REST query) and answers ``UploadComplete``; a background task then runs it
(``InProgress``) and writes the whole result as CSV to a file on disk, with
the byte offset of every row in an array, before saying ``JobComplete``. The
result is therefore fixed at run time, whatever changes later, and a page is
a byte range of that file streamed to the client::

    rows 0..19,999 written; offsets[i] = where row i starts (after the header)
    GET results?maxRecords=8000              -> rows 0..7999,
        Sforce-Locator: ODAwMA (base64 of "8000"), Sforce-NumberOfRecords: 8000
    GET results?locator=ODAwMA&maxRecords=8000  -> rows 8000..15999
    GET results?locator=MTYwMDA&maxRecords=8000 -> rows 16000..19999,
        Sforce-Locator: null

Memory holds 8 bytes per result row, never the rows themselves.

Ingest jobs. ``POST jobs/ingest`` opens a job (``Open``); ``PUT
jobs/ingest/{id}/batches`` streams the CSV to disk; ``PATCH`` with state
``UploadComplete`` starts processing. Rows are applied in chunks of
``CHUNK_ROWS``, each chunk one org transaction (so one batch of change
events), through the org's create/update/upsert/delete with ``api="bulk"``
in the call context. A row the org refuses fails alone: it goes to
failedResults with ``sf__Error`` worded as Salesforce does
(``REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName
--``) and the others are applied. An empty CSV value leaves the field as it
is; ``#N/A`` sets it to null. Aborting stops between chunks; the rows not
reached are listed by unprocessedrecords.
"""

from __future__ import annotations

import array
import asyncio
import base64
import binascii
import contextlib
import csv
import gc
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from forcelink.emulator import ids, soql
from forcelink.emulator.auth import context_of
from forcelink.emulator.clock import format_datetime
from forcelink.emulator.errors import ApiError, invalid_type, not_found
from forcelink.emulator.org import CallContext, Org
from forcelink.emulator.rest import VERSIONS

log = logging.getLogger("forcelink.emulator.bulk")

CHUNK_ROWS = 200
"""Ingest rows per org transaction."""
WRITE_ROWS = 5000
"""Query rows written between two yields to the event loop."""
MAX_UPLOAD_BYTES = 150 * 1024 * 1024
READ_BYTES = 1024 * 1024
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
NULL = "#N/A"
VERSION = r"{version:\d+\.\d+}"


@dataclass
class Job:
    """What query and ingest jobs share: identity, format, state, timing."""

    id: str
    operation: str
    sobject: str
    ctx: CallContext
    created: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    state: str = "Open"
    modstamp: str = ""
    error: str | None = None
    processed: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def delimiter(self) -> str:
        return DELIMITERS[self.column_delimiter]

    @property
    def newline(self) -> str:
        return LINE_ENDINGS[self.line_ending]

    def base_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.sobject,
            "createdById": self.ctx.user_id,
            "createdDate": self.created,
            "systemModstamp": self.modstamp or self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.ctx.api_version),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        return info

    def timing(self) -> dict[str, Any]:
        elapsed = int(max(self.finished - self.started, 0.0) * 1000)
        return {"retries": 0, "totalProcessingTime": elapsed}


@dataclass
class QueryJob(Job):
    plan: soql.Plan | None = None
    path: Path | None = None
    header: bytes = b""
    offsets: array.array[int] = field(default_factory=lambda: array.array("q", [0]))

    def info(self, detail: bool) -> dict[str, Any]:
        info = self.base_info()
        info["jobType"] = "V2Query"
        if detail:
            info["numberRecordsProcessed"] = self.processed
            info.update(self.timing())
            if self.error:
                info["errorMessage"] = self.error
        return info


@dataclass
class IngestJob(Job):
    external_id: str | None = None
    upload: Path | None = None
    results: dict[str, Path] = field(default_factory=dict)
    failed: int = 0

    def info(self, detail: bool) -> dict[str, Any]:
        info = self.base_info()
        info["jobType"] = "V2Ingest"
        if self.external_id:
            info["externalIdFieldName"] = self.external_id
        version = self.ctx.api_version
        info["contentUrl"] = f"services/data/v{version}/jobs/ingest/{self.id}/batches"
        if detail:
            info["numberRecordsProcessed"] = self.processed
            info["numberRecordsFailed"] = self.failed
            info.update(self.timing())
            info["apiActiveProcessingTime"] = info["totalProcessingTime"]
            info["apexProcessingTime"] = 0
            if self.error:
                info["errorMessage"] = self.error
        return info


class Jobs:
    """The Bulk jobs of one org, and the folder holding their files."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self.ids = ids.IdFactory()
        self._folder = tempfile.TemporaryDirectory(prefix="forcelink-bulk-")
        self.folder = Path(self._folder.name)
        self.query: dict[str, QueryJob] = {}
        self.ingest: dict[str, IngestJob] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def new_id(self) -> str:
        return self.ids.new("750")

    def now(self) -> str:
        return format_datetime(self.org.clock.now())

    def start(self, work: Callable[[], Any]) -> None:
        """Run a job's coroutine in the background, keeping a reference."""
        task = asyncio.get_running_loop().create_task(work())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def find_query(self, job_id: str) -> QueryJob:
        job = self.query.get(job_id)
        if job is None:
            raise not_found()
        return job

    def find_ingest(self, job_id: str) -> IngestJob:
        job = self.ingest.get(job_id)
        if job is None:
            raise not_found()
        return job

    def forget(self, job: Job) -> None:
        """Delete a finished job and its files."""
        if job.state not in ("JobComplete", "Failed", "Aborted"):
            raise ApiError(
                400,
                "INVALIDJOBSTATE",
                f"Job {job.id} is {job.state}: it cannot be deleted",
            )
        if isinstance(job, QueryJob):
            del self.query[job.id]
            paths = [job.path]
        else:
            assert isinstance(job, IngestJob)  # the two kinds there are
            del self.ingest[job.id]
            paths = [job.upload, *job.results.values()]
        for path in paths:
            if path is not None:
                path.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# routes

JOBS_KEY = web.AppKey("forcelink.emulator.bulk.jobs", Jobs)


def add_routes(app: web.Application, org: Org) -> None:
    """Serve Bulk API 2.0 query and ingest jobs for ``org``."""
    app[JOBS_KEY] = Jobs(org)
    base = f"/services/data/v{VERSION}/jobs"
    router = app.router
    router.add_post(f"{base}/query", create_query_job)
    router.add_get(f"{base}/query", list_query_jobs)
    router.add_get(f"{base}/query/{{job}}", get_query_job)
    router.add_patch(f"{base}/query/{{job}}", patch_query_job)
    router.add_delete(f"{base}/query/{{job}}", delete_query_job)
    router.add_get(f"{base}/query/{{job}}/results", query_results)
    router.add_post(f"{base}/ingest", create_ingest_job)
    router.add_get(f"{base}/ingest", list_ingest_jobs)
    router.add_get(f"{base}/ingest/{{job}}", get_ingest_job)
    router.add_patch(f"{base}/ingest/{{job}}", patch_ingest_job)
    router.add_delete(f"{base}/ingest/{{job}}", delete_ingest_job)
    router.add_put(f"{base}/ingest/{{job}}/batches", upload_batch)
    for kind in ("successfulResults", "failedResults", "unprocessedrecords"):
        router.add_get(f"{base}/ingest/{{job}}/{kind}", ingest_results)


def _jobs(request: web.Request) -> Jobs:
    """The org's jobs; 404 for an API version the org does not serve."""
    if request.match_info["version"] not in VERSIONS:
        raise not_found()
    return request.app[JOBS_KEY]


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise ApiError(
            400, "JSON_PARSER_ERROR", f"The body is not JSON: {error}"
        ) from error
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "The body must be a JSON object")
    return body


def _format(body: dict[str, Any], job: Job) -> None:
    """Check contentType, columnDelimiter and lineEnding; keep them on the job."""
    if body.get("contentType", "CSV") != "CSV":
        raise ApiError(400, "INVALIDJOB", "contentType must be CSV")
    delimiter = body.get("columnDelimiter") or "COMMA"
    ending = body.get("lineEnding") or "LF"
    if delimiter not in DELIMITERS:
        raise ApiError(400, "INVALIDJOB", f"Invalid columnDelimiter: {delimiter}")
    if ending not in LINE_ENDINGS:
        raise ApiError(400, "INVALIDJOB", f"Invalid lineEnding: {ending}")
    job.column_delimiter, job.line_ending = delimiter, ending


def _list(jobs: list[QueryJob] | list[IngestJob]) -> web.Response:
    records = [job.info(detail=False) for job in jobs]
    return web.json_response({"done": True, "records": records, "nextRecordsUrl": None})


def _set_state(job: Job, body: dict[str, Any], allowed: tuple[str, ...]) -> str:
    wanted = body.get("state")
    if wanted not in allowed:
        raise ApiError(400, "INVALIDJOBSTATE", f"Invalid state: {wanted}")
    if job.state in ("JobComplete", "Failed", "Aborted"):
        raise ApiError(
            400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}: its state is final"
        )
    return str(wanted)


# --------------------------------------------------------------------------
# query jobs


async def create_query_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    body = await _json_body(request)
    operation = body.get("operation")
    if operation not in ("query", "queryAll"):
        raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "INVALIDJOB", "A query job needs a query")

    version = request.match_info["version"]
    plan = soql.plan(soql.parse(text), jobs.org, operation == "queryAll", version)
    _check_bulk_query(plan)
    job = QueryJob(
        jobs.new_id(), operation, plan.sobject.name, context_of(request, "bulk"),
        jobs.now(), plan=plan,
    )  # fmt: skip
    _format(body, job)
    job.state = "UploadComplete"
    jobs.query[job.id] = job
    jobs.start(lambda: run_query(jobs, job))
    log.info("query job %s on %s created", job.id, job.sobject)
    return web.json_response(job.info(detail=False))


def _check_bulk_query(plan: soql.Plan) -> None:
    if plan.query.count:
        raise ApiError(
            400,
            "INVALIDJOB",
            "Aggregate queries are not supported by Bulk API query jobs",
        )
    if any(column.field.type == "address" for column in plan.columns):
        raise ApiError(400, "INVALIDJOB", "Compound data not supported in Bulk Query")


async def list_query_jobs(request: web.Request) -> web.Response:
    return _list(list(_jobs(request).query.values()))


async def get_query_job(request: web.Request) -> web.Response:
    job = _jobs(request).find_query(request.match_info["job"])
    return web.json_response(job.info(detail=True))


async def patch_query_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    job = jobs.find_query(request.match_info["job"])
    job.state = _set_state(job, await _json_body(request), ("Aborted",))
    job.modstamp = jobs.now()
    return web.json_response(job.info(detail=False))


async def delete_query_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    jobs.forget(jobs.find_query(request.match_info["job"]))
    return web.Response(status=204)


async def run_query(jobs: Jobs, job: QueryJob) -> None:
    """Run the query once and write its CSV; the job ends JobComplete,
    Failed (with errorMessage) or, if aborted meanwhile, stays Aborted."""
    await asyncio.sleep(0)  # the creation answer goes out first
    job.state, job.started = "InProgress", time.monotonic()
    try:
        await _write_results(jobs, job)
    except Exception as error:  # one broken job must not take the server down
        log.exception("query job %s failed", job.id)
        job.state, job.error = "Failed", f"{type(error).__name__}: {error}"
    else:
        if job.state != "Aborted":
            job.state = "JobComplete"
    job.finished, job.modstamp = time.monotonic(), jobs.now()
    log.info("query job %s %s: %d rows", job.id, job.state, job.processed)


async def _write_results(jobs: Jobs, job: QueryJob) -> None:
    assert job.plan is not None  # set at creation
    rows = job.plan.run()
    make_rows = _csv_rows(job.plan)
    job.header = _csv_text([job.plan.column_names], job).encode()
    path = jobs.folder / f"{job.id}.csv"
    offsets = array.array("q", [0])
    with path.open("wb") as out:
        for start in range(0, len(rows), WRITE_ROWS):
            if job.state == "Aborted":
                return
            with _no_gc():
                chunk = make_rows(rows[start : start + WRITE_ROWS])
                out.write(_encode_rows(chunk, job, offsets))
            job.processed = len(offsets) - 1
            await asyncio.sleep(0)
    job.path, job.offsets = path, offsets


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Hold the cyclic garbage collector off for one synchronous step.

    Writing rows makes only acyclic garbage, yet each burst of allocations
    sets off collections that walk every record the org holds: measured 4x
    slower at 300,000 records. No await happens inside, so no other code
    runs while the collector is off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _csv_rows(
    plan: soql.Plan,
) -> Callable[[list[soql.Record]], list[tuple[Any, ...]]]:
    """Records -> CSV value tuples: booleans as true/false, datetimes ending in Z.

    Built a column at a time: ``map`` of each column's getter (mostly an
    ``itemgetter``) and ``zip`` of the columns run in C, where a Python call
    per value cost half of a query job's time. A chunk's conversions are
    remembered (``_Converted``): records written together share their stamps.
    """
    getters = [column.getter for column in plan.columns]
    converts = [_BULK_VALUE.get(soql.category(column.field)) for column in plan.columns]

    def rows(records: list[soql.Record]) -> list[tuple[Any, ...]]:
        columns: list[Iterator[Any]] = []
        for get, convert in zip(getters, converts, strict=True):
            values = map(get, records)
            if convert is not None:
                values = map(_Converted(convert).__getitem__, values)
            columns.append(values)
        return list(zip(*columns, strict=True))

    return rows


class _Converted(dict[Any, Any]):
    """``convert(value)`` by lookup, computed once per distinct value."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, value: Any) -> Any:
        converted = self[value] = self.convert(value)
        return converted


_BULK_VALUE: dict[str, Callable[[Any], Any]] = {
    "boolean": lambda v: None if v is None else "true" if v else "false",
    "datetime": lambda v: None if v is None else v[:-5] + "Z",  # ...000+0000
}


def _csv_text(rows: list[Any], job: Job) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=job.delimiter, lineterminator=job.newline).writerows(rows)
    return out.getvalue()


def _encode_rows(
    rows: list[tuple[Any, ...]], job: Job, offsets: array.array[int]
) -> bytes:
    """CSV bytes of ``rows``; appends where each row ends to ``offsets``.

    Without a quote character in the bytes no value was quoted, so none
    holds a line break and the rows are exactly the pieces between line
    endings (UTF-8 never has a line-break byte inside a character). Only a
    chunk with quoted values is written again row by row to find its rows'
    lengths."""
    data = _csv_text(rows, job).encode()
    newline = job.newline.encode()
    pieces = data.split(newline) if b'"' not in data else []
    if len(pieces) == len(rows) + 1:
        lengths = [len(piece) + len(newline) for piece in pieces[:-1]]
    else:
        lengths = [len(_csv_text([row], job).encode()) for row in rows]
    end = offsets[-1]
    for length in lengths:
        end += length
        offsets.append(end)
    return data


async def query_results(request: web.Request) -> web.Response:
    job = _jobs(request).find_query(request.match_info["job"])
    if job.state != "JobComplete" or job.path is None:
        raise ApiError(
            400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not JobComplete"
        )
    total = len(job.offsets) - 1
    start = _locator(request.query.get("locator", ""), total)
    size = _max_records(request.query.get("maxRecords"), total)
    stop = min(start + size, total)
    following = "null" if stop >= total else _encode_locator(stop)

    body = _stream(job.path, job.header, job.offsets[start], job.offsets[stop])
    response = web.Response(body=body, content_type="text/csv", charset="utf-8")
    response.headers["Sforce-Locator"] = following
    response.headers["Sforce-NumberOfRecords"] = str(stop - start)
    return response


def _encode_locator(row: int) -> str:
    return base64.b64encode(str(row).encode()).decode().rstrip("=")


def _locator(text: str, total: int) -> int:
    if text in ("", "null"):
        return 0
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        row = int(decoded.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        row = -1
    if not 0 <= row <= total:
        raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {text}")
    return row


def _max_records(text: str | None, total: int) -> int:
    if text is None or text == "":
        return max(total, 1)
    if not text.isdigit() or int(text) < 1:
        raise ApiError(
            400, "INVALIDJOB", f"maxRecords must be a positive integer: {text}"
        )
    return int(text)


async def _stream(path: Path, header: bytes, start: int, stop: int) -> Any:
    """The header then bytes [start, stop) of the result file, in pieces."""
    yield header
    with path.open("rb") as source:
        source.seek(start)
        remaining = stop - start
        while remaining > 0:
            piece = source.read(min(READ_BYTES, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece


# --------------------------------------------------------------------------
# ingest jobs


async def create_ingest_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    body = await _json_body(request)
    operation = body.get("operation")
    if operation not in INGEST_OPERATIONS:
        raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
    name = str(body.get("object") or "")
    obj = jobs.org.schema.find(name)
    if obj is None:
        raise invalid_type(name)

    external = body.get("externalIdFieldName")
    if operation == "upsert":
        found = obj.find(str(external or ""))
        if found is None or not (found.external_id or found.name == "Id"):
            raise ApiError(
                400, "INVALIDJOB",
                f"InvalidJob : Field name provided, {external} is not an External ID "
                f"or indexed field for {obj.name}",
            )  # fmt: skip
        external = found.name
    job = IngestJob(
        jobs.new_id(), str(operation), obj.name, context_of(request, "bulk"),
        jobs.now(), external_id=external if operation == "upsert" else None,
    )  # fmt: skip
    _format(body, job)
    jobs.ingest[job.id] = job
    log.info("ingest job %s (%s %s) opened", job.id, job.operation, job.sobject)
    return web.json_response(job.info(detail=False))


async def list_ingest_jobs(request: web.Request) -> web.Response:
    return _list(list(_jobs(request).ingest.values()))


async def get_ingest_job(request: web.Request) -> web.Response:
    job = _jobs(request).find_ingest(request.match_info["job"])
    return web.json_response(job.info(detail=True))


async def delete_ingest_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    jobs.forget(jobs.find_ingest(request.match_info["job"]))
    return web.Response(status=204)


async def upload_batch(request: web.Request) -> web.Response:
    """PUT the job's CSV: streamed to disk, at most MAX_UPLOAD_BYTES, once."""
    jobs = _jobs(request)
    job = jobs.find_ingest(request.match_info["job"])
    if job.state != "Open" or job.upload is not None:
        raise ApiError(
            409,
            "INVALIDJOBSTATE",
            f"Job {job.id} is {job.state}: data already uploaded",
        )
    path = jobs.folder / f"{job.id}-upload.csv"
    size = 0
    with path.open("wb") as out:
        async for piece in request.content.iter_chunked(READ_BYTES):
            size += len(piece)
            if size > MAX_UPLOAD_BYTES:
                out.close()
                path.unlink(missing_ok=True)
                raise ApiError(
                    413, "INVALIDBATCH", f"The upload exceeds {MAX_UPLOAD_BYTES} bytes"
                )
            out.write(piece)
    job.upload = path
    return web.Response(status=201)


async def patch_ingest_job(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    job = jobs.find_ingest(request.match_info["job"])
    wanted = _set_state(job, await _json_body(request), ("UploadComplete", "Aborted"))
    if wanted == "UploadComplete":
        if job.state != "Open":
            raise ApiError(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}")
        job.state = "UploadComplete"
        jobs.start(lambda: run_ingest(jobs, job))
    else:
        job.state = "Aborted"
    job.modstamp = jobs.now()
    return web.json_response(job.info(detail=False))


async def ingest_results(request: web.Request) -> web.Response:
    job = _jobs(request).find_ingest(request.match_info["job"])
    kind = request.path.rsplit("/", 1)[-1]
    path = job.results.get(kind)
    if path is None and kind == "unprocessedrecords" and job.state == "Aborted":
        path = job.upload  # aborted before processing: every row is unprocessed
    if path is None or not path.exists():
        return web.Response(body=b"", content_type="text/csv", charset="utf-8")
    body = _stream(path, b"", 0, path.stat().st_size)
    return web.Response(body=body, content_type="text/csv", charset="utf-8")


class _JobFailed(Exception):
    """The whole job cannot run (bad header, no data): its errorMessage."""


async def run_ingest(jobs: Jobs, job: IngestJob) -> None:
    await asyncio.sleep(0)  # the PATCH answer goes out first
    job.state, job.started = "InProgress", time.monotonic()
    try:
        await _ingest(jobs, job)
    except _JobFailed as failure:
        job.state, job.error = "Failed", str(failure)
    except Exception as error:  # one broken job must not take the server down
        log.exception("ingest job %s failed", job.id)
        job.state, job.error = "Failed", f"{type(error).__name__}: {error}"
    else:
        if job.state != "Aborted":
            job.state = "JobComplete"
    job.finished, job.modstamp = time.monotonic(), jobs.now()
    log.info(
        "ingest job %s %s: %d processed, %d failed",
        job.id, job.state, job.processed, job.failed,
    )  # fmt: skip


@dataclass
class _Columns:
    """How the uploaded header maps onto the object."""

    fields: list[tuple[int, str, str | None, str]]
    """(index, key, external id field of a relationship | None, field #N/A nulls)"""
    id_index: int | None = None
    external_index: int | None = None


async def _ingest(jobs: Jobs, job: IngestJob) -> None:
    if job.upload is None:
        raise _JobFailed("InvalidBatch : No data was uploaded for this job")
    with job.upload.open(encoding="utf-8-sig", newline="") as source:
        reader = csv.reader(source, delimiter=job.delimiter)
        header = next(reader, None)
        if not header:
            raise _JobFailed("InvalidBatch : The uploaded data has no header row")
        columns = _columns(jobs.org, job, header)
        with _ResultFiles(jobs.folder, job, header) as results:
            for chunk in _chunks(reader):
                if job.state == "Aborted":
                    results.unprocessed.writerows(chunk)
                    continue
                _apply_chunk(jobs.org, job, columns, chunk, results)
                results.flush()
                await asyncio.sleep(0)


def _chunks(reader: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    for row in reader:
        if not row:  # a blank line
            continue
        chunk.append(row)
        if len(chunk) == CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _columns(org: Org, job: IngestJob, header: list[str]) -> _Columns:
    """Map header names to fields; an unknown name fails the job, as it does
    in Salesforce. ``Account.External_Id__c`` sets AccountId by external id."""
    table = org.table(job.sobject)
    columns = _Columns([])
    for index, raw in enumerate(header):
        name = raw.strip()
        relationship, _, external = name.partition(".")
        if external:
            reference = table.relationships.get(relationship.lower())
            if reference is None:
                raise _JobFailed(f"InvalidBatch : Field name not found : {name}")
            key = str(reference.relationship_name)
            columns.fields.append((index, key, external, reference.name))
            continue
        found = table.obj.find(name)
        if found is None or found.type == "address":
            raise _JobFailed(f"InvalidBatch : Field name not found : {name}")
        if found.name == "Id":
            columns.id_index = index
        else:
            columns.fields.append((index, found.name, None, found.name))
        if found.name == job.external_id:
            columns.external_index = index
    _check_key_columns(job, columns)
    return columns


def _check_key_columns(job: IngestJob, columns: _Columns) -> None:
    if job.operation in ("update", "delete", "hardDelete") and columns.id_index is None:
        raise _JobFailed("InvalidBatch : Field name not found : Id")
    if job.operation == "upsert" and columns.external_index is None:
        raise _JobFailed(f"InvalidBatch : Field name not found : {job.external_id}")


class _ResultFiles:
    """successfulResults, failedResults and unprocessedrecords of one job."""

    def __init__(self, folder: Path, job: IngestJob, header: list[str]) -> None:
        self.files: list[TextIO] = []
        self.success = self._open(folder, job, "successfulResults")
        self.failure = self._open(folder, job, "failedResults")
        self.unprocessed = self._open(folder, job, "unprocessedrecords")
        self.success.writerow(["sf__Id", "sf__Created", *header])
        self.failure.writerow(["sf__Id", "sf__Error", *header])
        self.unprocessed.writerow(header)

    def _open(self, folder: Path, job: IngestJob, kind: str) -> Any:
        path = folder / f"{job.id}-{kind}.csv"
        job.results[kind] = path
        out = path.open("w", encoding="utf-8", newline="")
        self.files.append(out)
        return csv.writer(out, delimiter=job.delimiter, lineterminator=job.newline)

    def flush(self) -> None:
        for out in self.files:
            out.flush()

    def __enter__(self) -> _ResultFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for out in self.files:
            out.close()


def _apply_chunk(
    org: Org, job: IngestJob, columns: _Columns, chunk: list[list[str]],
    results: _ResultFiles,
) -> None:  # fmt: skip
    """One org transaction; a row the org refuses is reported and skipped."""
    with org.transaction(job.ctx):
        for row in chunk:
            given = _cell(row, columns.id_index)
            try:
                record_id, created = _apply_row(org, job, columns, row, given)
            except ApiError as error:
                results.failure.writerow([given, _error_text(error), *row])
                job.failed += 1
            else:
                flag = "true" if created else "false"
                results.success.writerow([record_id, flag, *row])
            job.processed += 1


def _cell(row: list[str], index: int | None) -> str:
    return row[index].strip() if index is not None and index < len(row) else ""


def _apply_row(
    org: Org, job: IngestJob, columns: _Columns, row: list[str], given_id: str
) -> tuple[str, bool]:
    sobject, ctx, operation = job.sobject, job.ctx, job.operation
    if operation == "insert":
        return org.create(sobject, _values(columns, row), ctx), True
    if operation == "upsert":
        key = _cell(row, columns.external_index)
        if not key:
            raise ApiError(
                400, "MISSING_ARGUMENT", f"{job.external_id} not specified", []
            )
        values = _values(columns, row)
        return org.upsert(sobject, str(job.external_id), key, values, ctx)
    if not given_id:
        raise ApiError(
            400, "MISSING_ARGUMENT", f"Id not specified in an {operation} call"
        )
    try:
        if operation == "update":
            org.update(sobject, given_id, _values(columns, row), ctx)
        else:
            org.delete(sobject, given_id, ctx)
            if operation == "hardDelete":  # gone for good: not in the recycle bin
                org.table(sobject).store(str(ids.normalize(given_id)), None)
    except ApiError as error:
        if error.error_code == "NOT_FOUND":
            raise ApiError(
                400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
            ) from error
        raise
    return ids.normalize(given_id) or given_id, False


def _values(columns: _Columns, row: list[str]) -> dict[str, Any]:
    """The record's values: empty cells left out, ``#N/A`` as null."""
    values: dict[str, Any] = {}
    for index, key, external, nulled in columns.fields:
        raw = row[index] if index < len(row) else ""
        if raw == "":
            continue
        if raw == NULL:
            values[nulled] = None
        elif external is None:
            values[key] = raw
        else:
            values[key] = {external: raw}
    return values


def _error_text(error: ApiError) -> str:
    """``CODE:message:Field1,Field2 --`` as Salesforce writes sf__Error."""
    return f"{error.error_code}:{error.message}:{','.join(error.fields)} --"
