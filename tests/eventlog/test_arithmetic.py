"""Tables of cases for the event log's arithmetic: partitioner, assignment, commits."""

from __future__ import annotations

import pytest

from forcelink.eventlog.base import (
    Event,
    Position,
    TopicPartition,
    last_positions,
    murmur2,
    partition_for,
)
from forcelink.eventlog.embedded import _interleave, assign


# Expected values from Apache Kafka's own partitioner tests (signed 32-bit).
@pytest.mark.parametrize(
    ("key", "signed"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2__matches_kafka(key: bytes, signed: int) -> None:
    assert murmur2(key) == signed & 0xFFFFFFFF


@pytest.mark.parametrize(
    ("key", "partitions", "expected"),
    [
        (b"21", 6, (-973932308 & 0x7FFFFFFF) % 6),
        (b"abc", 1, 0),
        (b"abc", 7, 479470107 % 7),
        (b"", 6, (murmur2(b"") & 0x7FFFFFFF) % 6),
    ],
)
def test_partition_for__is_kafkas_positive_murmur2_modulo(
    key: bytes, partitions: int, expected: int
) -> None:
    assert partition_for(key, partitions) == expected


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


@pytest.mark.parametrize(
    ("members", "partitions", "expected"),
    [
        ({"a": ["t"]}, {"t": 3}, {tp("t", 0): "a", tp("t", 1): "a", tp("t", 2): "a"}),
        (
            {"b": ["t"], "a": ["t"]},
            {"t": 4},
            {tp("t", 0): "a", tp("t", 1): "b", tp("t", 2): "a", tp("t", 3): "b"},
        ),
        (
            {"a": ["t", "u"], "b": ["t", "u"]},
            {"t": 1, "u": 1},
            {tp("t", 0): "a", tp("u", 0): "b"},
        ),
        ({"a": ["u"]}, {"t": 2, "u": 1}, {tp("u", 0): "a"}),
        ({}, {"t": 2}, {}),
    ],
)
def test_assign__round_robin_over_sorted_members(
    members: dict[str, list[str]],
    partitions: dict[str, int],
    expected: dict[TopicPartition, str],
) -> None:
    assert assign(members, partitions) == expected


def test_assign__every_member_gets_an_equal_share() -> None:
    owners = assign({m: ["t", "u"] for m in "abcd"}, {"t": 6, "u": 6})
    shares = [list(owners.values()).count(m) for m in "abcd"]
    assert shares == [3, 3, 3, 3]


def event(partition: int, offset: int) -> Event:
    return Event("t", partition, offset, b"k", b"v", {}, 0.0)


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        ([], {}),
        ([event(0, 4)], {tp("t", 0): 4}),
        ([event(0, 4), event(0, 2), event(1, 0)], {tp("t", 0): 4, tp("t", 1): 0}),
        ([Position("t", 2, 9), event(2, 10)], {tp("t", 2): 10}),
    ],
)
def test_last_positions__keeps_the_highest_offset_per_partition(
    done: list[Event | Position], expected: dict[TopicPartition, int]
) -> None:
    assert last_positions(done) == expected


def row(partition: int, offset: int) -> tuple[object, ...]:
    return ("t", partition, offset, b"k", b"v", None, 0.0)


@pytest.mark.parametrize(
    ("rows", "limit", "expected"),
    [
        ([row(0, 0), row(0, 1), row(1, 5)], 10, [(0, 0), (1, 5), (0, 1)]),
        ([row(0, 0), row(0, 1), row(0, 2), row(1, 5)], 2, [(0, 0), (1, 5)]),
        ([row(0, 0), row(0, 1), row(0, 2)], 2, [(0, 0), (0, 1)]),
        ([], 5, []),
    ],
)
def test_interleave__takes_a_prefix_of_each_partition(
    rows: list[tuple[object, ...]], limit: int, expected: list[tuple[int, int]]
) -> None:
    assert [(e.partition, e.offset) for e in _interleave(rows, limit)] == expected
