"""Declarative mappings: which Salesforce fields live in which Postgres columns.

Public interface (stable; others code against it):

``load_mappings(paths, describe=None) -> list[Mapping]``
    Read and check mapping files (files, folders, globs). Raises
    ``MappingErrors`` (a ``ConfigError``) listing every problem as
    ``file:line: message``. ``describe`` is a describe provider (object name
    -> REST describe dict), a dict of them per org, or None for the
    emulator's default schema.
``check_mappings(paths, describe=None) -> (mappings, errors)``
    The same without raising, for ``forcelink mappings validate``.
``Mapping``
    org, object, table (``salesforce.account``), mode, fields
    (``FieldMapping``: field, column, sf_type, column_type, direction,
    transform), upsert_key / upsert_column, soql_filter, conflict_policy;
    ``to_columns(record, form)``, ``to_salesforce(row, form)``, ``soql()``.
``apply(database_url, mappings, allow_drop=False) -> list[str]``
    Create or alter the mapped tables; returns the statements it ran.
``diff(database_url, mappings, allow_drop=False) -> list[str]``
    The statements ``apply`` would run.
``types.dumps`` / ``types.loads``
    JSON with exact decimals, for REST bodies and answers.
``schema_describe(path)`` / ``org_describe(client)``
    Describe providers: offline from an emulator schema file, or a live org.
"""

from __future__ import annotations

from forcelink.mapping.ddl import apply, diff
from forcelink.mapping.describe import DescribeProvider, org_describe, schema_describe
from forcelink.mapping.loader import MappingErrors, check_mappings, load_mappings
from forcelink.mapping.model import (
    SYNC_STATES,
    ConflictPolicy,
    Direction,
    FieldMapping,
    Mapping,
    Mode,
)

__all__ = [
    "SYNC_STATES",
    "ConflictPolicy",
    "DescribeProvider",
    "Direction",
    "FieldMapping",
    "Mapping",
    "MappingErrors",
    "Mode",
    "apply",
    "check_mappings",
    "diff",
    "load_mappings",
    "org_describe",
    "schema_describe",
]
