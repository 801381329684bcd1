"""Decoder for the ``pgoutput`` logical replication protocol, version 1.

A logical slot read with ``pgoutput`` yields one binary message per WAL
event. A committed transaction always arrives whole and in order::

    B(egin)  [O(rigin)]  R(elation)*  (I | U | D | T)*  C(ommit)

``R`` describes a table (id → schema, name, columns with type OIDs) and is
sent before the first change to that table on this connection and again
after its definition changes; the decoder keeps them in ``relations``.
``Y`` (type) and ``M`` (logical message, only with the ``messages`` option)
may come between transactions too.

Tuple columns come in three kinds: ``n`` null, ``t`` text and ``u``: an
unchanged TOASTed value the server did not write to WAL. ``u`` is not a
value: it is reported in ``Tuple.unchanged`` and left out of
``Tuple.values``, so a consumer can never write a placeholder over real data.

Version 2's streaming of in-progress transactions (``S``/``E``/``c``/``A``)
is not requested by the reader and is refused here: see ``reader.py`` for why.

LSNs are plain ints here; ``format_lsn`` / ``parse_lsn`` convert to and from
Postgres's ``16/B374D848`` form (high 32 bits / low 32 bits, in hex).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from forcelink.connector.postgres.values import Converter, converter_for

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_ORIGIN = struct.Struct("!Q")
_RELATION_HEAD = struct.Struct("!I")
_INT8 = struct.Struct("!B")
_INT16 = struct.Struct("!H")
_INT32 = struct.Struct("!I")
_COLUMN_TYPE = struct.Struct("!Ii")
_MESSAGE_HEAD = struct.Struct("!BQ")


class DecodeError(ValueError):
    """A message that is not valid pgoutput version 1."""


def format_lsn(lsn: int) -> str:
    """``0x16B374D848`` → ``'16/B374D848'`` (Postgres's pg_lsn text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` → ``0x16B374D848``."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def pg_time(microseconds: int) -> datetime:
    """A pgoutput timestamp (µs since 2000-01-01 UTC) as an aware datetime."""
    return _PG_EPOCH + timedelta(microseconds=microseconds)


def format_pg_time(microseconds: int) -> str:
    """A pgoutput timestamp as ISO 8601 UTC text, as ``isoformat`` writes it.

    ``6e14`` → ``'2019-01-05T10:40:00Z'``; ``6e14 + 500`` →
    ``'2019-01-05T10:40:00.000500Z'`` (six digits whenever the fraction is not
    zero). Every transaction needs one; consecutive ones mostly share their
    second, whose text is cached.
    """
    seconds, fraction = divmod(microseconds, 1_000_000)
    whole = _second_text(seconds)
    return f"{whole}.{fraction:06d}Z" if fraction else f"{whole}Z"


@functools.lru_cache(maxsize=16)
def _second_text(seconds: int) -> str:
    return (_PG_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    in_identity: bool
    """Part of the replica identity (every column when REPLICA IDENTITY FULL)."""


@dataclass(slots=True)
class Relation:
    relation_id: int
    schema: str
    name: str
    replica_identity: str
    """``d`` default (primary key), ``f`` full, ``i`` index, ``n`` nothing."""
    columns: list[Column]
    fields: list[tuple[str, Converter, bool]] = field(default_factory=list)
    """Per column: name, converter, in_identity; what ``_tuple`` reads per value."""

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(slots=True)
class Tuple:
    values: dict[str, Any]
    """Column → converted value (None for SQL NULL); unchanged TOAST left out."""
    unchanged: list[str]
    """Columns sent as ``u``: unchanged TOASTed values, not present in values."""


@dataclass(slots=True)
class Begin:
    final_lsn: int
    commit_micros: int
    """Commit time as sent: µs since 2000-01-01 UTC (see ``format_pg_time``)."""
    xid: int

    @property
    def commit_time(self) -> datetime:
        return pg_time(self.commit_micros)


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    """Where the commit record ends: the position to confirm once published."""
    commit_micros: int

    @property
    def commit_time(self) -> datetime:
        return pg_time(self.commit_micros)


@dataclass(slots=True)
class Origin:
    origin_lsn: int
    name: str


@dataclass(slots=True)
class TypeInfo:
    type_oid: int
    schema: str
    name: str


@dataclass(slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(slots=True)
class Insert:
    relation: Relation
    new: Tuple


@dataclass(slots=True)
class Update:
    relation: Relation
    new: Tuple
    old: Tuple | None
    """The old row (REPLICA IDENTITY FULL) or old key (key changed), else None."""


@dataclass(slots=True)
class Delete:
    relation: Relation
    old: Tuple


@dataclass(slots=True)
class Truncate:
    relations: list[Relation]
    cascade: bool
    restart_identity: bool


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | LogicalMessage
    | Insert
    | Update
    | Delete
    | Truncate
)


class PgOutputDecoder:
    """Turns pgoutput payloads into messages, keeping the relation cache.

    One decoder per replication connection: relation ids are only meaningful
    with the ``R`` messages sent earlier on the same connection.
    """

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, payload: bytes) -> Message:
        kind = payload[:1]
        try:
            handler = self._handlers[kind]
        except KeyError:
            raise DecodeError(f"unexpected pgoutput message {kind!r}") from None
        try:
            return handler(self, payload)
        except (struct.error, IndexError, UnicodeDecodeError) as error:
            raise DecodeError(
                f"malformed pgoutput {kind!r} message: {error}"
            ) from error

    def _begin(self, payload: bytes) -> Begin:
        final_lsn, micros, xid = _BEGIN.unpack_from(payload, 1)
        return Begin(final_lsn, micros, xid)

    def _commit(self, payload: bytes) -> Commit:
        flags, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(payload, 1)
        return Commit(flags, commit_lsn, end_lsn, micros)

    def _origin(self, payload: bytes) -> Origin:
        (origin_lsn,) = _ORIGIN.unpack_from(payload, 1)
        name, _ = _cstring(payload, 9)
        return Origin(origin_lsn, name)

    def _type(self, payload: bytes) -> TypeInfo:
        (type_oid,) = _INT32.unpack_from(payload, 1)
        schema, pos = _cstring(payload, 5)
        name, _ = _cstring(payload, pos)
        return TypeInfo(type_oid, schema, name)

    def _message(self, payload: bytes) -> LogicalMessage:
        flags, lsn = _MESSAGE_HEAD.unpack_from(payload, 1)
        prefix, pos = _cstring(payload, 10)
        (length,) = _INT32.unpack_from(payload, pos)
        content = payload[pos + 4 : pos + 4 + length]
        return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(content))

    def _relation(self, payload: bytes) -> Relation:
        (relation_id,) = _RELATION_HEAD.unpack_from(payload, 1)
        schema, pos = _cstring(payload, 5)
        name, pos = _cstring(payload, pos)
        identity = chr(payload[pos])
        (count,) = _INT16.unpack_from(payload, pos + 1)
        pos += 3
        columns = []
        for _ in range(count):
            flags = payload[pos]
            column_name, pos = _cstring(payload, pos + 1)
            type_oid, modifier = _COLUMN_TYPE.unpack_from(payload, pos)
            pos += 8
            columns.append(Column(column_name, type_oid, modifier, bool(flags & 1)))
        relation = Relation(relation_id, schema, name, identity, columns)
        relation.fields = [
            (c.name, converter_for(c.type_oid), c.in_identity) for c in columns
        ]
        self.relations[relation_id] = relation
        return relation

    def _insert(self, payload: bytes) -> Insert:
        relation = self._relation_at(payload)
        if payload[5:6] != b"N":
            raise DecodeError(f"insert without new tuple: {payload[5:6]!r}")
        new, _ = _tuple(relation, payload, 6)
        return Insert(relation, new)

    def _update(self, payload: bytes) -> Update:
        relation = self._relation_at(payload)
        pos = 5
        old = None
        kind = payload[pos : pos + 1]
        if kind in (b"K", b"O"):
            old, pos = _tuple(relation, payload, pos + 1, key_only=kind == b"K")
        if payload[pos : pos + 1] != b"N":
            raise DecodeError(f"update without new tuple: {payload[pos : pos + 1]!r}")
        new, _ = _tuple(relation, payload, pos + 1)
        return Update(relation, new, old)

    def _delete(self, payload: bytes) -> Delete:
        relation = self._relation_at(payload)
        kind = payload[5:6]
        if kind not in (b"K", b"O"):
            raise DecodeError(f"delete without old key: {kind!r}")
        old, _ = _tuple(relation, payload, 6, key_only=kind == b"K")
        return Delete(relation, old)

    def _truncate(self, payload: bytes) -> Truncate:
        (count,) = _INT32.unpack_from(payload, 1)
        options = payload[5]
        ids = struct.unpack_from(f"!{count}I", payload, 6)
        relations = [self._known(relation_id) for relation_id in ids]
        return Truncate(relations, bool(options & 1), bool(options & 2))

    def _relation_at(self, payload: bytes) -> Relation:
        (relation_id,) = _INT32.unpack_from(payload, 1)
        return self._known(relation_id)

    def _known(self, relation_id: int) -> Relation:
        try:
            return self.relations[relation_id]
        except KeyError:
            raise DecodeError(
                f"change for relation {relation_id} before its R message"
            ) from None

    _handlers: dict[bytes, Callable[[PgOutputDecoder, bytes], Message]] = {
        b"B": _begin,
        b"C": _commit,
        b"O": _origin,
        b"Y": _type,
        b"M": _message,
        b"R": _relation,
        b"I": _insert,
        b"U": _update,
        b"D": _delete,
        b"T": _truncate,
    }


def _cstring(payload: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated UTF-8 string at pos, and the position after the NUL."""
    end = payload.index(b"\0", pos)
    return payload[pos:end].decode("utf-8"), end + 1


def _tuple(
    relation: Relation, payload: bytes, pos: int, *, key_only: bool = False
) -> tuple[Tuple, int]:
    """Decode TupleData at pos into converted values; return the next position.

    A ``K`` tuple (old key) sends every column but only the replica identity
    ones hold data; with ``key_only`` the others are left out, not reported
    as NULL.
    """
    (count,) = _INT16.unpack_from(payload, pos)
    if count > len(relation.fields):
        raise DecodeError(
            f"{relation.qualified_name}: tuple of {count} columns,"
            f" relation has {len(relation.fields)}"
        )
    pos += 2
    unpack_length = _INT32.unpack_from
    values: dict[str, Any] = {}
    unchanged: list[str] = []
    # The hot loop of the reader: one pass per column of every row, so names
    # and converters come precomputed from the Relation and nothing is looked
    # up that could be bound once.
    for name, convert, in_identity in relation.fields[:count]:
        kind = payload[pos]
        if kind == 0x74:  # 't': text
            start = pos + 5
            pos = start + unpack_length(payload, pos + 1)[0]
            text = payload[start:pos].decode()
            try:
                values[name] = convert(text)
            except (ValueError, IndexError) as error:
                raise _conversion_error(relation, name, text, error) from error
        elif kind == 0x6E:  # 'n': null
            if not key_only or in_identity:
                values[name] = None
            pos += 1
        elif kind == 0x75:  # 'u': unchanged TOAST, no value on the wire
            unchanged.append(name)
            pos += 1
        else:
            raise DecodeError(
                f"column {relation.qualified_name}.{name}: tuple kind {chr(kind)!r}"
                " (binary format was not requested)"
            )
    return Tuple(values, unchanged), pos


def _conversion_error(
    relation: Relation, name: str, text: str, error: Exception
) -> DecodeError:
    type_oid = next(c.type_oid for c in relation.columns if c.name == name)
    return DecodeError(
        f"column {relation.qualified_name}.{name}: cannot convert"
        f" {text[:60]!r} (type {type_oid}): {error}"
    )
