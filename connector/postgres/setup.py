"""The database side of capture: slot, publication, replica identity, origins.

Everything here is idempotent and runs on an ordinary psycopg 3 connection
(autocommit or not; each call commits its own work in a transaction block,
or a savepoint when the caller already has a transaction open):

* ``ensure_slot`` creates the ``pgoutput`` logical slot if it is missing.
  A slot made later than changes it should have seen cannot recover them;
  the reader raises ``PositionLost`` when an existing slot disappears.
* ``sync_publication`` makes the publication hold exactly the given tables
  (the mapped ``read_write`` / ``write_only`` ones) and sets their REPLICA
  IDENTITY to FULL, so updates and deletes carry the whole old row: a
  delete then still names the row's ``sfid``, and processors can tell which
  columns an update really changed. The cost is WAL volume: every update
  and delete of a mapped table logs its old row too.
* ``apply_session_origin`` tags the writes forcelink's own appliers make,
  which the reader then skips (invariant 3). PostgreSQL 15 lets only one
  session use an origin at a time, so each applier session takes the first
  free name of ``forcelink``, ``forcelink_1``, ``forcelink_2``, ...; the
  reader skips all of them (``is_own_origin``).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from forcelink.errors import ConfigError

log = logging.getLogger("forcelink.connector.postgres")

MAX_ORIGIN_SESSIONS = 64
"""How many applier sessions may hold a forcelink origin at the same time."""


def split_table(name: str) -> tuple[str, str]:
    """``'crm.account'`` → ``('crm', 'account')``; a bare name is in ``public``."""
    schema, dot, table = name.rpartition(".")
    if not table:
        raise ConfigError(f"empty table name in {name!r}", key="tables")
    return (schema if dot else "public"), table


def ensure_slot(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> bool:
    """Create the logical slot ``slot`` with ``pgoutput`` unless it exists.

    Returns True when it was created now. The slot belongs to the database
    ``conn`` is connected to.
    """
    with conn.transaction():
        found = conn.execute(
            "SELECT database = current_database(), plugin"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        if found is not None:
            same_db, plugin = found
            if not same_db or plugin != "pgoutput":
                raise ConfigError(
                    f"replication slot {slot!r} exists for another database or"
                    f" plugin ({plugin}); choose another slot name",
                    key="capture.slot",
                )
            return False
    with conn.transaction():
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
        )
    log.info("created replication slot %s", slot)
    return True


def drop_slot(conn: psycopg.Connection[tuple[object, ...]], slot: str) -> None:
    """Drop ``slot`` if it exists (WAL it retained is released)."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name)"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )


def sync_publication(
    conn: psycopg.Connection[tuple[object, ...]],
    publication: str,
    tables: list[str],
    *,
    replica_identity_full: bool = True,
) -> tuple[list[str], list[str]]:
    """Make ``publication`` publish exactly ``tables``; return (added, removed).

    Creates the publication when missing. Tables are ``schema.table`` or bare
    names (``public``). Tables removed from the publication keep their
    replica identity: another publication may still rely on it.
    """
    wanted = {split_table(t) for t in tables}
    with conn.transaction():
        exists = conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)
        ).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(publication))
            )
            log.info("created publication %s", publication)
        current = {
            (str(s), str(t))
            for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables"
                " WHERE pubname = %s",
                (publication,),
            ).fetchall()
        }
        added = sorted(wanted - current)
        removed = sorted(current - wanted)
        _alter_publication(conn, publication, "ADD", added)
        _alter_publication(conn, publication, "DROP", removed)
        if replica_identity_full:
            for schema, table in sorted(wanted):
                conn.execute(
                    sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                )
    if added or removed:
        log.info(
            "publication %s: added %s, removed %s",
            publication,
            [f"{s}.{t}" for s, t in added],
            [f"{s}.{t}" for s, t in removed],
        )
    return [f"{s}.{t}" for s, t in added], [f"{s}.{t}" for s, t in removed]


def _alter_publication(
    conn: psycopg.Connection[tuple[object, ...]],
    publication: str,
    action: str,
    tables: list[tuple[str, str]],
) -> None:
    if not tables:
        return
    names = sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t)) for s, t in tables
    )
    conn.execute(
        sql.SQL("ALTER PUBLICATION {} {} TABLE {}").format(
            sql.Identifier(publication), sql.SQL(action), names
        )
    )


def retained_wal_bytes(
    conn: psycopg.Connection[tuple[object, ...]], slot: str
) -> int | None:
    """WAL bytes the slot keeps on disk (current position - restart_lsn).

    None when the slot does not exist. This is what grows without bound
    when the reader stops confirming: the number to alert on.
    """
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    if row is None or row[0] is None:
        return None
    return int(str(row[0]))


def is_own_origin(origin: str, name: str = "forcelink") -> bool:
    """True for the origin names ``apply_session_origin(conn, name)`` hands out."""
    return origin == name or (
        origin.startswith(name + "_") and origin[len(name) + 1 :].isdigit()
    )


_CREATE_ORIGIN = (
    "SELECT pg_replication_origin_create(%s) WHERE NOT EXISTS"
    " (SELECT 1 FROM pg_replication_origin WHERE roname = %s)"
)
_TAKE_ORIGIN = "SELECT pg_replication_origin_session_setup(%s)"


def _origin_names(name: str) -> list[str]:
    return [name] + [f"{name}_{index}" for index in range(1, MAX_ORIGIN_SESSIONS)]


def _origins_exhausted(name: str) -> ConfigError:
    return ConfigError(
        f"all {MAX_ORIGIN_SESSIONS} replication origins {name}_* are in use;"
        " fewer applier connections are needed",
        key="capture.origin",
    )


def apply_session_origin(
    conn: psycopg.Connection[tuple[object, ...]], name: str = "forcelink"
) -> str:
    """Tag every later write on ``conn`` with a forcelink replication origin.

    Appliers call this once per connection, before writing changes that came
    from Salesforce (or sfid write-backs); the reader then skips those
    transactions. Returns the origin name taken (``name`` or ``name_<n>``).
    Needs superuser, or EXECUTE on the ``pg_replication_origin_*`` functions.
    """
    for candidate in _origin_names(name):
        try:
            with conn.transaction():
                conn.execute(_CREATE_ORIGIN, (candidate, candidate))
        except psycopg.errors.UniqueViolation:
            pass  # another session created it between our check and insert
        try:
            with conn.transaction():
                conn.execute(_TAKE_ORIGIN, (candidate,))
        except psycopg.errors.ObjectInUse:
            continue  # held by another applier session: try the next name
        log.debug("session tagged with replication origin %s", candidate)
        return candidate
    raise _origins_exhausted(name)


async def apply_session_origin_async(
    conn: psycopg.AsyncConnection[tuple[object, ...]], name: str = "forcelink"
) -> str:
    """``apply_session_origin`` for an asyncio connection (same contract)."""
    for candidate in _origin_names(name):
        try:
            async with conn.transaction():
                await conn.execute(_CREATE_ORIGIN, (candidate, candidate))
        except psycopg.errors.UniqueViolation:
            pass
        try:
            async with conn.transaction():
                await conn.execute(_TAKE_ORIGIN, (candidate,))
        except psycopg.errors.ObjectInUse:
            continue
        log.debug("session tagged with replication origin %s", candidate)
        return candidate
    raise _origins_exhausted(name)


def emit_heartbeat(conn: psycopg.Connection[tuple[object, ...]], prefix: str) -> None:
    """Write a non-transactional logical message the slot's reader will see.

    It lets the reader confirm a fresh position on an idle publication, so
    the slot stops retaining WAL that other databases keep writing.
    """
    with conn.transaction():
        conn.execute("SELECT pg_logical_emit_message(false, %s, '')", (prefix,))
