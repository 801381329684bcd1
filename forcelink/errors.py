"""One error tree for all of forcelink.

The retry loop decides from the class alone what to do with a failure::

    ForcelinkError
    ├── ConfigError            bad forcelink.yaml / mapping file: stop and say where
    ├── TransientError         retry with backoff, holding only this record
    │   ├── SourceUnavailable      Postgres, Kafka or the org cannot be reached
    │   ├── RateLimited            REQUEST_LIMIT_EXCEEDED, 503, UNABLE_TO_LOCK_ROW
    │   └── SessionExpired         token gone: re-authenticate, then retry
    └── TerminalError          retrying cannot help: dead-letter the record
        ├── RecordRejected         Salesforce or Postgres refused this record
        └── PositionLost           a replay id or LSN the source no longer has

Foreign errors (psycopg, Kafka, requests, boto3) are translated into this tree
at the adapter that called the foreign library, raised ``from`` the original.
Every error carries the identifiers that tell an operator where it happened:
org, object, record, LSN or replay id. They appear in ``str(error)`` and as
attributes; secrets never do.
"""

from __future__ import annotations

from typing import Any


class ForcelinkError(Exception):
    """Base of every error forcelink raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, **context: Any) -> None:
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.context:
            return self.message
        where = " ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} [{where}]"

    @property
    def org(self) -> str | None:
        return self.context.get("org")

    @property
    def record(self) -> str | None:
        return self.context.get("record")


class ConfigError(ForcelinkError):
    """A configuration or mapping file is wrong; names the file, line and key."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        super().__init__(message)

    def _render(self) -> str:
        place = ""
        if self.file is not None:
            place = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{place}{key}{self.message}"


class TransientError(ForcelinkError):
    """Worth retrying with backoff; holds only the record it happened to."""

    retryable = True


class SourceUnavailable(TransientError):
    """A backing system (Postgres, the event log, an org) cannot be reached."""


class RateLimited(TransientError):
    """The other side asked us to slow down or was busy."""


class SessionExpired(TransientError):
    """The access token is no longer valid; re-authenticate and retry."""


class TerminalError(ForcelinkError):
    """Retrying cannot help; the record goes to the dead letters."""


class RecordRejected(TerminalError):
    """The target refused this record (validation, duplicate, deleted parent)."""


class PositionLost(TerminalError):
    """A stored position (replay id, LSN, offset) is no longer available."""
