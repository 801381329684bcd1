"""API usage, the daily limit and injected faults: what the admin API steers.

``Usage`` counts calls by kind (rest, collections, query, bulk, streaming)
for ``GET /_emulator/stats`` and against the daily limit that the
``Sforce-Limit-Info: api-usage=N/M`` header reports. Streaming calls are
counted for the stats but, as in Salesforce, not against the API limit.

``Faults`` holds "make the next N calls of this kind fail" orders.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from forcelink.emulator.errors import ApiError

KINDS = ("rest", "collections", "query", "bulk", "streaming")
DEFAULT_DAILY_LIMIT = 100_000
FAULTS = ("503", "REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW")


class Usage:
    def __init__(self, daily_limit: int = DEFAULT_DAILY_LIMIT) -> None:
        self._lock = threading.Lock()
        self.daily_limit = daily_limit
        self.used = 0
        self.by_kind = dict.fromkeys(KINDS, 0)

    def count(self, kind: str) -> bool:
        """Count one call; False when it is over the daily limit (not counted)."""
        with self._lock:
            if kind == "streaming":
                self.by_kind[kind] += 1
                return True
            if self.used >= self.daily_limit:
                return False
            self.used += 1
            self.by_kind[kind] += 1
            return True

    def set_limit(self, daily_limit: int, used: int | None = None) -> None:
        with self._lock:
            self.daily_limit = daily_limit
            if used is not None:
                self.used = used

    def header(self) -> str:
        with self._lock:
            return f"api-usage={self.used}/{self.daily_limit}"

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "calls": dict(self.by_kind),
                "total": sum(self.by_kind.values()),
                "api_usage": self.used,
                "daily_limit": self.daily_limit,
            }

    def reset(self) -> None:
        with self._lock:
            self.used = 0
            self.by_kind = dict.fromkeys(KINDS, 0)


@dataclass
class _Order:
    fault: str
    remaining: int


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: dict[str, _Order] = {}

    def arm(self, kind: str, fault: str, count: int) -> None:
        """Make the next ``count`` calls of ``kind`` (or "any") fail with ``fault``."""
        if kind not in (*KINDS, "any") or fault not in FAULTS or count < 0:
            raise ValueError(
                f"kind must be one of {', '.join(KINDS)} or any; fault one of "
                f"{', '.join(FAULTS)}; count >= 0"
            )
        with self._lock:
            self._orders[kind] = _Order(fault, count)

    def take(self, kind: str) -> ApiError | None:
        """The error to answer this call with, if a fault is armed for it."""
        with self._lock:
            for key in (kind, "any"):
                order = self._orders.get(key)
                if order is not None and order.remaining > 0:
                    order.remaining -= 1
                    return fault_error(order.fault)
        return None

    def take_outage(self) -> ApiError | None:
        """A 503 armed for "any" call also hits calls that are not counted.

        An org that is down answers nothing: the version list
        (``/services/data``), which health probes use because it costs no
        API call, fails with the rest.
        """
        with self._lock:
            order = self._orders.get("any")
            if order is not None and order.remaining > 0 and order.fault == "503":
                order.remaining -= 1
                return fault_error("503")
        return None

    def clear(self) -> None:
        with self._lock:
            self._orders.clear()


def fault_error(fault: str) -> ApiError:
    if fault == "503":
        return ApiError(
            503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable; retry."
        )
    if fault == "REQUEST_LIMIT_EXCEEDED":
        return limit_exceeded()
    return ApiError(
        400,
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record or 1 records",
    )


def limit_exceeded() -> ApiError:
    return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
