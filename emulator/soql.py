"""A subset of SOQL: parse a query, check it against the org's schema, run it.

Three stages, each usable alone::

    parse(text) -> Query            syntax only; MALFORMED_QUERY on bad text
    plan(query, org, ...) -> Plan   names resolved against the schema
                                    (INVALID_TYPE / INVALID_FIELD), WHERE
                                    compiled into one Python closure
    Plan.run() -> list of records   the matching records, sorted and sliced

``execute(query, org, include_deleted)`` chains them and returns
``(total_size, rows)``; rows are REST-shaped (``attributes`` plus nested parent
objects) or, with ``shape="flat"``, tuples in ``Plan.columns`` order whose
names are dotted (``Account.Name``) as Bulk API CSV headers are.

Salesforce semantics kept on purpose: text compares case-insensitively (=,
IN, LIKE, ordering); ids compare in their 18-character form whatever length
the literal had; ``x != 'a'`` and ``x NOT IN (...)`` are true for a null x
while every other comparison with a null is false; AND and OR may not be
mixed at one level without parentheses; NOT only opens a condition. Date
literals such as ``LAST_N_DAYS:7`` denote a range of days ``[start, end)``
taken from the org's clock, so ``CreatedDate = TODAY`` means ``start <= v <
end`` and ``CreatedDate > TODAY`` means ``v >= end``.

Plans read the org's stored rows (``Table.rows``: one list of values per
record, never changed in place, so a list of them is a snapshot) through
``itemgetter`` on the column slots: no dict is built per record. Values are
in Salesforce JSON form: datetimes as ``2026-01-02T03:04:05.000+0000``
(always UTC), dates as ``2026-01-02``. Both order correctly as strings, so
literals are turned into that same form once and compared as strings.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from forcelink.emulator import ids
from forcelink.emulator.clock import format_datetime
from forcelink.emulator.errors import ApiError
from forcelink.emulator.org import Org, Table
from forcelink.emulator.schema import FieldDef, ObjectDef

Record = list[Any]  # a stored row: values in ObjectDef.columns order
Getter = Callable[[Record], Any]
Predicate = Callable[[Record], bool]


# --------------------------------------------------------------------------
# errors


def _position(text: str, pos: int) -> tuple[int, int, str]:
    """Row and column (1-based) of offset ``pos`` and the line holding it."""
    row = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : None if line_end < 0 else line_end]
    return row, pos - line_start + 1, line


def query_error(code: str, text: str, pos: int, message: str) -> ApiError:
    """An ApiError worded like Salesforce's: the line, a caret, the position."""
    row, column, line = _position(text, pos)
    caret = " " * (column - 1) + "^"
    body = f"\n{line}\n{caret}\nERROR at Row:{row}:Column:{column}\n{message}"
    return ApiError(400, code, body, [])


def malformed(text: str, pos: int, token: str) -> ApiError:
    return query_error("MALFORMED_QUERY", text, pos, f"unexpected token: '{token}'")


# --------------------------------------------------------------------------
# tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
  | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?![\w.])
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::\d+)?)
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string, datetime, date, number, op, punct, word, eof
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


def tokenize(text: str) -> list[Token]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup or "bad"
        if kind == "ws":
            continue
        if kind == "bad":
            raise malformed(text, match.start(), match.group())
        tokens.append(Token(kind, match.group(), match.start()))
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


# --------------------------------------------------------------------------
# syntax tree


@dataclass(frozen=True, slots=True)
class FieldPath:
    """``Account.Owner.Name`` as written, with where it was written."""

    parts: tuple[str, ...]
    pos: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Value:
    """A literal. kind: string, number, boolean, null, date, datetime, range.

    ``text`` is the literal as written (strings without their quotes, escapes
    still in: LIKE needs them); ranges are ``NAME`` or ``NAME:n``.
    """

    kind: str
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    path: FieldPath
    op: str  # = != < <= > >= LIKE IN NOTIN INCLUDES EXCLUDES
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Logical:
    op: Literal["AND", "OR"]
    terms: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Condition


Condition = Compare | Logical | Not


@dataclass(frozen=True, slots=True)
class OrderItem:
    path: FieldPath
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    fields: tuple[FieldPath, ...]
    count: bool
    sobject: str
    sobject_pos: int
    where: Condition | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None


# --------------------------------------------------------------------------
# parser

_DATE_RANGES = {
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
    "THIS_WEEK",
    "LAST_WEEK",
    "NEXT_WEEK",
    "THIS_MONTH",
    "LAST_MONTH",
    "NEXT_MONTH",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
}
_DATE_RANGES_N = {"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO"}
_COMPARE_OPS = {"=", "!=", "<>", "<", "<=", ">", ">="}
_CLAUSE_WORDS = {"FROM", "WHERE", "ORDER", "LIMIT", "OFFSET", "AND", "OR", "NOT"}


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *words: str) -> bool:
        return self.token.upper in words and self.token.kind in ("word", "punct", "op")

    def expect(self, word: str) -> Token:
        if not self.at(word):
            raise self.unexpected()
        return self.take()

    def unexpected(self, token: Token | None = None) -> ApiError:
        token = token or self.token
        return malformed(self.text, token.pos, token.text)

    def query(self) -> Query:
        self.expect("SELECT")
        fields, count = self.select_list()
        self.expect("FROM")
        sobject = self.take()
        if sobject.kind != "word" or "." in sobject.text or ":" in sobject.text:
            raise self.unexpected(sobject)
        where = self.where() if self.at("WHERE") else None
        order_by = self.order_by() if self.at("ORDER") else ()
        limit = self.integer_clause("LIMIT")
        offset = self.integer_clause("OFFSET")
        if self.token.kind != "eof":
            raise self.unexpected()
        return Query(
            self.text, fields, count, sobject.text, sobject.pos, where, order_by,
            limit, offset,
        )  # fmt: skip

    def select_list(self) -> tuple[tuple[FieldPath, ...], bool]:
        if self.at("COUNT") and self.tokens[self.index + 1].text == "(":
            self.take()
            self.take()
            self.expect(")")
            return (), True
        fields = [self.path()]
        while self.at(","):
            self.take()
            fields.append(self.path())
        return tuple(fields), False

    def path(self) -> FieldPath:
        token = self.take()
        if token.kind != "word" or ":" in token.text or token.upper in _CLAUSE_WORDS:
            raise self.unexpected(token)
        if self.at("("):  # a function call: aggregates and FIELDS() are not served
            raise self.unexpected()
        return FieldPath(tuple(token.text.split(".")), token.pos)

    def where(self) -> Condition:
        self.take()
        return self.condition()

    def condition(self) -> Condition:
        if self.at("NOT"):
            self.take()
            first: Condition = Not(self.term())
        else:
            first = self.term()
        if not self.at("AND", "OR"):
            return first
        op = self.token.upper
        terms = [first]
        while self.at("AND", "OR"):
            if self.token.upper != op:  # SOQL refuses to guess precedence
                raise self.unexpected()
            self.take()
            terms.append(self.term())
        return Logical("AND" if op == "AND" else "OR", tuple(terms))

    def term(self) -> Condition:
        if self.at("("):
            self.take()
            inner = self.condition()
            self.expect(")")
            return inner
        path = self.path()
        if self.token.kind == "op" and self.token.text in _COMPARE_OPS:
            op = self.take().text
            return Compare(path, "!=" if op == "<>" else op, (self.value(),))
        if self.at("LIKE"):
            self.take()
            value = self.value()
            if value.kind != "string":
                raise malformed(self.text, value.pos, value.text)
            return Compare(path, "LIKE", (value,))
        return self.set_term(path)

    def set_term(self, path: FieldPath) -> Condition:
        if self.at("NOT"):
            self.take()
            if not self.at("IN"):
                raise self.unexpected()
            op = "NOTIN"
        elif self.at("IN", "INCLUDES", "EXCLUDES"):
            op = self.token.upper
        else:
            raise self.unexpected()
        self.take()
        self.expect("(")
        if self.at("SELECT"):  # semi-joins are not served
            raise self.unexpected()
        values = [self.value()]
        while self.at(","):
            self.take()
            values.append(self.value())
        self.expect(")")
        return Compare(path, op, tuple(values))

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return Value("string", token.text[1:-1], token.pos)
        if token.kind in ("number", "date", "datetime"):
            return Value(token.kind, token.text, token.pos)
        word = token.upper
        if token.kind == "word" and word in ("TRUE", "FALSE"):
            return Value("boolean", word, token.pos)
        if token.kind == "word" and word == "NULL":
            return Value("null", word, token.pos)
        name, _, n = word.partition(":")
        if token.kind == "word" and (
            (name in _DATE_RANGES and not n) or (name in _DATE_RANGES_N and n)
        ):
            return Value("range", word, token.pos)
        raise self.unexpected(token)

    def order_by(self) -> tuple[OrderItem, ...]:
        self.take()
        self.expect("BY")
        items = [self.order_item()]
        while self.at(","):
            self.take()
            items.append(self.order_item())
        return tuple(items)

    def order_item(self) -> OrderItem:
        path = self.path()
        descending = False
        if self.at("ASC", "DESC"):
            descending = self.take().upper == "DESC"
        nulls_last = descending
        if self.at("NULLS"):
            self.take()
            if not self.at("FIRST", "LAST"):
                raise self.unexpected()
            nulls_last = self.take().upper == "LAST"
        return OrderItem(path, descending, nulls_last)

    def integer_clause(self, word: str) -> int | None:
        if not self.at(word):
            return None
        self.take()
        token = self.take()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)


def parse(text: str) -> Query:
    """The syntax tree of ``text``; ApiError MALFORMED_QUERY if it is not SOQL
    this emulator serves (semi-joins, subqueries, aggregates other than
    ``COUNT()``, GROUP BY and friends are refused as unexpected tokens)."""
    return _Parser(text).query()


# --------------------------------------------------------------------------
# planning: names against the schema, WHERE into a closure


_CATEGORY = {
    "id": "id",
    "reference": "id",
    "multipicklist": "multi",
    "int": "number",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
    "address": "compound",
}
_TYPE_WORD = {
    "id": "id",
    "number": "double",
    "boolean": "boolean",
    "date": "date",
    "datetime": "dateTime",
}
_ACCEPTS = {
    "text": {"string"},
    "multi": {"string"},
    "id": {"string"},
    "number": {"number"},
    "boolean": {"boolean"},
    "date": {"date", "range"},
    "datetime": {"datetime", "range"},
}
_ADDRESS_KEYS = ("city", "country", "geocodeAccuracy", "latitude", "longitude",
                 "postalCode", "state", "street")  # fmt: skip
_NO_COLUMN = (
    "No such column '{name}' on entity '{entity}'. If you are attempting to use a "
    "custom field, be sure to append the '__c' after the custom field name. Please "
    "reference your WSDL or the describe call for the appropriate names."
)
_NO_RELATIONSHIP = (
    "Didn't understand relationship '{name}' in field path. If you are attempting "
    "to use a custom relationship, be sure to append the '__r' after the custom "
    "relationship name. Please reference your WSDL or the describe call for the "
    "appropriate names."
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"',
            "'": "'", "\\": "\\"}  # fmt: skip


def category(field_def: FieldDef) -> str:
    """How a field's values compare: text, id, multi, number, boolean, date,
    datetime or compound."""
    return _CATEGORY.get(field_def.type, "text")


@dataclass(slots=True)
class Resolved:
    """A field path checked against the schema."""

    name: str  # canonical dotted name: Account.Name
    field: FieldDef
    hops: tuple[tuple[FieldDef, Table], ...]  # (reference field, its object)
    getter: Getter


@dataclass(slots=True)
class _Node:
    """One object in a REST row: its fields, then its parents, in SELECT order."""

    table: Table
    entries: list[tuple[str, Getter, _Node | None]] = field(default_factory=list)
    """(key, getter, None) for a field; (key, reference getter, node) for a parent."""

    def child(self, key: str, reference: Getter, table: Table) -> _Node:
        for entry_key, _, node in self.entries:
            if entry_key == key and node is not None:
                return node
        node = _Node(table)
        self.entries.append((key, reference, node))
        return node


class Plan:
    """A query bound to an org: resolved columns, a compiled filter, ordering.

    Parent records are looked up once per plan and remembered, so a plan is
    meant for one run; build a new plan to see later changes.
    """

    def __init__(
        self,
        query: Query,
        org: Org,
        include_deleted: bool = False,
        version: str = "60.0",
    ) -> None:
        self.query = query
        self.org = org
        self.include_deleted = include_deleted
        self.version = version
        self._parents: dict[str, Record | None] = {}

        found = org.schema.find(query.sobject)
        if found is None:
            raise query_error(
                "INVALID_TYPE", query.text, query.sobject_pos,
                f"sObject type '{query.sobject}' is not supported. If you are "
                "attempting to use a custom object, be sure to append the '__c' "
                "after the entity name. Please reference your WSDL or the describe "
                "call for the appropriate names.",
            )  # fmt: skip
        self.sobject: ObjectDef = found
        self.table = org.table(found.name)
        self.columns: list[Resolved] = [self.resolve(p) for p in query.fields]
        self.compound = any(c.field.type == "address" for c in self.columns)
        self.predicate = self._condition(query.where) if query.where else None
        self.ordering = [self._order_key(item) for item in query.order_by]
        self._check_slice()
        self._tree = self._rest_tree()

    def _check_slice(self) -> None:
        offset = self.query.offset
        if offset is not None and offset > 2000:
            raise ApiError(
                400, "NUMBER_OUTSIDE_VALID_RANGE",
                f"Maximum SOQL offset allowed is 2000 (got {offset})",
            )  # fmt: skip

    # -- names

    def resolve(self, path: FieldPath) -> Resolved:
        """Follow ``path`` from the queried object; INVALID_FIELD if it leads
        nowhere. ``Account.Name`` on Account itself is accepted, as SOQL does."""
        parts = path.parts
        table = self.table
        prefixed = len(parts) > 1 and parts[0].lower() == table.obj.name.lower()
        if prefixed and _relationship(table.obj, parts[0]) is None:
            parts = parts[1:]
        hops: list[tuple[FieldDef, Table]] = []
        sources: list[Table] = []  # the table each reference field belongs to
        for part in parts[:-1]:
            reference = _relationship(table.obj, part)
            target = self._target(reference)
            if reference is None or target is None:
                raise self._invalid(path, _NO_RELATIONSHIP.format(name=part))
            hops.append((reference, target))
            sources.append(table)
            table = target

        found = table.obj.find(parts[-1])
        if found is None:
            message = _NO_COLUMN.format(name=parts[-1], entity=table.obj.name)
            raise self._invalid(path, message)
        names = [str(ref.relationship_name) for ref, _ in hops] + [found.name]
        getter = self._local_getter(table, found)
        for index in reversed(range(len(hops))):
            reference, target = hops[index]
            fk = self._local_getter(sources[index], reference)
            getter = self._hop(fk, target, getter)
        return Resolved(".".join(names), found, tuple(hops), getter)

    def _invalid(self, path: FieldPath, message: str) -> ApiError:
        return query_error("INVALID_FIELD", self.query.text, path.pos, message)

    def _target(self, reference: FieldDef | None) -> Table | None:
        # A polymorphic reference is followed to its first object only.
        if reference is None or not reference.reference_to:
            return None
        if self.org.schema.find(reference.reference_to[0]) is None:
            return None
        return self.org.table(reference.reference_to[0])

    @staticmethod
    def _local_getter(table: Table, found: FieldDef) -> Getter:
        if found.type != "address":
            return itemgetter(table.slot[found.name])
        slots = {
            f.component[0].lower() + f.component[1:]: table.slot[f.name]
            for f in table.obj.fields.values()
            if f.compound_of == found.name
        }
        parts = [(key, slots.get(key)) for key in _ADDRESS_KEYS]

        def address(record: Record) -> dict[str, Any] | None:
            value = {k: None if i is None else record[i] for k, i in parts}
            return value if any(v is not None for v in value.values()) else None

        return address

    def _hop(self, reference: Getter, table: Table, inner: Getter) -> Getter:
        parent = self.parent

        def get(record: Record) -> Any:
            parent_id = reference(record)
            if parent_id is None:
                return None
            found = parent(table, parent_id)
            return None if found is None else inner(found)

        return get

    def parent(self, table: Table, record_id: str) -> Record | None:
        """The live parent row, looked up once per plan."""
        try:
            return self._parents[record_id]
        except KeyError:
            row = table.rows.get(record_id)
            found = row if row is not None and table.live(row) else None
            self._parents[record_id] = found
            return found

    # -- WHERE

    def _condition(self, condition: Condition) -> Predicate:
        if isinstance(condition, Not):
            inner = self._condition(condition.term)
            return lambda record: not inner(record)
        if isinstance(condition, Logical):
            return _combine(condition.op, [self._condition(t) for t in condition.terms])
        return self._compare(condition)

    def _compare(self, compare: Compare) -> Predicate:
        column = self.resolve(compare.path)
        kind = category(column.field)
        if kind == "compound":
            raise self._invalid(
                compare.path, f"field '{column.name}' can not be filtered in a query"
            )
        op, get = compare.op, column.getter
        if op == "LIKE":
            if kind not in ("text", "id", "multi"):
                raise self._bad_operator(compare, column)
            return _like(get, _like_regex(compare.values[0].text))
        targets = [self._literal(v, column, kind) for v in compare.values]
        if op in ("INCLUDES", "EXCLUDES"):
            if kind != "multi":
                raise self._bad_operator(compare, column)
            return _includes(get, op == "INCLUDES", targets)
        if op in ("IN", "NOTIN"):
            if any(isinstance(t, tuple) for t in targets):
                raise malformed(self.query.text, compare.values[0].pos, "(")
            return _member(get, op == "IN", targets, kind == "text")
        if kind == "multi" and op not in ("=", "!="):
            raise self._bad_operator(compare, column)
        target = targets[0]
        if isinstance(target, tuple):
            return _in_range(get, op, target)
        return _scalar(get, op, target, kind == "text")

    def _bad_operator(self, compare: Compare, column: Resolved) -> ApiError:
        word = {"NOTIN": "NOT IN"}.get(compare.op, compare.op)
        return query_error(
            "INVALID_QUERY_FILTER_OPERATOR", self.query.text, compare.path.pos,
            f"invalid operator on {column.field.type} field '{column.name}': {word}",
        )  # fmt: skip

    def _literal(self, value: Value, column: Resolved, kind: str) -> Any:
        """The literal in the form stored values take, lower-cased for text;
        a (start, end) pair for a date range; None for null."""
        if value.kind == "null":
            return None
        if value.kind not in _ACCEPTS[kind]:
            raise self._literal_type_error(value, column, kind)
        if kind in ("text", "multi"):
            return _unescape(value.text).lower()
        if kind == "id":
            return self._id_literal(value)
        if kind == "number":
            number = float(value.text)
            return int(number) if number.is_integer() else number
        if kind == "boolean":
            return value.text == "TRUE"
        if value.kind == "range":
            return _date_range(value.text, self.org.clock.now(), kind == "datetime")
        return self._moment(value)

    def _id_literal(self, value: Value) -> str:
        text = _unescape(value.text)
        try:
            return ids.to18(text)
        except ValueError:
            raise query_error(
                "INVALID_QUERY_FILTER_OPERATOR", self.query.text, value.pos,
                f"invalid ID field: {text}",
            ) from None  # fmt: skip

    def _moment(self, value: Value) -> str:
        try:
            if value.kind == "date":
                return dt.date.fromisoformat(value.text).isoformat()
            moment = dt.datetime.fromisoformat(value.text.replace("Z", "+00:00"))
        except ValueError:
            raise malformed(self.query.text, value.pos, value.text) from None
        return format_datetime(moment)

    def _literal_type_error(
        self, value: Value, column: Resolved, kind: str
    ) -> ApiError:
        if kind in ("text", "multi"):
            wanted = "must be of type string and should be enclosed in quotes"
        elif kind == "id":
            wanted = "must be of type id and should be enclosed in quotes"
        else:
            wanted = (
                f"must be of type {_TYPE_WORD[kind]} and should not be enclosed "
                "in quotes"
            )
        return query_error(
            "INVALID_FIELD", self.query.text, value.pos,
            f"value of filter criterion for field '{column.name}' {wanted}",
        )  # fmt: skip

    # -- ORDER BY

    def _order_key(self, item: OrderItem) -> tuple[Callable[[Record], Any], bool]:
        column = self.resolve(item.path)
        kind = category(column.field)
        if kind == "compound":
            raise self._invalid(
                item.path, f"field '{column.name}' can not be sorted in a query"
            )
        get = column.getter
        lower = kind in ("text", "multi")
        # Python sorts (flag, value); reverse=True flips the flag too, so the
        # flag that puts nulls where asked depends on the direction.
        null_flag = 1 if item.nulls_last != item.descending else 0
        null_key = (null_flag, 0)
        value_flag = 1 - null_flag

        def key(record: Record) -> Any:
            value = get(record)
            if value is None:
                return null_key
            return (value_flag, value.lower() if lower else value)

        return key, item.descending

    # -- running

    def run(self) -> list[Record]:
        """The matching rows, ordered, after OFFSET and LIMIT.

        The rows are a snapshot: the org replaces a row on every write rather
        than changing it, and ``list()`` of a dict's values runs without
        releasing the GIL, so no write lands half-way through the copy."""
        rows: list[Record] = list(self.table.rows.values())
        predicate = self.predicate
        if not self.include_deleted:
            live = self.table.live
            rows = [r for r in rows if live(r) and (predicate is None or predicate(r))]
        elif predicate is not None:
            rows = list(filter(predicate, rows))
        for key, descending in reversed(self.ordering):  # stable: last key first
            rows.sort(key=key, reverse=descending)
        start = self.query.offset or 0
        stop = None if self.query.limit is None else start + self.query.limit
        if start or stop is not None:
            rows = rows[start:stop]
        return rows

    def flat(self, record: Record) -> tuple[Any, ...]:
        """One Bulk-style row: values in ``column_names`` order."""
        return tuple(column.getter(record) for column in self.columns)

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def rest(self, record: Record) -> dict[str, Any]:
        """One REST row: ``attributes`` then the selected fields, parents nested."""
        return self._rest_node(self._tree, record)

    def _rest_node(self, node: _Node, record: Record) -> dict[str, Any]:
        name = node.table.obj.name
        url = f"/services/data/v{self.version}/sobjects/{name}/{record[0]}"
        row: dict[str, Any] = {"attributes": {"type": name, "url": url}}
        for key, getter, parent_node in node.entries:
            if parent_node is None:
                row[key] = getter(record)
                continue
            parent_id = getter(record)
            parent = (
                None if parent_id is None else self.parent(parent_node.table, parent_id)
            )
            row[key] = None if parent is None else self._rest_node(parent_node, parent)
        return row

    def _rest_tree(self) -> _Node:
        root = _Node(self.table)
        for column in self.columns:
            node, table = root, self.table
            for reference, target in column.hops:
                key = str(reference.relationship_name)
                node = node.child(key, self._local_getter(table, reference), target)
                table = target
            if all(entry[0] != column.field.name for entry in node.entries):
                getter = self._local_getter(table, column.field)
                node.entries.append((column.field.name, getter, None))
        return root


def plan(
    query: Query,
    org: Org,
    include_deleted: bool = False,
    version: str = "60.0",
) -> Plan:
    """Bind ``query`` to ``org``; ApiError INVALID_TYPE / INVALID_FIELD /
    INVALID_QUERY_FILTER_OPERATOR when the schema disagrees with it."""
    return Plan(query, org, include_deleted, version)


def execute(
    query: Query | str,
    org: Org,
    include_deleted: bool = False,
    shape: Literal["rest", "flat"] = "rest",
    version: str = "60.0",
) -> tuple[int, Iterator[Any]]:
    """``(total_size, rows)``: REST dicts or flat tuples, built lazily.

    ``COUNT()`` gives the count as total_size and no rows."""
    if isinstance(query, str):
        query = parse(query)
    bound = Plan(query, org, include_deleted, version)
    records = bound.run()
    if query.count:
        return len(records), iter(())
    make = bound.rest if shape == "rest" else bound.flat
    return len(records), map(make, records)


# --------------------------------------------------------------------------
# closures: each builds the per-record test for one comparison


def _relationship(obj: ObjectDef, name: str) -> FieldDef | None:
    lowered = name.lower()
    for candidate in obj.fields.values():
        if (
            candidate.relationship_name is not None
            and candidate.relationship_name.lower() == lowered
        ):
            return candidate
    return None


def _combine(op: str, predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        if op == "AND":
            return lambda record: first(record) and second(record)
        return lambda record: first(record) or second(record)
    if op == "AND":
        return lambda record: all(p(record) for p in predicates)
    return lambda record: any(p(record) for p in predicates)


def _scalar(get: Getter, op: str, target: Any, lower: bool) -> Predicate:
    """``field <op> literal``; text compares lower-cased. Null semantics: only
    ``!=`` is true for a null value; ``= null`` / ``!= null`` test for it."""
    if target is None:
        if op == "=":
            return lambda record: get(record) is None
        if op == "!=":
            return lambda record: get(record) is not None
        return lambda record: False
    if lower:
        return _scalar_text(get, op, target)
    if op == "=":
        return lambda record: get(record) == target
    if op == "!=":
        return lambda record: get(record) != target
    test = _ORDERED[op]
    return lambda record: (value := get(record)) is not None and test(value, target)


def _scalar_text(get: Getter, op: str, target: str) -> Predicate:
    if op == "=":
        return lambda record: (v := get(record)) is not None and v.lower() == target
    if op == "!=":
        return lambda record: (v := get(record)) is None or v.lower() != target
    test = _ORDERED[op]
    return lambda record: (v := get(record)) is not None and test(v.lower(), target)


_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _in_range(get: Getter, op: str, bounds: tuple[str, str]) -> Predicate:
    """A date literal denotes ``[start, end)``; see the module docstring."""
    start, end = bounds

    def inside(record: Record) -> bool:
        value = get(record)
        return value is not None and start <= value < end

    if op == "=":
        return inside
    if op == "!=":
        return lambda record: not inside(record)
    bound, test = {
        "<": (start, _ORDERED["<"]),
        "<=": (end, _ORDERED["<"]),
        ">": (end, _ORDERED[">="]),
        ">=": (start, _ORDERED[">="]),
    }[op]
    return lambda record: (value := get(record)) is not None and test(value, bound)


def _member(get: Getter, positive: bool, targets: list[Any], lower: bool) -> Predicate:
    wanted = frozenset(t for t in targets if t is not None)
    with_null = len(wanted) < len(targets)

    def member(record: Record) -> bool:
        value = get(record)
        if value is None:
            return with_null
        return (value.lower() if lower else value) in wanted

    if positive:
        return member
    return lambda record: not member(record)


def _includes(get: Getter, positive: bool, targets: list[Any]) -> Predicate:
    """Multi-select picklists: ``INCLUDES ('a;b', 'c')`` is (a and b) or c."""
    wanted = [frozenset(p.strip() for p in t.split(";")) for t in targets if t]

    def includes(record: Record) -> bool:
        value = get(record)
        if not value:
            return False
        chosen = {p.strip().lower() for p in value.split(";")}
        return any(w <= chosen for w in wanted)

    if positive:
        return includes
    return lambda record: not includes(record)


def _like(get: Getter, pattern: re.Pattern[str]) -> Predicate:
    match = pattern.fullmatch
    return lambda record: (v := get(record)) is not None and match(v) is not None


def _like_regex(raw: str) -> re.Pattern[str]:
    """A LIKE pattern as a regex: ``%`` any run, ``_`` one character, ``\\%``
    and ``\\_`` themselves, other escapes as in string literals."""
    out = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw):
            escaped = raw[index + 1]
            out.append(re.escape(_ESCAPES.get(escaped, escaped)))
            index += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    return re.sub(
        r"\\(u[0-9a-fA-F]{4}|.)",
        lambda m: (
            chr(int(m.group(1)[1:], 16))
            if len(m.group(1)) == 5
            else _ESCAPES.get(m.group(1), m.group(0))
        ),
        raw,
    )


def _date_range(literal: str, now: dt.datetime, as_datetime: bool) -> tuple[str, str]:
    """``[start, end)`` of a date literal in the stored form of the field.

    Days are UTC days (the emulator's users all live in UTC); weeks start on
    Sunday, as in the en_US locale."""
    today = now.astimezone(dt.UTC).date()
    name, _, count = literal.partition(":")
    start, end = _day_span(name, int(count or 0), today)
    if not as_datetime:
        return start.isoformat(), end.isoformat()
    return (
        start.isoformat() + "T00:00:00.000+0000",
        end.isoformat() + "T00:00:00.000+0000",
    )


def _day_span(name: str, n: int, today: dt.date) -> tuple[dt.date, dt.date]:
    day = dt.timedelta(days=1)
    week_start = today - dt.timedelta(days=(today.weekday() + 1) % 7)
    month_start = today.replace(day=1)
    year_start = today.replace(month=1, day=1)
    spans = {
        "TODAY": (today, today + day),
        "YESTERDAY": (today - day, today),
        "TOMORROW": (today + day, today + 2 * day),
        "LAST_N_DAYS": (today - n * day, today + day),
        "NEXT_N_DAYS": (today + day, today + (n + 1) * day),
        "N_DAYS_AGO": (today - n * day, today - (n - 1) * day),
        "THIS_WEEK": (week_start, week_start + 7 * day),
        "LAST_WEEK": (week_start - 7 * day, week_start),
        "NEXT_WEEK": (week_start + 7 * day, week_start + 14 * day),
        "THIS_MONTH": (month_start, _add_months(month_start, 1)),
        "LAST_MONTH": (_add_months(month_start, -1), month_start),
        "NEXT_MONTH": (_add_months(month_start, 1), _add_months(month_start, 2)),
        "THIS_YEAR": (year_start, year_start.replace(year=today.year + 1)),
        "LAST_YEAR": (year_start.replace(year=today.year - 1), year_start),
        "NEXT_YEAR": (
            year_start.replace(year=today.year + 1),
            year_start.replace(year=today.year + 2),
        ),
    }
    return spans[name]


def _add_months(first_of_month: dt.date, months: int) -> dt.date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)
