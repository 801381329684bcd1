"""One JSON shape for every error the API returns::

    {"error": {"status": 404, "code": "not_found", "message": "no such image"}}

``code`` is stable (clients branch on it), ``message`` is for people and
never contains a token, a key or a storage location. Validation errors add
``details``: a list of ``{"field": "body.tags.0", "problem": "..."}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from forcelink.api.auth import InvalidToken
from forcelink.api.imaging import ImageTooLarge, NotAnImage
from forcelink.api.service import InvalidInput
from forcelink.api.uploads import BadUpload, UploadTooLarge
from forcelink.connector.images import StoreUnavailable
from forcelink.errors import SourceUnavailable

log = logging.getLogger("forcelink.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raise from a route to answer with the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = headers


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": status,
        "code": code or _CODES.get(status, "error"),
        "message": message,
    }
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="forcelink"'}

# Our own errors that mean something to a client: (status, code).
_TRANSLATED: list[tuple[type[Exception], int, str]] = [
    (InvalidToken, 401, "unauthorized"),
    (UploadTooLarge, 413, "too_large"),
    (ImageTooLarge, 413, "image_too_large"),
    (NotAnImage, 415, "unsupported_media_type"),
    (BadUpload, 400, "bad_upload"),
    (InvalidInput, 422, "invalid_input"),
    (StoreUnavailable, 503, "store_unavailable"),
    (SourceUnavailable, 503, "unavailable"),
]


def install(app: FastAPI) -> None:
    """Route every error, ours or the framework's, through ``error_response``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.code, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        return error_response(error.status_code, str(error.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": ".".join(str(part) for part in problem.get("loc", ())),
                "problem": str(problem.get("msg", "invalid")),
            }
            for problem in error.errors()
        ]
        return error_response(422, "the request is not valid", details=details)

    for cls, status, code in _TRANSLATED:
        app.add_exception_handler(cls, _translated(status, code))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")


def _translated(status: int, code: str) -> Any:
    async def handler(request: Request, error: Exception) -> JSONResponse:
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, error)
        message = getattr(error, "message", str(error))
        if status == 401:
            # Why a token failed helps an attacker more than a user: say nothing.
            return error_response(
                401, "invalid or missing token", code, UNAUTHORIZED_HEADERS
            )
        return error_response(status, message, code)

    return handler
