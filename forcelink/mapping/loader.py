"""Read mapping files, check them against the org, build ``Mapping`` objects.

``check_mappings`` collects every problem it finds, each a ``ConfigError``
whose text is ``file:line: message``; ``load_mappings`` raises them together
as one ``MappingErrors``. A file holds one mapping (the keys below at the
top level) or several under ``mappings:`` (a top-level ``org:`` is then the
default of each). The format is documented in ``docs/mappings.md``.
"""

from __future__ import annotations

import difflib
import glob
import re
from collections.abc import Iterable
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from forcelink.db import MAPPED_SCHEMA
from forcelink.errors import ConfigError
from forcelink.mapping import types
from forcelink.mapping.describe import (
    SYSTEM_READ_ONLY,
    Describe,
    DescribeProvider,
    SchemaDescribe,
    fields_by_name,
    object_names,
)
from forcelink.mapping.model import (
    DIRECTIONS,
    MODES,
    POLICIES,
    TRANSFORMS,
    Direction,
    FieldMapping,
    Mapping,
    Mode,
)
from forcelink.mapping.soql import check_filter

MAPPING_KEYS = (
    "org",
    "object",
    "table",
    "mode",
    "upsert_key",
    "soql_filter",
    "conflict_policy",
    "fields",
)
FIELD_KEYS = ("column", "type", "transform", "direction", "parent_key", "parent_column")
RESERVED_COLUMNS = ("id", "_sync_state", "_sync_error", "_sync_at")
SYSTEM_COLUMNS = {
    "Id": "sfid",
    "SystemModstamp": "systemmodstamp",
    "IsDeleted": "isdeleted",
}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

Describers = DescribeProvider | MappingType[str | None, DescribeProvider] | None


class MappingErrors(ConfigError):
    """Every problem found in a set of mapping files, one ``file:line:`` line each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def load_mappings(
    paths: Iterable[str | Path], describe: Describers = None
) -> list[Mapping]:
    """Load and check mapping files; raise ``MappingErrors`` listing every problem.

    ``paths`` may name files, folders (their ``*.yaml``) and glob patterns.
    ``describe`` tells the fields of each object: a describe provider, a
    dict of them keyed by org name (key None: any other org), or None for
    the emulator's default schema (offline).
    """
    mappings, errors = check_mappings(paths, describe)
    if errors:
        raise MappingErrors(errors)
    return mappings


def check_mappings(
    paths: Iterable[str | Path], describe: Describers = None
) -> tuple[list[Mapping], list[ConfigError]]:
    """The mappings that are fine, and the errors of those that are not."""
    files = expand_paths(paths)
    errors: list[ConfigError] = []
    if not files:
        errors.append(ConfigError("no mapping files found"))
    mappings: list[Mapping] = []
    for file in files:
        reader = _FileReader(str(file), _providers(describe))
        mappings.extend(reader.read())
        errors.extend(reader.errors)
    errors.extend(_check_unique(mappings))
    return mappings, errors


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, the ``*.yaml``/``*.yml`` in folders named, glob matches; sorted."""
    found: list[Path] = []
    for entry in paths:
        text = str(entry)
        if glob.has_magic(text):
            found.extend(Path(p) for p in sorted(glob.glob(text)))
        elif Path(text).is_dir():
            found.extend(
                sorted([*Path(text).glob("*.yaml"), *Path(text).glob("*.yml")])
            )
        else:
            found.append(Path(text))
    return list(dict.fromkeys(found))


def _providers(describe: Describers) -> dict[str | None, DescribeProvider]:
    """Provider per org name; the None key answers for any org not listed."""
    if describe is None:
        return {None: SchemaDescribe()}
    if isinstance(describe, MappingType):
        return dict(describe)
    return {None: describe}


def _check_unique(mappings: list[Mapping]) -> list[ConfigError]:
    errors = []
    seen_objects: dict[tuple[str, str], Mapping] = {}
    seen_tables: dict[str, Mapping] = {}
    for m in mappings:
        first = seen_objects.setdefault((m.org, m.object.lower()), m)
        if first is not m:
            errors.append(_dup(m, f"{m.org}/{m.object} is already mapped", first))
        other = seen_tables.setdefault(m.table, m)
        if other is not m and first is m:
            errors.append(_dup(m, f"table {m.table} is already mapped", other))
    return errors


def _dup(m: Mapping, message: str, first: Mapping) -> ConfigError:
    return ConfigError(
        f"{message} at {first.file}:{first.line}", file=m.file, line=m.line
    )


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest choice, ignoring case, or ''."""
    lowered = {c.lower(): c for c in choices}
    guess = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[guess[0]]!r}?)" if guess else ""


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass
class _Spec:
    """One mapping's keys as written, each with its node (for line numbers)."""

    node: yaml.MappingNode
    values: dict[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)

    def text(self, key: str) -> str | None:
        entry = self.values.get(key)
        if entry is None or entry[1].tag.endswith(":null"):
            return None
        return str(entry[1].value) if isinstance(entry[1], yaml.ScalarNode) else None

    def line(self, key: str) -> int:
        entry = self.values.get(key)
        return _line(entry[1]) if entry else _line(self.node)


class _FileReader:
    """Reads one file; every problem is appended to ``errors``, never raised."""

    def __init__(
        self, file: str, providers: dict[str | None, DescribeProvider]
    ) -> None:
        self.file = file
        self.providers = providers
        self.errors: list[ConfigError] = []

    def error(self, line: int, message: str) -> None:
        self.errors.append(ConfigError(message, file=self.file, line=line))

    def read(self) -> list[Mapping]:
        root = self._compose()
        if root is None:
            return []
        if not isinstance(root, yaml.MappingNode):
            self.error(_line(root), "a mapping file holds a mapping (key: value lines)")
            return []
        keys = {str(k.value): (k, v) for k, v in root.value}
        if "mappings" not in keys:
            built = self._mapping(root, default_org=None)
            return [built] if built else []
        return self._many(keys)

    def _compose(self) -> yaml.Node | None:
        try:
            text = Path(self.file).read_text(encoding="utf-8")
        except OSError as error:
            self.error(0, f"cannot read: {error.strerror}")
            return None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark else 0
            self.error(line, f"YAML syntax error: {error.problem or error.context}")
            return None
        if node is None:
            self.error(1, "the file is empty")
        return node

    def _many(self, keys: dict[str, tuple[yaml.Node, yaml.Node]]) -> list[Mapping]:
        for name, (key_node, _) in keys.items():
            if name not in ("mappings", "org"):
                self.error(_line(key_node), f"unknown key {name!r} beside mappings:")
        org_entry = keys.get("org")
        default_org = str(org_entry[1].value) if org_entry else None
        items = keys["mappings"][1]
        if not isinstance(items, yaml.SequenceNode):
            self.error(_line(items), "mappings: must be a list of mappings")
            return []
        built = [self._mapping(item, default_org) for item in items.value]
        return [m for m in built if m is not None]

    # ---------------------------------------------------------------- mapping

    def _mapping(self, node: yaml.Node, default_org: str | None) -> Mapping | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(_line(node), "a mapping must be a set of key: value lines")
            return None
        spec = self._spec(node)
        org = spec.text("org") or default_org
        obj = spec.text("object")
        for key, value in (
            ("org", org),
            ("object", obj),
            ("fields", spec.values.get("fields")),
        ):
            if value is None:
                self.error(_line(node), f"missing required key {key!r}")
        mode = self._choice(spec, "mode", MODES, "read_only")
        policy = self._choice(spec, "conflict_policy", POLICIES, "salesforce_wins")
        schema, table = self._table(spec, obj)
        if org is None or obj is None or "fields" not in spec.values:
            return None

        provider = self.providers.get(org) or self.providers.get(None)
        described = provider(obj) if provider else None
        if described is None:
            known = object_names(provider) if provider else []
            self.error(
                spec.line("object"),
                f"unknown object {obj!r} in org {org!r}{suggest(obj, known)}",
            )
            return None
        assert provider is not None
        context = _Context(self, described, provider, mode or "read_only")
        fields = context.fields(spec.values["fields"][1])
        upsert_key = self._upsert_key(spec, context, fields, mode)
        soql_filter = spec.text("soql_filter")
        if soql_filter is not None:
            for message in check_filter(soql_filter, described, provider):
                self.error(spec.line("soql_filter"), message)
        if mode is None or policy is None or schema is None or table is None:
            return None
        return Mapping(
            org=org,
            object=str(described["name"]),
            schema=schema,
            table_name=table,
            mode=mode,
            fields=tuple(fields),
            upsert_key=upsert_key,
            soql_filter=soql_filter,
            conflict_policy=policy,
            file=self.file,
            line=_line(node),
        )

    def _spec(self, node: yaml.MappingNode) -> _Spec:
        spec = _Spec(node)
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in MAPPING_KEYS:
                self.error(
                    _line(key_node), f"unknown key {key!r}{suggest(key, MAPPING_KEYS)}"
                )
            elif key in spec.values:
                self.error(_line(key_node), f"{key!r} is given twice")
            else:
                spec.values[key] = (key_node, value_node)
        return spec

    def _choice(
        self, spec: _Spec, key: str, allowed: tuple[Any, ...], default: Any
    ) -> Any:
        value = spec.text(key)
        if value is None:
            return default
        if value not in allowed:
            self.error(
                spec.line(key),
                f"{key} must be one of {', '.join(allowed)} (got {value!r})"
                + suggest(value, allowed),
            )
            return None
        return value

    def _table(self, spec: _Spec, obj: str | None) -> tuple[str | None, str | None]:
        written = spec.text("table") or (obj.lower() if obj else None)
        if written is None:
            return None, None
        schema, _, table = written.rpartition(".")
        schema = schema or MAPPED_SCHEMA
        for name in (schema, table):
            if not _IDENTIFIER.match(name):
                self.error(
                    spec.line("table"),
                    f"table {written!r}: names are lower-case letters, digits and _ "
                    "(as Heroku Connect makes them)",
                )
                return None, None
        return schema, table

    def _upsert_key(
        self,
        spec: _Spec,
        context: _Context,
        fields: list[FieldMapping],
        mode: Mode | None,
    ) -> str | None:
        key = spec.text("upsert_key")
        if key is None:
            if mode == "read_write":
                self.error(
                    spec.line("mode"),
                    "read_write needs upsert_key: an external id field, so records "
                    "written from Postgres are matched, not duplicated",
                )
            return None
        found = context.describe_field(key)
        if found is None:
            self.error(
                spec.line("upsert_key"), context.unknown_field(key, "upsert_key")
            )
            return None
        name = str(found["name"])
        if not (found.get("externalId") or found.get("idLookup")):
            self.error(
                spec.line("upsert_key"),
                f"upsert_key {name} is not an external id field",
            )
        if not any(f.field == name and f.parent_key is None for f in fields):
            self.error(
                spec.line("upsert_key"),
                f"upsert_key {name} must also be mapped under fields:",
            )
        return name


class _Context:
    """Checks the ``fields:`` of one mapping against its object's describe."""

    def __init__(
        self,
        reader: _FileReader,
        described: Describe,
        provider: DescribeProvider,
        mode: Mode,
    ) -> None:
        self.reader = reader
        self.described = described
        self.provider = provider
        self.mode = mode
        self.by_name = fields_by_name(described)
        self.columns: dict[str, str] = {c: "forcelink" for c in RESERVED_COLUMNS}
        self.seen: set[str] = set()

    def describe_field(self, name: str) -> dict[str, Any] | None:
        return self.by_name.get(name.lower())

    def unknown_field(self, name: str, where: str = "") -> str:
        choices = [str(f["name"]) for f in self.by_name.values()]
        prefix = f"{where}: " if where else ""
        return f"{prefix}unknown field {name!r} on {self.described['name']}" + suggest(
            name, choices
        )

    def fields(self, node: yaml.Node) -> list[FieldMapping]:
        out = [self._system(name, column) for name, column in SYSTEM_COLUMNS.items()]
        for column in SYSTEM_COLUMNS.values():
            self.columns[column] = "forcelink"
        if not isinstance(node, yaml.MappingNode):
            self.reader.error(_line(node), "fields: must map field names to columns")
            return out
        for key_node, value_node in node.value:
            out.extend(self._entry(str(key_node.value), key_node, value_node))
        return out

    def _system(self, name: str, column: str) -> FieldMapping:
        sf_type = {"Id": "id", "SystemModstamp": "datetime", "IsDeleted": "boolean"}[
            name
        ]
        return FieldMapping(
            field=name,
            column=column,
            sf_type=sf_type,
            column_type=types.default_column_type(sf_type),
            direction="to_postgres",
            system=True,
        )

    def _entry(
        self, name: str, key_node: yaml.Node, value: yaml.Node
    ) -> list[FieldMapping]:
        line = _line(key_node)
        found = self.describe_field(name)
        if found is None:
            self.reader.error(line, self.unknown_field(name))
            return []
        name = str(found["name"])
        if name.lower() in self.seen:
            self.reader.error(line, f"field {name} is mapped twice")
            return []
        self.seen.add(name.lower())
        block = self._block(value)
        if block is None:
            return []
        if name in SYSTEM_COLUMNS:
            if (
                block.get("column", SYSTEM_COLUMNS[name]) != SYSTEM_COLUMNS[name]
                or len(block) > 1
            ):
                self.reader.error(
                    line, f"{name} is always mapped to column {SYSTEM_COLUMNS[name]}"
                )
            return []
        direction = self._direction(name, block, line, found)
        if direction is None:
            return []
        if found["type"] == "address":
            return self._address(name, block, line, direction)
        built = self._field(name, found, block, line, direction)
        if built is None:
            return []
        parent = (
            self._parent(found, block, line, direction)
            if "parent_key" in block
            else None
        )
        return [built] if parent is None else [built, parent]

    def _block(self, value: yaml.Node) -> dict[str, Any] | None:
        """``Field:``, ``Field: column`` or ``Field: {column:, type:, ...}``."""
        line = _line(value)
        if isinstance(value, yaml.ScalarNode):
            if value.tag.endswith(":null"):
                return {}
            return {"column": str(value.value), "_lines": {"column": line}}
        if not isinstance(value, yaml.MappingNode):
            self.reader.error(line, "a field maps to a column name or a block")
            return None
        block: dict[str, Any] = {"_lines": {}}
        for key_node, item in value.value:
            key = str(key_node.value)
            if key not in FIELD_KEYS:
                self.reader.error(
                    _line(key_node),
                    f"unknown field key {key!r}{suggest(key, FIELD_KEYS)}",
                )
                continue
            block[key] = None if item.tag.endswith(":null") else _construct(item)
            block["_lines"][key] = _line(item)
        return block

    def _direction(
        self, name: str, block: dict[str, Any], line: int, found: dict[str, Any]
    ) -> Direction | None:
        written = block.get("direction")
        where = block.get("_lines", {}).get("direction", line)
        if written is not None and written not in DIRECTIONS:
            self.reader.error(
                where,
                f"direction must be one of {', '.join(DIRECTIONS)} (got {written!r})",
            )
            return None
        by_mode: Direction = {
            "read_only": "to_postgres",
            "write_only": "to_salesforce",
            "read_write": "both",
        }[self.mode]  # type: ignore[assignment]  # the dict's values are Directions
        if name in SYSTEM_READ_ONLY:
            by_mode = "to_postgres"
        direction: Direction = written or by_mode
        if by_mode != "both" and direction not in (by_mode,) and written is not None:
            self.reader.error(
                where, f"direction {written} does not fit mode {self.mode}"
            )
            return None
        writes = direction in ("both", "to_salesforce")
        if writes and found["type"] != "address" and not found.get("updateable", True):
            self.reader.error(
                line,
                f"{name} is not updateable: it cannot be written in mode {self.mode} "
                "(add `direction: to_postgres` to only read it)",
            )
            return None
        return direction

    def _address(
        self, name: str, block: dict[str, Any], line: int, direction: Direction
    ) -> list[FieldMapping]:
        if set(block) - {"_lines", "direction"}:
            self.reader.error(
                line,
                f"{name} is compound: it maps to its components' columns; "
                "list a component (e.g. its Street) to name its column",
            )
            return []
        parts = [f for f in self.by_name.values() if f.get("compoundFieldName") == name]
        out = []
        for part in parts:
            if str(part["name"]).lower() in self.seen:
                continue
            self.seen.add(str(part["name"]).lower())
            built = self._field(str(part["name"]), part, {}, line, direction)
            if built is not None:
                out.append(built)
        return out

    def _field(
        self,
        name: str,
        found: dict[str, Any],
        block: dict[str, Any],
        line: int,
        direction: Direction,
    ) -> FieldMapping | None:
        lines = block.get("_lines", {})
        sf_type = str(found["type"])
        column = self._column(
            block.get("column") or name.lower(), lines.get("column", line), name
        )
        column_type = self._type(
            found, block.get("type"), lines.get("type", line), name
        )
        transform = self._transform(
            block.get("transform"), lines.get("transform", line), sf_type
        )
        if column is None or column_type is None or transform is False:
            return None
        compound = found.get("compoundFieldName")
        return FieldMapping(
            field=name,
            column=column,
            sf_type=sf_type,
            column_type=column_type,
            direction=direction,
            transform=str(transform) if transform else None,
            compound=str(compound) if compound else None,
            component=name[len(str(compound)) - len("Address") :] if compound else None,
            line=line,
        )

    def _column(self, written: Any, line: int, name: str) -> str | None:
        column = str(written)
        if not _IDENTIFIER.match(column):
            self.reader.error(
                line,
                f"column {column!r} for {name}: use lower-case letters, digits and _ "
                f"(e.g. {name.lower()!r})",
            )
            return None
        owner = self.columns.get(column)
        if owner is not None:
            what = (
                "is reserved for forcelink"
                if owner == "forcelink"
                else f"is already used by {owner}"
            )
            self.reader.error(line, f"duplicate column {column!r}: it {what}")
            return None
        self.columns[column] = name
        return column

    def _type(
        self, found: dict[str, Any], written: Any, line: int, name: str
    ) -> types.ColumnType | None:
        sf_type = str(found["type"])
        if written is None:
            return types.default_column_type(
                sf_type,
                int(found.get("length") or 0),
                int(found.get("precision") or 0),
                int(found.get("scale") or 0),
            )
        try:
            column_type = types.parse_column_type(str(written))
        except types.ConversionError as error:
            self.reader.error(line, f"{name}: {error}")
            return None
        allowed = types.allowed_kinds(sf_type)
        if column_type.kind not in allowed:
            self.reader.error(
                line,
                f"{name}: type {written} cannot hold a {sf_type} field without loss "
                f"(use {', '.join(sorted(allowed))})",
            )
            return None
        return column_type

    def _transform(self, written: Any, line: int, sf_type: str) -> str | bool:
        """The transform's name, '' for none, False after reporting an error."""
        if written is None:
            return ""
        if str(written) not in TRANSFORMS:
            self.reader.error(
                line,
                f"unknown transform {written!r} (known: {', '.join(TRANSFORMS)})"
                + suggest(str(written), TRANSFORMS),
            )
            return False
        if sf_type not in types.TEXT_TYPES and sf_type != "multipicklist":
            self.reader.error(line, f"transform {written} applies to text fields only")
            return False
        return str(written)

    def _parent(
        self,
        found: dict[str, Any],
        block: dict[str, Any],
        line: int,
        direction: Direction,
    ) -> FieldMapping | None:
        """The column holding the parent's external id for a lookup."""
        lines = block.get("_lines", {})
        where = lines.get("parent_key", line)
        name = str(found["name"])
        relationship = found.get("relationshipName")
        targets = found.get("referenceTo") or []
        if found["type"] != "reference" or not relationship or len(targets) != 1:
            self.reader.error(
                where, f"parent_key needs a lookup to one object ({name} is not)"
            )
            return None
        parent = self.provider(str(targets[0]))
        key_field = (
            fields_by_name(parent).get(str(block["parent_key"]).lower())
            if parent
            else None
        )
        if parent is None or key_field is None:
            self.reader.error(
                where,
                f"parent_key: unknown field {block['parent_key']!r} on {targets[0]}",
            )
            return None
        if not (key_field.get("externalId") or key_field.get("idLookup")):
            self.reader.error(
                where,
                f"parent_key {key_field['name']} is not an external id of {targets[0]}",
            )
            return None
        base = str(relationship).lower()
        base = base if base.endswith("__r") else f"{base}__r"
        default_column = f"{base}__{str(key_field['name']).lower()}"
        column = self._column(
            block.get("parent_column") or default_column,
            lines.get("parent_column", where),
            f"{name} via {relationship}.{key_field['name']}",
        )
        column_type = self._type(key_field, None, where, name)
        if column is None or column_type is None:
            return None
        return FieldMapping(
            field=name,
            column=column,
            sf_type=str(key_field["type"]),
            column_type=column_type,
            direction=direction,
            relationship=str(relationship),
            parent_key=str(key_field["name"]),
            line=where,
        )


def _construct(node: yaml.Node) -> Any:
    return SafeConstructor().construct_object(node, deep=True)
