"""Alembic environment for forcelink's bookkeeping schema.

Run through ``forcelink.db.migrate(url)`` (or ``alembic -c migrations/alembic.ini``
with ``FORCELINK_DATABASE_URL`` set). Every revision runs in one transaction
that first takes an advisory lock, so two processes starting together
migrate once: the second waits, then finds the schema already at head.

The chain is linear; each revision names the previous one in
``down_revision`` (see ``versions/README``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from forcelink.db import SCHEMA, sqlalchemy_url

# Any constant works as long as every forcelink process uses the same one:
# the bytes of "fl-migr" read as an integer.
MIGRATION_LOCK = 0x666C2D6D696772


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        url = os.environ.get("FORCELINK_DATABASE_URL", "")
    if not url:
        raise RuntimeError("no database URL: set FORCELINK_DATABASE_URL")
    return sqlalchemy_url(url)


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        literal_binds=True,
        version_table_schema=SCHEMA,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, version_table_schema=SCHEMA)
        with context.begin_transaction():
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
