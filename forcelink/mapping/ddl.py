"""Create and alter mapped tables so they match their mappings.

``diff`` compares each mapping with the table in the database and returns
the SQL that would bring the table in line; ``apply`` runs that SQL in one
transaction and records the mapping's new version in
``forcelink.mapping_versions``. Both are idempotent: once applied, ``diff``
returns nothing.

Every mapped table has forcelink's own columns besides the mapped ones::

    id              bigint identity primary key
    sfid            varchar(18) unique      the Salesforce record id
    systemmodstamp  timestamptz
    isdeleted       boolean default false
    _sync_state     text default 'pending'  synced | pending | failed | conflict
    _sync_error     jsonb                   Salesforce's error when failed
    _sync_at        timestamptz             when the state last changed

What apply never does without ``allow_drop``: drop a column that holds
data, or change a column's type in a way that could lose what it holds.
Such changes are left out and shown in ``diff`` as ``-- kept: ...``
comments. Only columns some version of the mapping created are ever
dropped; columns the user added to a mapped table are left alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from forcelink import db
from forcelink.mapping.model import SYNC_STATES, FieldMapping, Mapping
from forcelink.mapping.types import ColumnType, parse_column_type
from forcelink.processors.triggers import pending_trigger_plan

log = logging.getLogger("forcelink.mapping")

# Any constant works if every forcelink process uses the same: "fl-map".
APPLY_LOCK = 0x666C2D6D6170

_STATES = ", ".join(f"'{s}'" for s in SYNC_STATES)
SYNC_COLUMNS: tuple[tuple[str, str], ...] = (
    (
        "_sync_state",
        f"text NOT NULL DEFAULT 'pending' CHECK (_sync_state IN ({_STATES}))",
    ),
    ("_sync_error", "jsonb"),
    ("_sync_at", "timestamptz"),
)


@dataclass
class _Plan:
    statements: list[sql.Composed]
    kept: list[tuple[int, str]]
    """What apply leaves alone: (mapping file line, reason)."""


def diff(
    database_url: str, mappings: Iterable[Mapping], allow_drop: bool = False
) -> list[str]:
    """The SQL ``apply`` would run, then ``-- kept: ...`` lines for what it won't."""
    with db.connect(database_url) as conn:
        schemas: set[str] = set()
        plans = [_plan(conn, m, allow_drop, schemas) for m in mappings]
        lines = [s.as_string(conn) + ";" for p in plans for s in p.statements]
        conn.rollback()
    return lines + [f"-- kept: {k}" for p in plans for _, k in p.kept]


def check_database(database_url: str, mapping: Mapping) -> list[tuple[int, str]]:
    """(line, reason) for each change ``apply`` would refuse without allow_drop."""
    with db.connect(database_url) as conn:
        return _plan(conn, mapping, False, set()).kept


def apply(
    database_url: str, mappings: Iterable[Mapping], allow_drop: bool = False
) -> list[str]:
    """Bring every mapped table in line with its mapping; return the SQL run.

    Migrates the bookkeeping schema first. Runs in one transaction under an
    advisory lock, so concurrent applies do the work once. A new mapping
    version is recorded only when the definition changed. Tables that
    forcelink writes to Salesforce get the trigger that marks an
    application's changes ``pending`` (``processors.triggers``).
    """
    db.migrate(database_url)
    done: list[str] = []
    with db.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPLY_LOCK,))
        for mapping in mappings:
            plan = _plan(conn, mapping, allow_drop, set())
            for statement in plan.statements:
                conn.execute(statement)
                done.append(statement.as_string(conn) + ";")
            for _, kept in plan.kept:
                log.warning("mappings apply: kept %s", kept)
            _record_version(conn, mapping)
    log.info("mappings applied: %d statement(s)", len(done))
    return done


def _plan(
    conn: psycopg.Connection[dict[str, object]],
    mapping: Mapping,
    allow_drop: bool,
    schemas: set[str],
) -> _Plan:
    """What it takes to bring one table in line; ``schemas``: already planned.

    Tables forcelink writes to Salesforce also get the trigger that marks an
    application's changes ``pending`` (``processors.triggers``).
    """
    plan = _plan_table(conn, mapping, allow_drop, schemas)
    if mapping.mode != "read_only":
        plan.statements.extend(pending_trigger_plan(conn, mapping.table, schemas))
    return plan


def _plan_table(
    conn: psycopg.Connection[dict[str, object]],
    mapping: Mapping,
    allow_drop: bool,
    schemas: set[str],
) -> _Plan:
    table = sql.Identifier(mapping.schema, mapping.table_name)
    existing = _existing_columns(conn, mapping)
    plan = _Plan([], [])
    if mapping.schema not in schemas and not _schema_exists(conn, mapping.schema):
        schemas.add(mapping.schema)
        plan.statements.append(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(mapping.schema)
            )
        )
    if existing is None:
        plan.statements.extend(_create(mapping, table))
        return plan

    for column, definition in _wanted(mapping):
        if column not in existing:
            plan.statements.append(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    table, sql.Identifier(column), sql.SQL(definition)
                )
            )
    for f in mapping.fields:
        have = existing.get(f.column)
        if have is not None and have != f.column_type.sql:
            _retype(conn, mapping, f, have, allow_drop, plan)
    for column in _dropped(conn, mapping, existing):
        if allow_drop or not _holds_data(conn, mapping, column):
            plan.statements.append(
                sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                    table, sql.Identifier(column)
                )
            )
        else:
            plan.kept.append(
                (
                    mapping.line,
                    f"{mapping.table}.{column} is no longer mapped"
                    " but holds data (drop it with --allow-drop)",
                )
            )
    return plan


def _create(mapping: Mapping, table: sql.Identifier) -> list[sql.Composed]:
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(definition))
        for name, definition in _wanted(mapping)
    ]
    statements: list[sql.Composed] = [
        sql.SQL("CREATE TABLE {} (\n    {}\n)").format(
            table, sql.SQL(",\n    ").join(columns)
        )
    ]
    index = sql.Identifier(f"{mapping.table_name}_pending")
    statements.append(
        sql.SQL(
            "CREATE INDEX {} ON {} (_sync_state) WHERE _sync_state <> 'synced'"
        ).format(index, table)
    )
    if mapping.upsert_column:
        statements.append(
            sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
                sql.Identifier(f"{mapping.table_name}_{mapping.upsert_column}_key"),
                table,
                sql.Identifier(mapping.upsert_column),
            )
        )
    return statements


def _wanted(mapping: Mapping) -> list[tuple[str, str]]:
    """Every column the table needs, with its definition, in table order."""
    special = {
        "sfid": "character varying(18) UNIQUE",
        "isdeleted": "boolean NOT NULL DEFAULT false",
    }
    columns = [("id", "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")]
    columns += [
        (f.column, special.get(f.column, f.column_type.sql)) for f in mapping.fields
    ]
    return columns + list(SYNC_COLUMNS)


def _retype(
    conn: psycopg.Connection[dict[str, object]],
    mapping: Mapping,
    f: FieldMapping,
    have: str,
    allow_drop: bool,
    plan: _Plan,
) -> None:
    table = sql.Identifier(mapping.schema, mapping.table_name)
    column, want = f.column, f.column_type
    if not (
        _widens(have, want) or allow_drop or not _holds_data(conn, mapping, column)
    ):
        reason = (
            f"{mapping.table}.{column} stays {have}: changing it to {want.sql} "
            "could lose data it holds (allow it with --allow-drop)"
        )
        plan.kept.append((f.line or mapping.line, reason))
        return
    plan.statements.append(
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
            table,
            sql.Identifier(column),
            sql.SQL(want.sql),
            sql.Identifier(column),
            sql.SQL(want.sql),
        )
    )


def _widens(have: str, want: ColumnType) -> bool:
    """True when every value of type ``have`` fits ``want`` unchanged."""
    try:
        old = parse_column_type(have)
    except ValueError:
        return False
    if old.kind == "text" and want.kind == "text":
        return want.length is None or (
            old.length is not None and old.length <= want.length
        )
    if old.kind == "numeric" and want.kind == "numeric":
        if want.precision is None:
            return True
        if old.precision is None or old.scale is None or want.scale is None:
            return False
        return want.scale >= old.scale and (want.precision - want.scale) >= (
            old.precision - old.scale
        )
    return old.sql == "integer" and want.sql == "bigint"


def _dropped(
    conn: psycopg.Connection[dict[str, object]],
    mapping: Mapping,
    existing: dict[str, str],
) -> list[str]:
    """Columns an earlier version of this mapping created that it no longer maps."""
    if not _schema_exists(conn, db.SCHEMA):
        return []
    rows = conn.execute(
        "SELECT definition FROM forcelink.mapping_versions "
        "WHERE org = %s AND object = %s",
        (mapping.org, mapping.object),
    ).fetchall()
    earlier: set[str] = set()
    for row in rows:
        definition = row["definition"]
        assert isinstance(definition, dict)
        if definition.get("table") == mapping.table:
            earlier.update(str(f["column"]) for f in definition.get("fields", []))
    current = set(mapping.columns)
    return sorted(c for c in earlier - current if c in existing)


def _existing_columns(
    conn: psycopg.Connection[dict[str, object]], mapping: Mapping
) -> dict[str, str] | None:
    """Column -> type as ``format_type`` writes it, or None if there is no table."""
    rows = conn.execute(
        "SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 "
        "AND NOT a.attisdropped AND c.relkind IN ('r', 'p')",
        (mapping.schema, mapping.table_name),
    ).fetchall()
    if not rows and not _table_exists(conn, mapping):
        return None
    return {str(r["name"]): str(r["type"]) for r in rows}


def _table_exists(
    conn: psycopg.Connection[dict[str, object]], mapping: Mapping
) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AS found", (mapping.table,)
    ).fetchone()
    return bool(row and row["found"])


def _schema_exists(conn: psycopg.Connection[dict[str, object]], schema: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s) AS found",
        (schema,),
    ).fetchone()
    return bool(row and row["found"])


def _holds_data(
    conn: psycopg.Connection[dict[str, object]], mapping: Mapping, column: str
) -> bool:
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NOT NULL) AS found"
    ).format(sql.Identifier(mapping.schema, mapping.table_name), sql.Identifier(column))
    row = conn.execute(query).fetchone()
    return bool(row and row["found"])


def _record_version(
    conn: psycopg.Connection[dict[str, object]], mapping: Mapping
) -> None:
    """Insert the mapping's definition as a new version unless it is unchanged."""
    latest = conn.execute(
        "SELECT version, checksum FROM forcelink.mapping_versions "
        "WHERE org = %s AND object = %s ORDER BY version DESC LIMIT 1",
        (mapping.org, mapping.object),
    ).fetchone()
    checksum = mapping.checksum()
    if latest and latest["checksum"] == checksum:
        return
    version = int(str(latest["version"])) + 1 if latest else 1
    conn.execute(
        "INSERT INTO forcelink.mapping_versions "
        "(org, object, version, table_name, checksum, definition) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            mapping.org,
            mapping.object,
            version,
            mapping.table,
            checksum,
            json.dumps(mapping.definition()),
        ),
    )
    log.info("mapping %s/%s is now version %d", mapping.org, mapping.object, version)
