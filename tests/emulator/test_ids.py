"""Record ids: the case checksum against worked examples, and bad input."""

from __future__ import annotations

import pytest

from forcelink.emulator.ids import IdFactory, checksum, to18

# Each 18-character form follows from the public algorithm by hand: per
# 5-character chunk, bit i set when character i is upper case, then the
# number indexes "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345".
KNOWN = [
    ("001000000000001", "001000000000001AAA"),  # no capitals: 0,0,0
    ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),  # D at 2 -> 4; P at 3 -> 8
    ("0015000000VALDt", "0015000000VALDtAAP"),  # V,A,L,D at 0..3 -> 15
    ("ZZZZZZZZZZZZZZZ", "ZZZZZZZZZZZZZZZ555"),  # all capitals: 31,31,31
    ("003A0000005WxyZ", "003A0000005WxyZIAS"),  # A at 3 -> 8; W at 1, Z at 4 -> 18
]


@pytest.mark.parametrize(("id15", "id18"), KNOWN)
def test_ids__checksum_matches_known_pairs(id15: str, id18: str) -> None:
    assert checksum(id15) == id18[15:]
    assert to18(id15) == id18
    assert to18(id18) == id18


def test_ids__lower_cased_checksum_is_accepted_and_canonicalised() -> None:
    assert to18("a0D30000001n7Pieai") == "a0D30000001n7PiEAI"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "001",
        "00100000000000",
        "001000000000001A",
        "00100000000000!",
        "001000000000001ABA",
        "A0D30000001N7PIEAI",
    ],
)
def test_ids__malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        to18(bad)


def test_ids__factory_counts_per_prefix_and_resumes() -> None:
    factory = IdFactory()
    assert factory.new("001") == "001000000000001AAA"
    assert factory.new("001") == "001000000000002AAA"
    assert factory.new("003") == "003000000000001AAA"
    resumed = IdFactory(factory.state())
    assert resumed.new("001") == "001000000000003AAA"
