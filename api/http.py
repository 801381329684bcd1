"""HTTP caching and range semantics (RFC 9110) for the bytes the API serves.

Worked example for ``parse_range`` on a 1000-byte object::

    bytes=0-99      -> (0, 99)      the first 100 bytes
    bytes=900-      -> (900, 999)   from byte 900 to the end
    bytes=-100      -> (900, 999)   the last 100 bytes
    bytes=500-5000  -> (500, 999)   the end is clipped to the object
    bytes=1000-     -> Unsatisfiable (416 with ``Content-Range: bytes */1000``)
    bytes=0-1,5-9   -> None         several ranges: served whole (200), as allowed

Anything that does not parse is ignored (served whole), as the RFC says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.datastructures import Headers


class Unsatisfiable(Exception):
    """The range starts at or past the end of the object."""


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _etags(value: str) -> list[str]:
    """The entity tags of an If-None-Match list, weak markers dropped."""
    return [tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()]


def not_modified(headers: Headers, etag: str, last_modified: datetime | None) -> bool:
    """True when a GET may be answered 304 (If-None-Match wins over the date)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = _etags(if_none_match)
        return "*" in tags or etag in tags
    since = _parse_date(headers.get("if-modified-since"))
    if since is None or last_modified is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def parse_range(
    headers: Headers, size: int, etag: str, last_modified: datetime
) -> tuple[int, int] | None:
    """The single byte range to serve, inclusive; None means the whole object."""
    value = headers.get("range")
    if not value or not _if_range_holds(headers.get("if-range"), etag, last_modified):
        return None
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        length = int(last)
        if length == 0:
            raise Unsatisfiable
        return max(0, size - length), size - 1
    start = int(first)
    if start >= size:
        raise Unsatisfiable
    end = int(last) if last.isdigit() else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def _if_range_holds(if_range: str | None, etag: str, last_modified: datetime) -> bool:
    """If-Range: serve the range only if the client's copy is still current."""
    if if_range is None:
        return True
    if if_range.startswith('"'):
        return if_range == etag
    moment = _parse_date(if_range)
    return moment is not None and last_modified.replace(microsecond=0) == moment
