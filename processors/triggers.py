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


def ensure_pending_trigger(conn: psycopg.Connection[Any], table: str) -> bool:
    """Install the pending trigger on ``table`` (``schema.table``); idempotent.

    Returns True when the trigger was created now. Commits its own work
    (a savepoint if the caller has a transaction open). The table must have
    the ``_sync_state`` and ``_sync_at`` columns ``forcelink.mapping.apply``
    creates.
    """
    schema, name = split_table(table)
    with conn.transaction():
        conn.execute("CREATE SCHEMA IF NOT EXISTS forcelink")
        conn.execute(_FUNCTION_DDL)
        exists = conn.execute(
            "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
            (schema, name, TRIGGER),
        ).fetchone()
        if exists is not None:
            return False
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {}.{}"
                " FOR EACH ROW EXECUTE FUNCTION forcelink.mark_pending()"
            ).format(
                sql.Identifier(TRIGGER), sql.Identifier(schema), sql.Identifier(name)
            )
        )
    log.info("pending trigger installed on %s.%s", schema, name)
    return True
