"""The org's clock: real UTC time plus an offset tests can advance.

Advancing the clock (``POST /_emulator/clock``) moves everything that reads
it: token expiry, event retention, record timestamps. It never goes back.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, offset_seconds: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(seconds=offset_seconds)

    def now(self) -> datetime:
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + offset

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds`` (>= 0); return the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    @property
    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset.total_seconds()


def format_datetime(moment: datetime) -> str:
    """The REST form: ``2026-01-02T03:04:05.000+0000`` (UTC, milliseconds)."""
    moment = moment.astimezone(UTC)
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"
    )


def event_datetime(rest_form: str) -> str:
    """The change-event form of a REST datetime: ``...05.000Z``."""
    return rest_form[:-5] + "Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
