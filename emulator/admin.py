"""The admin API under ``/_emulator/``: seeding, time, tokens and misbehaviour.

It is not part of the Salesforce surface: no token needed, never counted in
the API usage. Every route takes and returns JSON; a bad request gets 400
``{"error": "..."}``. ``emulator/README.md`` documents each route.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from aiohttp import web

from forcelink.emulator.auth import ORG_KEY
from forcelink.emulator.clock import format_datetime
from forcelink.emulator.errors import ApiError
from forcelink.emulator.org import CallContext, Org

log = logging.getLogger("forcelink.emulator.admin")

SAVE_KEY = web.AppKey("forcelink.emulator.save", object)
"""Set by the server when it persists state: a callable saving it now."""


class _BadRequest(Exception):
    pass


def add_routes(app: web.Application) -> None:
    routes = {
        "reset": reset,
        "records": seed,
        "events": publish,
        "clock": clock,
        "tokens": tokens,
        "tokens/revoke": revoke,
        "clients/forget": forget_clients,
        "faults": faults,
        "limits": limits,
        "undelete": undelete,
        "save": save,
    }
    for path, handler in routes.items():
        app.router.add_post(f"/_emulator/{path}", _guarded(handler))
    app.router.add_get("/_emulator/stats", _guarded(stats))


def _guarded(handler: Any) -> Any:
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            result: web.StreamResponse = await handler(request)
            return result
        except _BadRequest as error:
            return web.json_response({"error": str(error)}, status=400)
        except ApiError as error:
            body = {"error": error.message, "errors": error.body()}
            return web.json_response(body, status=400)

    return run


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as error:
        raise _BadRequest(f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadRequest(f"'{key}' must be a number")
    return float(value)


def _admin_context(org: Org) -> CallContext:
    user_id = next(iter(org.users.values()), "005000000000000AAA")
    return CallContext(user_id, "emulator-admin", "rest", org.api_version)


async def reset(request: web.Request) -> web.Response:
    """Forget records, events, usage, faults; users, apps and tokens stay."""
    org = request.app[ORG_KEY]
    org.clear()
    org.usage.reset()
    org.usage.set_limit(org.default_daily_limit)
    org.faults.clear()
    log.info("org reset")
    return web.json_response({"reset": True})


async def seed(request: web.Request) -> web.Response:
    """Create many records in one transaction, optionally without events."""
    org = request.app[ORG_KEY]
    body = await _json(request)
    records = body.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _BadRequest("'records' must be a list of objects")
    sobject = body.get("sobject")
    emit = bool(body.get("events", True))
    ctx = _admin_context(org)

    def run() -> list[str]:
        ids = []
        with org.transaction(ctx, emit=emit):
            for index, record in enumerate(records):
                kind = sobject or (record.get("attributes") or {}).get("type")
                values = {k: v for k, v in record.items() if k != "attributes"}
                try:
                    ids.append(org.create(str(kind), values, ctx))
                except ApiError as error:
                    raise _BadRequest(
                        f"record {index}: {error.error_code}: {error.message}"
                    ) from error
        return ids

    ids = await asyncio.to_thread(run)
    answer: dict[str, Any] = {"count": len(ids)}
    if body.get("return_ids", True):
        answer["ids"] = ids
    return web.json_response(answer)


async def publish(request: web.Request) -> web.Response:
    """Append raw change events (``payload`` objects) to the journal."""
    org = request.app[ORG_KEY]
    body = await _json(request)
    payloads = [body["payload"]] if "payload" in body else body.get("payloads", [])
    replay_ids = []
    for payload in payloads:
        header = payload.get("ChangeEventHeader") if isinstance(payload, dict) else None
        if not isinstance(header, dict) or not header.get("entityName"):
            raise _BadRequest("each payload needs ChangeEventHeader.entityName")
        if not header.get("changeType"):
            raise _BadRequest("each payload needs ChangeEventHeader.changeType")
        replay_ids.append(org.journal.append(str(header["entityName"]), payload))
    return web.json_response({"replayIds": replay_ids})


async def clock(request: web.Request) -> web.Response:
    org = request.app[ORG_KEY]
    seconds = _number(await _json(request), "seconds", 0)
    try:
        now = org.clock.advance(seconds)
    except ValueError as error:
        raise _BadRequest(str(error)) from error
    return web.json_response({"now": format_datetime(now)})


async def tokens(request: web.Request) -> web.Response:
    """Set how long new tokens live (``lifetime_seconds``)."""
    org = request.app[ORG_KEY]
    lifetime = _number(await _json(request), "lifetime_seconds")
    org.sessions.lifetime_seconds = lifetime
    return web.json_response({"lifetime_seconds": lifetime})


async def revoke(request: web.Request) -> web.Response:
    """Revoke ``token`` if given, else every token."""
    org = request.app[ORG_KEY]
    token = (await _json(request)).get("token")
    count = org.sessions.revoke(str(token) if token else None)
    return web.json_response({"revoked": count})


async def forget_clients(request: web.Request) -> web.Response:
    try:
        cometd = importlib.import_module("forcelink.emulator.cometd")
    except ModuleNotFoundError:
        return web.json_response({"forgotten": 0})
    count = int(cometd.forget_clients(request.app))
    return web.json_response({"forgotten": count})


async def faults(request: web.Request) -> web.Response:
    org = request.app[ORG_KEY]
    body = await _json(request)
    try:
        org.faults.arm(
            str(body.get("kind", "any")),
            str(body.get("fault", "")),
            int(_number(body, "count", 1)),
        )
    except ValueError as error:
        raise _BadRequest(str(error)) from error
    return web.json_response({"armed": True})


async def limits(request: web.Request) -> web.Response:
    org = request.app[ORG_KEY]
    body = await _json(request)
    daily = int(_number(body, "daily"))
    used = int(_number(body, "used")) if "used" in body else None
    org.usage.set_limit(daily, used)
    return web.json_response(org.usage.snapshot())


async def stats(request: web.Request) -> web.Response:
    org = request.app[ORG_KEY]
    snapshot = org.usage.snapshot()
    snapshot["records"] = {name: org.count(name) for name in org.schema.objects}
    snapshot["latest_replay_id"] = org.journal.latest()
    return web.json_response(snapshot)


async def undelete(request: web.Request) -> web.Response:
    org = request.app[ORG_KEY]
    body = await _json(request)
    record_id = str(body.get("id", ""))
    obj = org.object_of(record_id)
    if obj is None:
        raise _BadRequest(f"not a record id of this org: {record_id!r}")
    org.undelete(obj.name, record_id, _admin_context(org))
    return web.json_response({"id": record_id, "undeleted": True})


async def save(request: web.Request) -> web.Response:
    saver = request.app.get(SAVE_KEY)
    if not callable(saver):
        raise _BadRequest("the emulator runs without --state: nothing to save to")
    await asyncio.to_thread(saver)
    return web.json_response({"saved": True})
