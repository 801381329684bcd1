"""The trigger that marks an application's changes to a mapped row ``pending``.

Protocol between the two sync directions (see ``processors/pg_to_sf.py``):
a row an application inserts or updates gets ``_sync_state = 'pending'``
and ``_sync_at = now()`` from a BEFORE INSERT OR UPDATE trigger. Writes
forcelink makes itself (Salesforce changes applied to Postgres, sfid
write-backs, state updates) run in a session carrying a replication origin
(``connector.postgres.setup.apply_session_origin``), and the trigger leaves
those rows alone, so they keep the state forcelink gives them.

The trigger function is SECURITY DEFINER: an application role without
rights on the ``pg_replication_origin_*`` functions can still fire it. Its
``search_path`` is pinned, as every SECURITY DEFINER function's must be, so
a caller cannot slip in its own ``now()``.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from forcelink.connector.postgres.setup import split_table

log = logging.getLogger("forcelink.processors.triggers")

FUNCTION = "forcelink.mark_pending"
TRIGGER = "forcelink_mark_pending"

_FUNCTION_DDL = """
CREATE OR REPLACE FUNCTION forcelink.mark_pending() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- forcelink's own sessions carry a replication origin: their rows keep
    -- the state forcelink sets.
    IF pg_catalog.pg_replication_origin_session_is_setup() THEN
        RETURN NEW;
    END IF;
    NEW._sync_state := 'pending';
    NEW._sync_at := pg_catalog.now();
    RETURN NEW;
END
$$
"""


def pending_trigger_plan(
    conn: psycopg.Connection[Any], table: str, planned: set[str] | None = None
) -> list[sql.Composed]:
    """The statements that would install the pending trigger on ``table``.

    Empty when the trigger is there. ``planned`` collects what earlier
    plans of the same run already include, so the shared function is
    created once however many tables need it.
    """
    planned = set() if planned is None else planned
    schema, name = split_table(table)
    statements: list[sql.Composed] = []
    if FUNCTION not in planned and not _function_exists(conn):
        planned.add(FUNCTION)
        statements.append(
            sql.Composed([sql.SQL("CREATE SCHEMA IF NOT EXISTS forcelink")])
        )
        statements.append(sql.Composed([sql.SQL(_FUNCTION_DDL.strip())]))
    if not _trigger_exists(conn, schema, name):
        statements.append(
            sql.SQL(
                "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {}.{}"
                " FOR EACH ROW EXECUTE FUNCTION forcelink.mark_pending()"
            ).format(
                sql.Identifier(TRIGGER), sql.Identifier(schema), sql.Identifier(name)
            )
        )
    return statements


def ensure_pending_trigger(conn: psycopg.Connection[Any], table: str) -> bool:
    """Install the pending trigger on ``table`` (``schema.table``); idempotent.

    Returns True when the trigger was created now. Commits its own work
    (a savepoint if the caller has a transaction open). The table must have
    the ``_sync_state`` and ``_sync_at`` columns ``forcelink.mapping.apply``
    creates.
    """
    with conn.transaction():
        statements = pending_trigger_plan(conn, table)
        for statement in statements:
            conn.execute(statement)
    if statements:
        log.info("pending trigger installed on %s", table)
    return bool(statements)


def _function_exists(conn: psycopg.Connection[Any]) -> bool:
    found = conn.execute(
        "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'forcelink' AND p.proname = 'mark_pending'"
    ).fetchone()
    return found is not None


def _trigger_exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
        (schema, name, TRIGGER),
    ).fetchone()
    return found is not None
