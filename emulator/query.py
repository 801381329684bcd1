"""REST query: ``GET /services/data/vXX.X/query?q=`` and ``/queryAll?q=``.

A query runs once, when it is asked; its matching rows (a snapshot: the org
never changes a stored row in place) are kept under a cursor and served in
pages of at most 2,000 records. A page that is not the last carries
``nextRecordsUrl``, which names the cursor and the offset of the next page::

    GET  /services/data/v60.0/query?q=SELECT+Id+FROM+Account   (4,500 rows)
      -> totalSize 4500, done false, 2,000 records,
         nextRecordsUrl /services/data/v60.0/query/01g000000000001AAA-2000
    GET  /services/data/v60.0/query/01g000000000001AAA-2000
      -> 2,000 records, nextRecordsUrl .../01g000000000001AAA-4000
    GET  /services/data/v60.0/query/01g000000000001AAA-4000
      -> 500 records, done true, no nextRecordsUrl

Parent fields are read when a page is built. A cursor is forgotten when its
last page is served or after ``CURSOR_IDLE_SECONDS`` of the org's clock
without use, as Salesforce's expire after 15 minutes; asking for it then
answers ``INVALID_QUERY_LOCATOR``. ``Sforce-Query-Options: batchSize=N``
(200..2000) asks for smaller pages.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from forcelink.emulator import soql
from forcelink.emulator.errors import ApiError, not_found
from forcelink.emulator.ids import IdFactory
from forcelink.emulator.org import Org
from forcelink.emulator.rest import VERSIONS

log = logging.getLogger("forcelink.emulator.query")

PAGE_SIZE = 2000
CURSOR_IDLE_SECONDS = 15 * 60
MAX_CURSORS = 200
"""Open cursors kept per org; the least recently used goes first."""

VERSION = r"{version:\d+\.\d+}"
_LOCATOR = re.compile(r"^(01g[0-9A-Za-z]{12,15})-(\d+)$")


@dataclass
class Cursor:
    plan: soql.Plan
    rows: list[soql.Record]
    page_size: int
    used: datetime


class Cursors:
    """The open query cursors of one org, by id."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self.ids = IdFactory()
        self.open: OrderedDict[str, Cursor] = OrderedDict()

    def add(self, cursor: Cursor) -> str:
        self._expire()
        cursor_id = self.ids.new("01g")
        self.open[cursor_id] = cursor
        while len(self.open) > MAX_CURSORS:
            self.open.popitem(last=False)
        return cursor_id

    def take(self, cursor_id: str) -> Cursor:
        self._expire()
        cursor = self.open.get(cursor_id)
        if cursor is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.used = self.org.clock.now()
        self.open.move_to_end(cursor_id)
        return cursor

    def close(self, cursor_id: str) -> None:
        self.open.pop(cursor_id, None)

    def _expire(self) -> None:
        oldest = self.org.clock.now() - timedelta(seconds=CURSOR_IDLE_SECONDS)
        for cursor_id in [k for k, c in self.open.items() if c.used < oldest]:
            del self.open[cursor_id]


def add_routes(app: web.Application, org: Org) -> None:
    """Serve query, queryAll and their next pages for ``org``."""
    cursors = Cursors(org)

    async def query(request: web.Request) -> web.Response:
        return _first_page(request, org, cursors, include_deleted=False)

    async def query_all(request: web.Request) -> web.Response:
        return _first_page(request, org, cursors, include_deleted=True)

    async def more(request: web.Request) -> web.Response:
        return _next_page(request, cursors)

    base = f"/services/data/v{VERSION}"
    for path in ("query", "queryAll"):
        handler = query if path == "query" else query_all
        app.router.add_get(f"{base}/{path}", handler)
        app.router.add_get(f"{base}/{path}/", handler)
        app.router.add_get(f"{base}/{path}/{{locator}}", more)


def _first_page(
    request: web.Request, org: Org, cursors: Cursors, include_deleted: bool
) -> web.Response:
    _check_version(request)
    text = request.query.get("q", "")
    if not text.strip():
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    version = request.match_info["version"]
    plan = soql.plan(soql.parse(text), org, include_deleted, version)
    rows = plan.run()
    log.debug("query on %s matched %d rows", plan.sobject.name, len(rows))
    if plan.query.count:
        return web.json_response({"totalSize": len(rows), "done": True, "records": []})

    cursor = Cursor(plan, rows, _page_size(request), org.clock.now())
    cursor_id = cursors.add(cursor) if len(rows) > cursor.page_size else ""
    return _page(request, cursors, cursor, cursor_id, 0)


def _next_page(request: web.Request, cursors: Cursors) -> web.Response:
    _check_version(request)
    match = _LOCATOR.match(request.match_info["locator"])
    if match is None:
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    cursor_id, start = match.group(1), int(match.group(2))
    cursor = cursors.take(cursor_id)
    if start >= len(cursor.rows):
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(request, cursors, cursor, cursor_id, start)


def _page(
    request: web.Request, cursors: Cursors, cursor: Cursor, cursor_id: str, start: int
) -> web.Response:
    stop = min(start + cursor.page_size, len(cursor.rows))
    body: dict[str, Any] = {
        "totalSize": len(cursor.rows),
        "done": stop >= len(cursor.rows),
    }
    if body["done"]:
        cursors.close(cursor_id)
    else:
        version = request.match_info["version"]
        body["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor_id}-{stop}"
    make = cursor.plan.rest
    body["records"] = [make(row) for row in cursor.rows[start:stop]]
    return web.json_response(body)


def _check_version(request: web.Request) -> None:
    if request.match_info["version"] not in VERSIONS:
        raise not_found()


def _page_size(request: web.Request) -> int:
    """``Sforce-Query-Options: batchSize=N``, held to Salesforce's 200..2000."""
    for option in request.headers.get("Sforce-Query-Options", "").split(","):
        key, _, value = option.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return max(200, min(PAGE_SIZE, int(value)))
    return PAGE_SIZE
