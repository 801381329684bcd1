"""Errors the local org answers with, worded and coded as Salesforce does.

The REST API reports failures as a JSON list of
``{"message", "errorCode", "fields"}`` objects; ``ApiError.body()`` builds
that list and ``status`` is the HTTP status to send it with. Per-record
results (sObject collections, Bulk ingest) use ``as_record_error()``, which
names the code ``statusCode`` as Salesforce does there.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        fields: list[str] | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields or [])
        super().__init__(f"{error_code}: {message}")

    def body(self) -> list[dict[str, Any]]:
        return [
            {
                "message": self.message,
                "errorCode": self.error_code,
                "fields": self.fields,
            }
        ]

    def as_record_error(self) -> dict[str, Any]:
        return {
            "statusCode": self.error_code,
            "message": self.message,
            "fields": self.fields,
        }


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def invalid_type(name: str) -> ApiError:
    return ApiError(
        400,
        "INVALID_TYPE",
        f"sObject type '{name}' is not supported. If you are attempting to use a "
        "custom object, be sure to append the '__c' after the entity name. Please "
        "reference your WSDL or the describe call for the appropriate names.",
    )
