"""The image API: FastAPI routes under ``/v1``, each behind a bearer token.

``create_app(config)`` builds the application; ``forcelink.api.server`` runs
it under uvicorn. Every route resolves the caller's org from the token and
passes it to every query, and an image of another org is answered exactly
like a missing one (404), so ids never confirm that something exists.

Routes that touch the store or the database are plain ``def`` functions:
FastAPI runs them in its thread pool, so a slow S3 read never blocks the
event loop. The upload route is ``async`` because it consumes the request
stream itself (see ``uploads.py``), then hands the heavy steps to the pool.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from forcelink.api import errors
from forcelink.api.auth import InvalidToken, KeyRing, Principal, verify_token
from forcelink.api.http import Unsatisfiable, http_date, not_modified, parse_range
from forcelink.api.models import ErrorOut, ImageOut, ImagePage, ImagePatch
from forcelink.api.repository import (
    Changes,
    ImageRecord,
    PhotoTables,
    Repository,
    decode_cursor,
    encode_cursor,
)
from forcelink.api.repository import Query as Search
from forcelink.api.service import ImageService, clean_tags
from forcelink.api.status import router as status_router
from forcelink.api.uploads import receive_upload
from forcelink.config import Config
from forcelink.connector.images import ImageStore, open_store
from forcelink.errors import ConfigError

log = logging.getLogger("forcelink.api")

SMALL_BODY = 512 * 1024
"""Bodies up to this size are read whole and sent in one piece."""

_bearer = HTTPBearer(
    auto_error=False,
    description="An RS256 token from `forcelink token --org ORG --user USER`.",
)

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "record"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "record": {"type": "string", "description": "WorkOrder id"},
                        "tags": {
                            "type": "string",
                            "description": "comma-separated; repeatable",
                        },
                        "description": {"type": "string"},
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 413, 415, 422, 503)
}


class ApiState:
    """What the routes share, kept on ``app.state.api``."""

    def __init__(
        self, config: Config, store: ImageStore, repository: Repository
    ) -> None:
        self.config = config
        self.keys = KeyRing(config.api.keys_dir)
        self.service = ImageService(config, store, repository)
        self.repository = repository
        self.store = store


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # Async on purpose: verifying an RS256 signature takes about a tenth of
    # a millisecond, far less than a hop through the thread pool.
    if credentials is None:
        raise InvalidToken("no bearer token")
    state = _state(request)
    return verify_token(state.keys, state.config.api, credentials.credentials)


Caller = Annotated[Principal, Depends(authenticate)]
router = APIRouter(prefix="/v1", responses=_ERRORS)


def _base_url(request: Request) -> str:
    configured = _state(request).config.api.public_url
    return (configured or str(request.base_url)).rstrip("/")


def _out(request: Request, image: ImageRecord) -> ImageOut:
    return ImageOut.of(image, _base_url(request), _state(request).service.default_size)


def _visible(request: Request, caller: Principal, image_id: str) -> ImageRecord:
    """The caller's image; 404 for a bad id, a missing image or another org's."""
    try:
        canonical = str(uuid.UUID(image_id))
    except ValueError:
        raise errors.ApiError(404, "no such image") from None
    image = _state(request).service.get(caller, canonical)
    if image is None:
        raise errors.ApiError(404, "no such image")
    return image


@router.post(
    "/images", status_code=201, response_model=ImageOut, openapi_extra=UPLOAD_BODY
)
async def upload_image(request: Request, caller: Caller) -> JSONResponse:
    """Upload a photo (multipart: ``file``, ``record``, ``tags``, ``description``)."""
    state = _state(request)
    upload = await receive_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        state.config.images.max_upload_bytes,
    )
    try:
        image = await run_in_threadpool(
            state.service.create, caller, upload, _base_url(request)
        )
    finally:
        upload.discard()
    body = _out(request, image)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=201, headers={"Location": body.url}
    )


@router.get("/images", response_model=ImagePage)
def list_images(
    request: Request,
    caller: Caller,
    record: Annotated[str | None, Query(max_length=255)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[
        str | None, Query(max_length=500, description="full-text search")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ImagePage:
    """Search the caller's images by record, tag and free text, newest first."""
    after = None
    if cursor:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise errors.ApiError(400, "cursor: not one this API returned") from None
    search = Search(record=record, tag=tag, text=q, limit=limit + 1, after=after)
    found = _state(request).service.search(caller, search)
    page = found[:limit]
    next_cursor = (
        encode_cursor(page[-1].created_at, page[-1].id) if len(found) > limit else None
    )
    return ImagePage(
        items=[_out(request, image) for image in page], next_cursor=next_cursor
    )


@router.get(
    "/images/{image_id}",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}},
        206: {},
        304: {},
        307: {},
        416: {"model": ErrorOut},
    },
)
def get_image(image_id: str, request: Request, caller: Caller) -> Response:
    """The original bytes (conditional and Range requests), or a presigned redirect."""
    state = _state(request)
    image = _visible(request, caller, image_id)
    etag = f'"{image.sha256}"'
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(image.created_at),
        "Cache-Control": "private, max-age=3600",
        "Accept-Ranges": "bytes",
    }
    if not_modified(request.headers, etag, image.created_at):
        return Response(status_code=304, headers=headers)
    if state.config.images.presigned_redirect:
        url = state.store.presign(
            image.storage_key,
            state.config.images.presigned_ttl_seconds,
            image.content_type,
        )
        if url:
            return Response(
                status_code=307, headers={"Location": url, "Cache-Control": "no-store"}
            )
    return _bytes_response(request, state, image, headers)


def _bytes_response(
    request: Request, state: ApiState, image: ImageRecord, headers: dict[str, str]
) -> Response:
    size = image.size_bytes
    try:
        span = parse_range(request.headers, size, headers["ETag"], image.created_at)
    except Unsatisfiable:
        raise errors.ApiError(
            416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
        ) from None
    start, end = span or (0, size - 1)
    name = image.filename or image.id
    headers |= {
        "Content-Length": str(end - start + 1),
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}",
    }
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    status = 206 if span else 200
    if end - start + 1 <= SMALL_BODY:
        # One read and one write: cheaper than streaming chunk by chunk
        # through the thread pool, and bounded by SMALL_BODY.
        data = b"".join(state.store.read(image.storage_key, start, end))
        return Response(data, status, headers, media_type=image.content_type)
    body = state.store.read(image.storage_key, start, end)
    return StreamingResponse(
        body,
        status_code=status,
        headers=headers,
        media_type=image.content_type,
    )


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/webp": {}}}, 304: {}},
)
def get_thumbnail(
    image_id: str,
    request: Request,
    caller: Caller,
    w: Annotated[int, Query(description="width, one of images.thumbnail_sizes")],
    h: Annotated[int | None, Query(description="height (default: w)")] = None,
    format: Annotated[Literal["jpeg", "webp"], Query()] = "jpeg",
) -> Response:
    """The image fitted into w x h, upright, watermarked if the org says so."""
    state = _state(request)
    sizes = state.config.images.thumbnail_sizes
    height = w if h is None else h
    if w not in sizes or height not in sizes:
        allowed = ", ".join(str(s) for s in sorted(sizes))
        raise errors.ApiError(
            400, f"w and h must each be one of {allowed}", "unsupported_size"
        )
    image = _visible(request, caller, image_id)
    headers = {
        "ETag": state.service.thumbnail_etag(image, w, height, format),
        "Cache-Control": "private, max-age=86400",
        "X-Content-Type-Options": "nosniff",
    }
    if not_modified(request.headers, headers["ETag"], None):
        return Response(status_code=304, headers=headers)
    derived = state.service.thumbnail(image, w, height, format)
    return Response(derived.data, media_type=derived.content_type, headers=headers)


@router.patch("/images/{image_id}", response_model=ImageOut)
def patch_image(
    image_id: str, patch: ImagePatch, request: Request, caller: Caller
) -> ImageOut:
    """Change tags, description or annotations; fields left out stay."""
    image = _visible(request, caller, image_id)
    changes = Changes(
        tags=None if patch.tags is None else clean_tags(patch.tags),
        description=patch.description,
        annotations=None
        if patch.annotations is None
        else [a.model_dump(mode="json") for a in patch.annotations],
        annotation_text=" ".join(a.label for a in patch.annotations or [] if a.label),
    )
    updated = _state(request).service.update(caller, image.id, changes)
    if updated is None:
        raise errors.ApiError(404, "no such image")
    return _out(request, updated)


@router.delete("/images/{image_id}", status_code=204, response_class=Response)
def delete_image(image_id: str, request: Request, caller: Caller) -> Response:
    """Delete the image, its derived images and its Site_Photo__c record."""
    image = _visible(request, caller, image_id)
    if not _state(request).service.delete(caller, image.id):
        raise errors.ApiError(404, "no such image")
    return Response(status_code=204)


def create_app(
    config: Config, store: ImageStore | None = None, purge_interval: float | None = None
) -> FastAPI:
    """The application; ``store`` defaults to the one ``images.backend`` names.

    ``purge_interval`` (seconds) defaults to ``api.purge_interval_seconds``.
    """
    store = store or open_store(config.images)
    if purge_interval is None:
        purge_interval = float(config.api.purge_interval_seconds)
    if purge_interval <= 0:
        raise ConfigError(
            f"must be more than 0 (got {purge_interval})",
            key="api.purge_interval_seconds",
        )
    repository = Repository(config.database.url, PhotoTables.from_config(config))
    state = ApiState(config, store, repository)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        purger = threading.Thread(
            target=_purge_loop,
            args=(state.service, stop, purge_interval),
            name="image-purge",
            daemon=True,
        )
        purger.start()
        log.info(
            "image API up: %s store, purge every %.0f s", store.name, purge_interval
        )
        try:
            yield
        finally:
            stop.set()
            purger.join(timeout=5)
            repository.close()
            log.info("image API stopped")

    app = FastAPI(
        title="forcelink image API",
        version="1",
        description="Field photos of Salesforce records, stored per org.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.api = state
    errors.install(app)
    app.include_router(router)
    app.include_router(status_router)
    return app


def _purge_loop(service: ImageService, stop: threading.Event, interval: float) -> None:
    """Remove images deleted on the Salesforce side until ``stop`` is set."""
    while not stop.wait(interval):
        try:
            service.purge_orphans()
        except Exception:
            log.exception("purging deleted images failed; retrying in %.0f s", interval)
