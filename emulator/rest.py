"""The REST API's record, describe, collections and limits resources.

Every route here sits behind ``auth.api_middleware``: the caller is
authenticated and counted, and an ``ApiError`` raised anywhere becomes
Salesforce's JSON error list. Query routes live in ``query.py``, Bulk in
``bulk.py``.

sObject collections (``/composite/sobjects``) run in one org transaction.
With ``allOrNone`` false each record runs in a savepoint, so a bad record
is reported in its own result and the others commit; with ``allOrNone``
true one bad record rolls all back and every other result says
ALL_OR_NONE_OPERATION_ROLLED_BACK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from forcelink.emulator import describe
from forcelink.emulator.auth import ORG_KEY, context_of
from forcelink.emulator.errors import ApiError, not_found
from forcelink.emulator.ids import normalize
from forcelink.emulator.org import CallContext, Org

VERSIONS = [f"{major}.0" for major in range(31, 63)]
COLLECTION_LIMIT = 200
_V = "/services/data/v{version}"


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/services/data", versions)
    router.add_get("/services/data/", versions)
    router.add_get(_V + "/", resources)
    router.add_get(_V, resources)
    router.add_get(_V + "/limits", limits)
    router.add_get(_V + "/limits/", limits)
    router.add_get(_V + "/sobjects", global_describe)
    router.add_get(_V + "/sobjects/", global_describe)
    router.add_post(_V + "/composite/sobjects", collection_create)
    router.add_patch(_V + "/composite/sobjects", collection_update)
    router.add_delete(_V + "/composite/sobjects", collection_delete)
    router.add_get(_V + "/composite/sobjects/{sobject}", collection_retrieve)
    router.add_patch(_V + "/composite/sobjects/{sobject}/{field}", collection_upsert)
    router.add_get(_V + "/sobjects/{sobject}", object_info)
    router.add_get(_V + "/sobjects/{sobject}/", object_info)
    router.add_post(_V + "/sobjects/{sobject}", create)
    router.add_post(_V + "/sobjects/{sobject}/", create)
    router.add_get(_V + "/sobjects/{sobject}/describe", object_describe)
    router.add_get(_V + "/sobjects/{sobject}/describe/", object_describe)
    router.add_get(_V + "/sobjects/{sobject}/{id}", read)
    router.add_patch(_V + "/sobjects/{sobject}/{id}", update)
    router.add_delete(_V + "/sobjects/{sobject}/{id}", delete)
    router.add_get(_V + "/sobjects/{sobject}/{field}/{value}", read_by_external_id)
    router.add_patch(_V + "/sobjects/{sobject}/{field}/{value}", upsert)
    router.add_post(_V + "/sobjects/{sobject}/{field}/{value}", upsert)
    router.add_delete(_V + "/sobjects/{sobject}/{field}/{value}", delete_by_external_id)


def _org(request: web.Request) -> Org:
    org = request.app[ORG_KEY]
    version = request.match_info.get("version")
    if version is not None and version not in VERSIONS:
        raise not_found()
    return org


def record_json(
    org: Org, sobject: str, record: dict[str, Any], version: str
) -> dict[str, Any]:
    """A record as REST returns it: ``attributes`` first, then the fields."""
    name = org.table(sobject).obj.name
    url = f"/services/data/v{version}/sobjects/{name}/{record['Id']}"
    return {"attributes": {"type": name, "url": url}, **record}


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as error:
        raise ApiError(
            400, "JSON_PARSER_ERROR", f"The request body is not JSON: {error}"
        ) from error


async def _fields(request: web.Request) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "JSON_PARSER_ERROR",
            "Cannot deserialize instance of an sObject from a non-object value",
        )
    return {k: v for k, v in body.items() if k != "attributes"}


# -- discovery --------------------------------------------------------


async def versions(request: web.Request) -> web.Response:
    return web.json_response(
        [
            {"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
            for v in VERSIONS
        ]
    )


async def resources(request: web.Request) -> web.Response:
    _org(request)
    base = f"/services/data/v{request.match_info['version']}"
    names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
    return web.json_response({name: f"{base}/{name}" for name in names})


async def limits(request: web.Request) -> web.Response:
    org = _org(request)
    usage = org.usage.snapshot()
    maximum, used = int(str(usage["daily_limit"])), int(str(usage["api_usage"]))
    return web.json_response(
        {
            "DailyApiRequests": {"Max": maximum, "Remaining": max(maximum - used, 0)},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyStreamingApiEvents": {"Max": 1000000, "Remaining": 1000000},
            "DailyDeliveredPlatformEvents": {"Max": 50000, "Remaining": 50000},
        }
    )


async def global_describe(request: web.Request) -> web.Response:
    org = _org(request)
    version = request.match_info["version"]
    return web.json_response(describe.global_describe(org.schema, version))


async def object_info(request: web.Request) -> web.Response:
    org = _org(request)
    obj = org.table(request.match_info["sobject"]).obj
    version = request.match_info["version"]
    summary = describe.global_describe(org.schema, version)["sobjects"]
    info = next(s for s in summary if s["name"] == obj.name)
    return web.json_response({"objectDescribe": info, "recentItems": []})


async def object_describe(request: web.Request) -> web.Response:
    org = _org(request)
    obj = org.table(request.match_info["sobject"]).obj
    return web.json_response(
        describe.describe(org.schema, obj, request.match_info["version"])
    )


# -- single records ---------------------------------------------------


async def create(request: web.Request) -> web.Response:
    org = _org(request)
    values = await _fields(request)
    record_id = org.create(request.match_info["sobject"], values, context_of(request))
    return web.json_response(
        {"id": record_id, "success": True, "errors": []}, status=201
    )


async def read(request: web.Request) -> web.Response:
    org = _org(request)
    sobject, record_id = request.match_info["sobject"], request.match_info["id"]
    record = org.get(sobject, record_id)
    if record is None:
        raise not_found()
    selected = request.query.get("fields")
    if selected:
        record = _select(org, sobject, record, selected)
    version = request.match_info["version"]
    return web.json_response(record_json(org, sobject, record, version))


def _select(
    org: Org, sobject: str, record: dict[str, Any], fields: str
) -> dict[str, Any]:
    obj = org.table(sobject).obj
    chosen = {"Id": record["Id"]}
    for name in fields.split(","):
        definition = obj.find(name.strip())
        if definition is None:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"No such column '{name.strip()}' on entity '{obj.name}'. If you are "
                "attempting to use a custom field, be sure to append the '__c' after "
                "the custom field name. Please reference your WSDL or the describe "
                "call for the appropriate names.",
            )
        chosen[definition.name] = record[definition.name]
    return chosen


async def update(request: web.Request) -> web.Response:
    org = _org(request)
    values = await _fields(request)
    values.pop("Id", None)
    org.update(
        request.match_info["sobject"],
        request.match_info["id"],
        values,
        context_of(request),
    )
    return web.Response(status=204)


async def delete(request: web.Request) -> web.Response:
    org = _org(request)
    org.delete(
        request.match_info["sobject"], request.match_info["id"], context_of(request)
    )
    return web.Response(status=204)


def _by_external_id(request: web.Request, org: Org) -> str:
    sobject, name = request.match_info["sobject"], request.match_info["field"]
    definition = org.table(sobject).obj.find(name)
    if definition is None or not (definition.external_id or definition.name == "Id"):
        raise ApiError(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {name}",
        )
    value = request.match_info["value"]
    if definition.name == "Id":
        record = org.get(sobject, value)
        matches = [str(record["Id"])] if record is not None else []
    else:
        matches = org.table(sobject).lookup(definition.name, value)
    if not matches:
        raise not_found()
    if len(matches) > 1:
        raise ApiError(
            300, "MULTIPLE_CHOICES", f"More than one record: {', '.join(matches)}"
        )
    return matches[0]


async def read_by_external_id(request: web.Request) -> web.Response:
    org = _org(request)
    record_id = _by_external_id(request, org)
    sobject = request.match_info["sobject"]
    record = org.get(sobject, record_id)
    if record is None:
        raise not_found()
    version = request.match_info["version"]
    return web.json_response(record_json(org, sobject, record, version))


async def delete_by_external_id(request: web.Request) -> web.Response:
    org = _org(request)
    record_id = _by_external_id(request, org)
    org.delete(request.match_info["sobject"], record_id, context_of(request))
    return web.Response(status=204)


async def upsert(request: web.Request) -> web.Response:
    org = _org(request)
    values = await _fields(request)
    record_id, created = org.upsert(
        request.match_info["sobject"],
        request.match_info["field"],
        request.match_info["value"],
        values,
        context_of(request),
    )
    body = {"id": record_id, "success": True, "errors": [], "created": created}
    return web.json_response(body, status=201 if created else 200)


# -- sObject collections ----------------------------------------------

Operation = Callable[[], dict[str, Any]]


class _RolledBack(Exception):
    pass


def run_collection(
    org: Org, ctx: CallContext, operations: list[Operation], all_or_none: bool
) -> list[dict[str, Any]]:
    """Run each operation, collecting per-record results (see module doc)."""
    results: list[dict[str, Any]] = []
    try:
        with org.transaction(ctx):
            for operation in operations:
                try:
                    with org.savepoint():
                        results.append(operation())
                except ApiError as error:
                    results.append(
                        {"success": False, "errors": [error.as_record_error()]}
                    )
            if all_or_none and not all(r["success"] for r in results):
                raise _RolledBack
    except _RolledBack:
        return [_rolled_back(result) for result in results]
    return results


def _rolled_back(result: dict[str, Any]) -> dict[str, Any]:
    if not result["success"]:
        return result
    error = ApiError(
        400,
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request "
        "was using AllOrNone header",
    )
    return {"id": None, "success": False, "errors": [error.as_record_error()]}


async def _collection(request: web.Request) -> tuple[list[dict[str, Any]], bool]:
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected an object with 'records'")
    records = body["records"]
    _check_size(len(records))
    if not all(isinstance(r, dict) for r in records):
        raise ApiError(400, "JSON_PARSER_ERROR", "Each record must be an object")
    return records, bool(body.get("allOrNone", False))


def _check_size(count: int) -> None:
    if count > COLLECTION_LIMIT:
        raise ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )


def _type_of(record: dict[str, Any]) -> str:
    attributes = record.get("attributes")
    kind = attributes.get("type") if isinstance(attributes, dict) else None
    if not isinstance(kind, str) or not kind:
        raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
    return kind


def _values(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}


def _record_id(record: dict[str, Any]) -> Any:
    """The record's id: field names are case-insensitive (``Id`` or ``id``)."""
    return next((v for k, v in record.items() if k.lower() == "id"), None)


async def collection_create(request: web.Request) -> web.Response:
    org = _org(request)
    records, all_or_none = await _collection(request)
    ctx = context_of(request)

    def one(record: dict[str, Any]) -> Operation:
        def run() -> dict[str, Any]:
            if _record_id(record):
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    "cannot specify Id in an insert call",
                    ["Id"],
                )
            record_id = org.create(_type_of(record), _values(record), ctx)
            return {"id": record_id, "success": True, "errors": []}

        return run

    results = run_collection(org, ctx, [one(r) for r in records], all_or_none)
    return web.json_response(results)


async def collection_update(request: web.Request) -> web.Response:
    org = _org(request)
    records, all_or_none = await _collection(request)
    ctx = context_of(request)

    def one(record: dict[str, Any]) -> Operation:
        def run() -> dict[str, Any]:
            record_id = _record_id(record)
            if not isinstance(record_id, str) or normalize(record_id) is None:
                raise ApiError(
                    400, "MALFORMED_ID", f"Id: invalid id: {record_id}", ["Id"]
                )
            org.update(_type_of(record), record_id, _values(record), ctx)
            return {"id": normalize(record_id), "success": True, "errors": []}

        return run

    results = run_collection(org, ctx, [one(r) for r in records], all_or_none)
    return web.json_response(results)


async def collection_upsert(request: web.Request) -> web.Response:
    org = _org(request)
    records, all_or_none = await _collection(request)
    ctx = context_of(request)
    sobject, field = request.match_info["sobject"], request.match_info["field"]
    org.table(sobject)

    def one(record: dict[str, Any]) -> Operation:
        def run() -> dict[str, Any]:
            if _type_of(record).lower() != sobject.lower():
                raise ApiError(
                    400, "INVALID_TYPE", "Records must be of the type in the URL."
                )
            key = next((k for k in record if k.lower() == field.lower()), None)
            if key is None:
                raise ApiError(
                    400,
                    "MISSING_ARGUMENT",
                    f"{field} not specified",
                    [field],
                )
            values = {k: v for k, v in record.items() if k != "attributes"}
            record_id, created = org.upsert(sobject, field, values[key], values, ctx)
            return {
                "id": record_id,
                "success": True,
                "errors": [],
                "created": created,
            }

        return run

    results = run_collection(org, ctx, [one(r) for r in records], all_or_none)
    return web.json_response(results)


async def collection_delete(request: web.Request) -> web.Response:
    org = _org(request)
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    _check_size(len(ids))
    all_or_none = request.query.get("allOrNone", "false").lower() == "true"
    ctx = context_of(request)

    def one(record_id: str) -> Operation:
        def run() -> dict[str, Any]:
            obj = org.object_of(record_id)
            if obj is None:
                raise ApiError(400, "MALFORMED_ID", f"malformed id {record_id}")
            org.delete(obj.name, record_id, ctx)
            return {"id": normalize(record_id), "success": True, "errors": []}

        return run

    results = run_collection(org, ctx, [one(i) for i in ids], all_or_none)
    for record_id, result in zip(ids, results, strict=True):
        result.setdefault("id", normalize(record_id) or record_id)
    return web.json_response(results)


async def collection_retrieve(request: web.Request) -> web.Response:
    org = _org(request)
    sobject = request.match_info["sobject"]
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    fields = request.query.get("fields", "")
    if not fields:
        raise ApiError(400, "MISSING_ARGUMENT", "fields not specified")
    _check_size(len(ids))
    version = request.match_info["version"]
    answer: list[dict[str, Any] | None] = []
    for record_id in ids:
        record = org.get(sobject, record_id)
        answer.append(
            None
            if record is None
            else record_json(
                org, sobject, _select(org, sobject, record, fields), version
            )
        )
    return web.json_response(answer)
