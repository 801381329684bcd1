"""Writing records to a Salesforce org: sObject collections and Bulk API 2.0.

``SalesforceWriter`` makes the calls and nothing else: what to write, in
which order, and what to do with each record's outcome is the caller's
(``processors/pg_to_sf.py``). Every call goes through a simple-salesforce
client from ``connector.salesforce.auth.salesforce_client``, so it carries
``Sforce-Call-Options: client=<tag>`` (the read side drops change events
with that tag: invariant 3) and trusts only the org's CA.

Two ways to write:

* ``collection(sobject, operation, records)`` -- one sObject collections
  call, at most 200 records, ``allOrNone`` false: each record succeeds or
  fails alone and the answer lists one result per record, in input order.
  Operations: ``create`` (POST), ``update`` (PATCH, records carry ``Id``),
  ``upsert`` (PATCH ``/composite/sobjects/<object>/<external id field>``),
  ``delete`` (DELETE ``?ids=``).
* ``bulk(sobject, operation, rows)`` -- one Bulk API 2.0 ingest job (CSV,
  rows in Bulk's string form): create, upload, close, poll until done, then
  read the successful and failed results. About six to ten calls whatever
  the size, against one per 200 records for collections. Results come back
  unordered, so they are matched to the input by ``Id`` (update, delete) or
  by the external id (upsert); ``create`` is not offered in bulk for that
  reason (a created row has no key to match it by).

Errors, translated here into forcelink's tree (``raise ... from``)::

    connection refused, reset, timeout       SourceUnavailable  (transient)
    HTTP 401 INVALID_SESSION_ID              SessionExpired     (log in again)
    HTTP 503, 403 REQUEST_LIMIT_EXCEEDED,
      UNABLE_TO_LOCK_ROW for the whole call  RateLimited        (transient)
    other HTTP 5xx                           SourceUnavailable  (transient)
    other HTTP 4xx, a failed bulk job        CallRejected       (terminal,
                                               every record of the call)

A transient error is retried here with backoff (``retry_delays``); an
expired session is renewed at once with the ``login`` callable. When the
retries run out the transient error is raised. A record-level error is not
an exception: it is in that record's ``RecordResult`` (``transient`` when
Salesforce said UNABLE_TO_LOCK_ROW for that record alone).

Retrying a ``create`` after a timeout can create a record twice (the first
attempt may have been applied); callers create by ``upsert`` on an external
id whenever the mapping has one, which makes every retry safe.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from simple_salesforce.api import Salesforce

from forcelink.config import OrgConfig
from forcelink.errors import (
    RateLimited,
    SessionExpired,
    SourceUnavailable,
    TerminalError,
    TransientError,
)
from forcelink.mapping import types
from forcelink.metrics import METRICS, Metrics

log = logging.getLogger("forcelink.connector.salesforce.writer")

Operation = Literal["create", "update", "upsert", "delete"]

COLLECTION_SIZE = 200
"""Records per sObject collections call: Salesforce's limit."""

TRANSIENT_RECORD_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
"""A record that failed with these alone is worth sending again."""

GONE_CODES = frozenset(
    {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"}
)
"""Deleting a record that is already gone: the delete is done."""

_BULK_OPERATIONS: dict[str, str] = {
    "update": "update",
    "upsert": "upsert",
    "delete": "delete",
}
_BULK_DONE = ("JobComplete", "Failed", "Aborted")


class CallRejected(TerminalError):
    """Salesforce refused a whole call (bad request): every record in it fails.

    ``errors`` holds Salesforce's JSON error list.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]], **context: Any):
        self.errors = errors
        super().__init__(message, **context)


@dataclass(frozen=True)
class RecordResult:
    """One record's outcome, in Salesforce's terms."""

    ok: bool
    id: str | None = None
    created: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def codes(self) -> set[str]:
        return {str(e.get("statusCode") or e.get("errorCode")) for e in self.errors}

    @property
    def transient(self) -> bool:
        """Failed only because the record was locked: send it again later."""
        return (
            not self.ok and bool(self.errors) and self.codes <= TRANSIENT_RECORD_CODES
        )

    @property
    def gone(self) -> bool:
        """Failed because the record does not exist (or no longer)."""
        return not self.ok and bool(self.codes & GONE_CODES)


@dataclass
class WriterStats:
    calls: dict[str, int] = field(default_factory=lambda: {"collections": 0, "bulk": 0})
    retries: int = 0
    logins: int = 0


class SalesforceWriter:
    """Writes to one org; thread-compatible (one call at a time), not async.

    ``login`` returns a fresh simple-salesforce client (it is called once
    at the first call and again whenever the session expires).
    """

    def __init__(
        self,
        org: str,
        login: Callable[[], Salesforce],
        *,
        timeout: float = 120.0,
        retry_delays: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        bulk_poll_interval: float = 0.1,
        bulk_timeout: float = 600.0,
        metrics: Metrics = METRICS,
    ) -> None:
        self.org = org
        self._login = login
        self._client: Salesforce | None = None
        self.timeout = timeout
        self.retry_delays = tuple(retry_delays)
        self.bulk_poll_interval = bulk_poll_interval
        self.bulk_timeout = bulk_timeout
        self.metrics = metrics
        self.stats = WriterStats()

    @classmethod
    def for_org(cls, org: OrgConfig, **options: Any) -> SalesforceWriter:
        """A writer logging in with ``org``'s settings (JWT bearer flow)."""
        from forcelink.connector.salesforce.auth import (
            OrgConnection,
            fetch_token,
            salesforce_client,
        )

        connection = OrgConnection.from_config(org)

        def login() -> Salesforce:
            token = fetch_token(connection)
            return salesforce_client(connection, token, client_tag=org.client_tag)

        return cls(org.name, login, **options)

    # ------------------------------------------------------------ collections

    def collection(
        self,
        sobject: str,
        operation: Operation,
        records: Sequence[dict[str, Any]],
        external_id: str | None = None,
    ) -> list[RecordResult]:
        """One collections call for at most 200 records; results in input order.

        ``update`` records carry ``Id``; ``delete`` records are ``{"Id": ...}``;
        ``upsert`` records carry ``external_id``'s value.
        """
        if not records:
            return []
        if len(records) > COLLECTION_SIZE:
            raise ValueError(f"at most {COLLECTION_SIZE} records per collection call")
        method, path, body = _collection_request(
            sobject, operation, records, external_id
        )
        answer = self._call("collections", method, path, body=body, sobject=sobject)
        if not isinstance(answer, list) or len(answer) != len(records):
            raise CallRejected(
                "collections answer does not list one result per record",
                [],
                org=self.org,
                object=sobject,
            )
        return [_record_result(item) for item in answer]

    # ------------------------------------------------------------------- bulk

    def bulk(
        self,
        sobject: str,
        operation: Operation,
        rows: Sequence[dict[str, str]],
        external_id: str | None = None,
    ) -> list[RecordResult]:
        """One Bulk API 2.0 ingest job; results in input order (see module doc).

        ``rows`` are in Bulk's CSV form (``Mapping.to_salesforce(row, "csv")``
        plus ``Id`` for update and delete). A cell missing from a row is
        sent empty, which Bulk reads as "leave the field as it is".
        """
        if operation not in _BULK_OPERATIONS:
            raise ValueError(f"bulk writes do not {operation}: use collections")
        if not rows:
            return []
        key = external_id if operation == "upsert" else "Id"
        assert key is not None, "upsert needs the external id field"
        job = self._bulk_open(sobject, operation, external_id)
        path = f"jobs/ingest/{job}"
        self._call(
            "bulk", "PUT", f"{path}/batches", csv_body=_csv(rows), sobject=sobject
        )
        self._call("bulk", "PATCH", path, body={"state": "UploadComplete"})
        info = self._bulk_wait(path, sobject)
        if info.get("state") != "JobComplete":
            message = str(info.get("errorMessage") or info.get("state"))
            raise CallRejected(
                f"bulk job {job} ended {info.get('state')}: {message}",
                [{"statusCode": "BULK_JOB_FAILED", "message": message}],
                org=self.org,
                object=sobject,
            )
        return self._bulk_results(path, rows, key, sobject)

    def _bulk_open(
        self, sobject: str, operation: Operation, external_id: str | None
    ) -> str:
        body: dict[str, Any] = {
            "object": sobject,
            "operation": _BULK_OPERATIONS[operation],
            "contentType": "CSV",
            "lineEnding": "LF",
        }
        if operation == "upsert":
            body["externalIdFieldName"] = external_id
        info = self._call("bulk", "POST", "jobs/ingest", body=body, sobject=sobject)
        return str(info["id"])

    def _bulk_wait(self, path: str, sobject: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.bulk_timeout
        delay = self.bulk_poll_interval
        while True:
            info: dict[str, Any] = self._call("bulk", "GET", path, sobject=sobject)
            if info.get("state") in _BULK_DONE:
                return info
            if time.monotonic() > deadline:
                raise SourceUnavailable(
                    f"bulk job still {info.get('state')} after {self.bulk_timeout}s",
                    org=self.org,
                    object=sobject,
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _bulk_results(
        self, path: str, rows: Sequence[dict[str, str]], key: str, sobject: str
    ) -> list[RecordResult]:
        """Match result rows back to input rows by ``key`` (Id or external id)."""
        positions: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            positions.setdefault(row.get(key, "").lower(), []).append(index)
        results: list[RecordResult | None] = [None] * len(rows)
        for kind in ("successfulResults", "failedResults"):
            text = self._call("bulk", "GET", f"{path}/{kind}", sobject=sobject)
            for line in csv.DictReader(io.StringIO(str(text))):
                outcome = _bulk_outcome(line)
                for index in positions.get(line.get(key, "").lower(), []):
                    results[index] = outcome
        missing = RecordResult(
            False,
            errors=[{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "not processed"}],
        )
        # A row Salesforce never reported on is sent again (as if locked).
        return [r if r is not None else missing for r in results]

    # ------------------------------------------------------------------ calls

    def _call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        csv_body: str | None = None,
        sobject: str | None = None,
    ) -> Any:
        """One API call with retries (module doc); the decoded answer."""
        attempt = 0
        renewed = False
        while True:
            try:
                return self._call_once(kind, method, path, body, csv_body, sobject)
            except SessionExpired:
                if renewed:
                    raise  # a fresh session refused at once: not a timing issue
                renewed, self._client = True, None
                log.info("session expired; logging in again to %s", self.org)
                continue
            except TransientError as error:
                if attempt >= len(self.retry_delays):
                    raise
                delay = self.retry_delays[attempt]
                log.info("%s %s: %s; retrying in %.2fs", method, path, error, delay)
                time.sleep(delay)
            attempt += 1
            self.stats.retries += 1

    def _call_once(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any,
        csv_body: str | None,
        sobject: str | None,
    ) -> Any:
        client = self._session_client()
        headers = dict(client.headers)
        data: str | None = None
        if csv_body is not None:
            headers["Content-Type"] = "text/csv"
            data = csv_body
        elif body is not None:
            headers["Content-Type"] = "application/json"
            data = types.dumps(body)
        url = client.base_url + path
        try:
            response = client.session.request(
                method,
                url,
                headers=headers,
                data=None if data is None else data.encode("utf-8"),
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise SourceUnavailable(
                f"cannot reach the org: {type(error).__name__}",
                org=self.org,
                object=sobject,
            ) from error
        self._count(kind, response)
        return self._answer(response, method, path, sobject)

    def _session_client(self) -> Salesforce:
        if self._client is None:
            self._client = self._login()
            self.stats.logins += 1
        return self._client

    def _count(self, kind: str, response: requests.Response) -> None:
        self.stats.calls[kind] = self.stats.calls.get(kind, 0) + 1
        self.metrics.api_call(self.org, kind)
        self.metrics.api_usage(self.org, response.headers.get("Sforce-Limit-Info"))

    def _answer(
        self, response: requests.Response, method: str, path: str, sobject: str | None
    ) -> Any:
        status = response.status_code
        if status < 300:
            if not response.content:
                return None
            if "json" in response.headers.get("Content-Type", ""):
                return types.loads(response.content)
            return response.text
        errors = _errors(response)
        code = str(errors[0].get("errorCode") or errors[0].get("statusCode"))
        message = f"{method} {path}: HTTP {status} {code}: {errors[0].get('message')}"
        context = {"org": self.org, "object": sobject}
        if status == 401:
            raise SessionExpired(message, **context)
        if status == 503 or code in ("REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW"):
            raise RateLimited(message, **context)
        if status >= 500:
            raise SourceUnavailable(message, **context)
        raise CallRejected(message, errors, **context)


def _collection_request(
    sobject: str,
    operation: Operation,
    records: Sequence[dict[str, Any]],
    external_id: str | None,
) -> tuple[str, str, Any]:
    """(method, path, body) of one collections call."""
    if operation == "delete":
        ids = ",".join(str(r["Id"]) for r in records)
        return "DELETE", f"composite/sobjects?ids={ids}&allOrNone=false", None
    typed = [{"attributes": {"type": sobject}, **r} for r in records]
    body = {"allOrNone": False, "records": typed}
    if operation == "create":
        return "POST", "composite/sobjects", body
    if operation == "update":
        return "PATCH", "composite/sobjects", body
    if not external_id:
        raise ValueError("upsert needs the external id field")
    return "PATCH", f"composite/sobjects/{sobject}/{external_id}", body


def _record_result(item: Any) -> RecordResult:
    if not isinstance(item, dict):
        return RecordResult(False, errors=[{"statusCode": "UNKNOWN", "message": "?"}])
    errors = [e for e in item.get("errors") or [] if isinstance(e, dict)]
    return RecordResult(
        ok=bool(item.get("success")),
        id=item.get("id"),
        created=bool(item.get("created", False)),
        errors=errors,
    )


def _bulk_outcome(line: dict[str, str]) -> RecordResult:
    """A bulk result row: ``sf__Id, sf__Created`` or ``sf__Id, sf__Error``."""
    if "sf__Error" not in line:
        created = line.get("sf__Created", "").lower() == "true"
        return RecordResult(True, id=line.get("sf__Id") or None, created=created)
    # sf__Error reads "CODE:message:FIELD1,FIELD2 --".
    text = line.get("sf__Error", "")
    code, _, rest = text.partition(":")
    message, _, fields = rest.rstrip(" -").rpartition(":")
    error = {
        "statusCode": code.strip(),
        "message": (message or fields).strip(),
        "fields": [f for f in fields.split(",") if f] if message else [],
    }
    return RecordResult(False, id=line.get("sf__Id") or None, errors=[error])


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    """Salesforce's error list from a failed answer (never empty)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        body = [body]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body
    text = response.text[:200]
    return [{"errorCode": f"HTTP_{response.status_code}", "message": text}]


def _csv(rows: Sequence[dict[str, str]]) -> str:
    """CSV text with the union of the rows' columns (first seen first)."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(name, "") for name in header])
    return out.getvalue()
