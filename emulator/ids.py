"""Salesforce record ids: key prefixes, the 15/18-character forms, new ids.

A record id is 15 base-62 characters, case-sensitive: a 3-character key
prefix naming the object (``001`` Account, ``003`` Contact, ``005`` User),
then 12 characters that identify the record. Because many tools compare ids
case-insensitively, the API returns an 18-character form that appends a
3-character checksum of the case of the first 15.

The checksum, worked on ``a0D30000001n7Pi``: split into three chunks of five,
``a0D30 | 00000 | 1n7Pi``. In each chunk, bit *i* is set when character *i*
is an upper-case letter: ``a0D30`` has ``D`` at position 2 -> 0b00100 = 4;
``00000`` -> 0; ``1n7Pi`` has ``P`` at position 3 -> 0b01000 = 8. Each number
indexes ``ABCDEFGHIJKLMNOPQRSTUVWXYZ012345``: 4 -> E, 0 -> A, 8 -> I, so the
18-character id is ``a0D30000001n7PiEAI``.
"""

from __future__ import annotations

import itertools
import threading

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62_SET = frozenset(BASE62)
USER_PREFIX = "005"


def checksum(id15: str) -> str:
    """The 3-character case checksum of a 15-character id."""
    suffix = []
    for start in (0, 5, 10):
        bits = 0
        for position, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_SUFFIX[bits])
    return "".join(suffix)


def to18(record_id: str) -> str:
    """The 18-character form of a 15- or 18-character id.

    An 18-character id is rebuilt from its first 15 characters, so a caller
    that upper-cased the checksum still gets the canonical form.
    Raises ValueError for anything that is not a well-formed id.
    """
    if len(record_id) not in (15, 18) or not set(record_id) <= _BASE62_SET:
        raise ValueError(f"malformed id: {record_id!r}")
    id15 = record_id[:15]
    if len(record_id) == 18 and record_id[15:].upper() != checksum(id15):
        raise ValueError(f"malformed id (bad checksum): {record_id!r}")
    return id15 + checksum(id15)


def normalize(record_id: object) -> str | None:
    """``to18`` for a value from a request body, or None if it is no id."""
    if not isinstance(record_id, str):
        return None
    try:
        return to18(record_id)
    except ValueError:
        return None


def encode62(number: int, width: int) -> str:
    """``number`` in base 62, left-padded with zeros to ``width`` characters."""
    chars = []
    while number:
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    text = "".join(reversed(chars))
    if len(text) > width:
        raise OverflowError(f"{number} does not fit in {width} base-62 digits")
    return text.rjust(width, "0")


class IdFactory:
    """Hands out new 18-character ids per key prefix, thread-safe.

    Ids are the prefix and a 12-digit base-62 counter, so the first Account
    is ``001000000000001AAA``. ``state()`` returns the counters, and passing
    them back to the constructor lets a restarted org continue counting.
    """

    def __init__(self, counters: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, itertools.count[int]] = {}
        self._last: dict[str, int] = dict(counters or {})

    def new(self, prefix: str) -> str:
        with self._lock:
            counter = self._counters.get(prefix)
            if counter is None:
                counter = itertools.count(self._last.get(prefix, 0) + 1)
                self._counters[prefix] = counter
            number = next(counter)
            self._last[prefix] = number
        id15 = prefix + encode62(number, 12)
        return id15 + checksum(id15)

    def state(self) -> dict[str, int]:
        with self._lock:
            return dict(self._last)
