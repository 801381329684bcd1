"""forcelink's own database plumbing: migrations and connections.

``migrate(url)`` brings the ``forcelink`` bookkeeping schema to the newest
revision shipped inside the package (``forcelink.migrations``), whatever the
current directory is. It is safe to call from several processes at once:
the migration environment takes an advisory lock first.

URLs are accepted in the form users write them (``postgresql://...``, as
libpq and psycopg take them); SQLAlchemy needs a driver name, which
``sqlalchemy_url`` adds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.rows import dict_row

from forcelink.errors import SourceUnavailable

log = logging.getLogger("forcelink.db")

SCHEMA = "forcelink"
"""Where forcelink keeps its bookkeeping tables (and alembic's version table)."""

MAPPED_SCHEMA = "salesforce"
"""Default schema of mapped tables, as Heroku Connect users expect."""

# Alembic keeps its migration context in module globals: two threads of one
# process must not run it at once. Other processes are kept apart by the
# advisory lock env.py takes.
_alembic_lock = threading.Lock()


def migrations_dir() -> Path:
    """The folder holding ``env.py`` and ``versions/``, from the installed package."""
    import forcelink.migrations as package

    return Path(next(iter(package.__path__)))


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def alembic_config(database_url: str) -> Config:
    """An alembic ``Config`` pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ``%`` is alembic's interpolation character; a password may contain one.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on ``database_url``.

    Raises ``SourceUnavailable`` when the database cannot be reached; a
    migration that fails for another reason propagates as is (it is a bug,
    not an operating condition).
    """
    config = alembic_config(database_url)
    log.info("migrating the %s schema to %s", SCHEMA, revision)
    try:
        with _alembic_lock:
            command.upgrade(config, revision)
    except psycopg.OperationalError as error:
        raise SourceUnavailable(f"cannot reach the database: {error}") from error
    except Exception as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, psycopg.OperationalError):
            raise SourceUnavailable(f"cannot reach the database: {cause}") from error
        raise


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT to_regclass('forcelink.alembic_version') IS NOT NULL AS present"
        ).fetchone()
        if not row or not row["present"]:
            return None
        found = conn.execute("SELECT version_num FROM forcelink.alembic_version")
        version = found.fetchone()
        return str(version["version_num"]) if version else None


@contextmanager
def connect(
    database_url: str, *, autocommit: bool = False
) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A psycopg 3 connection returning rows as dicts; closed on exit.

    Without ``autocommit`` the block runs in one transaction, committed on a
    normal exit and rolled back on an exception. Failing to connect raises
    ``SourceUnavailable``.
    """
    try:
        conn = psycopg.connect(
            database_url, autocommit=autocommit, row_factory=dict_row
        )
    except psycopg.OperationalError as error:
        raise SourceUnavailable(f"cannot reach the database: {error}") from error
    with conn:
        yield conn
