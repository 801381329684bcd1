"""Which orgs forcelink knows, and how to reach each one by its name.

Two places name orgs: the ``orgs:`` list of forcelink.yaml (source
``config``) and the registry table ``forcelink.orgs``, filled by ``forcelink
orgs add`` (source ``registry``). Every part of forcelink resolves a name
through :func:`all_orgs` / :func:`connection_for`, so they all agree. When
both places name the same org, the file wins and a warning says so: the
file is what an operator edits and reviews.

A registry row keeps the connection settings in ``details``::

    {"login_url": "https://login.example.com", "client_id": "3MVG...",
     "username": "sync@example.com", "private_key_file": "/etc/fl/key.pem",
     "ca_file": null, "api_version": "60.0"}

The private key stays in its file: only the path is stored, and the key is
read (and registered as a secret) when a login needs it. Rows without
``login_url`` (bookkeeping rows other components may keep for orgs of the
file) are not registered orgs and are ignored here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from forcelink import db
from forcelink.config import Config, OrgConfig
from forcelink.connector.salesforce.auth import OrgConnection, Token, fetch_token
from forcelink.errors import ConfigError, SourceUnavailable

log = logging.getLogger("forcelink.orgs")

SOURCE_CONFIG = "config"
SOURCE_REGISTRY = "registry"


@dataclass(frozen=True)
class KnownOrg:
    """An org, where it was defined, and the instance URL last seen."""

    config: OrgConfig
    source: str
    instance_url: str | None = None


def register(database_url: str, name: str, conn: OrgConnection) -> Token:
    """Log in once with ``conn``, then store it in the registry as ``name``.

    Raises ``LoginRefused`` (the org's own words) or ``SourceUnavailable``
    before anything is stored, so a registered org is one that logged in at
    least once. Registering a name again replaces its settings.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"org name {name!r}: use letters, digits, - and _")
    token = fetch_token(conn)
    details = {
        "login_url": conn.login_url,
        "client_id": conn.client_id,
        "username": conn.username,
        "private_key_file": str(Path(conn.private_key_file).resolve()),
        "ca_file": str(Path(conn.ca_file).resolve()) if conn.ca_file else None,
        "api_version": conn.api_version,
    }
    db.migrate(database_url)
    with db.connect(database_url) as pg:
        pg.execute(
            """
            INSERT INTO forcelink.orgs (name, instance_url, details)
            VALUES (%s, %s, %s)
            ON CONFLICT (name) DO UPDATE
            SET instance_url = EXCLUDED.instance_url, details = EXCLUDED.details,
                updated_at = now()
            """,
            (name, token.instance_url or None, Jsonb(details)),
        )
    log.info("org %s registered (%s as %s)", name, conn.login_url, conn.username)
    return token


def unregister(database_url: str, name: str) -> bool:
    """Forget a registered org; False when the registry has no such name."""
    db.migrate(database_url)
    with db.connect(database_url) as pg:
        cur = pg.execute(
            "DELETE FROM forcelink.orgs WHERE name = %s AND details ? 'login_url'",
            (name,),
        )
        return cur.rowcount > 0


def registered(database_url: str) -> list[KnownOrg]:
    """The registry's orgs, by name; [] when the schema is not there yet."""
    with db.connect(database_url) as pg:
        present = pg.execute(
            "SELECT to_regclass('forcelink.orgs') IS NOT NULL AS present"
        ).fetchone()
        if not present or not present["present"]:
            return []
        rows = pg.execute(
            "SELECT name, instance_url, details FROM forcelink.orgs "
            "WHERE details ? 'login_url' ORDER BY name"
        ).fetchall()
    return [_known(row) for row in rows]


def _known(row: dict[str, Any]) -> KnownOrg:
    details = row["details"]
    org = OrgConfig(
        name=str(row["name"]),
        login_url=details.get("login_url"),
        client_id=details.get("client_id"),
        username=details.get("username"),
        private_key_file=details.get("private_key_file"),
        ca_file=details.get("ca_file"),
        api_version=str(details.get("api_version") or OrgConfig.api_version),
    )
    instance = row["instance_url"]
    return KnownOrg(org, SOURCE_REGISTRY, str(instance) if instance else None)


def known_orgs(config: Config) -> list[KnownOrg]:
    """Orgs of the file, then registered ones; a file org wins a name clash.

    An unreachable database leaves only the file's orgs, with a warning.
    """
    found = [KnownOrg(org, SOURCE_CONFIG) for org in config.orgs]
    names = {org.name for org in config.orgs}
    try:
        from_registry = registered(config.database.url)
    except (SourceUnavailable, psycopg.Error) as error:
        log.warning("org registry not readable, using the file only: %s", error)
        return found
    for entry in from_registry:
        if entry.config.name in names:
            log.warning(
                "org %s is both in %s and in the registry: the file's settings win",
                entry.config.name,
                config.source or "the configuration",
            )
            continue
        found.append(entry)
    return found


def all_orgs(config: Config) -> list[OrgConfig]:
    """Every org forcelink can reach: the file's first, then registered ones."""
    return [entry.config for entry in known_orgs(config)]


def find(config: Config, name: str) -> KnownOrg:
    """The org called ``name``; ConfigError lists the known names otherwise."""
    entries = known_orgs(config)
    for entry in entries:
        if entry.config.name == name:
            return entry
    known = ", ".join(e.config.name for e in entries) or "none"
    raise ConfigError(
        f"no org named {name!r} (known: {known}); add one with "
        "`forcelink orgs add` or under orgs: in the file",
        file=config.source,
    )


def connection_for(config: Config, name: str) -> OrgConnection:
    """How to log in to the org called ``name`` (file first, then registry)."""
    entry = find(config, name)
    conn = OrgConnection.from_config(entry.config)
    if conn.instance_url is None and entry.instance_url:
        conn = OrgConnection(
            login_url=conn.login_url,
            client_id=conn.client_id,
            username=conn.username,
            private_key_file=conn.private_key_file,
            instance_url=entry.instance_url,
            ca_file=conn.ca_file,
            api_version=conn.api_version,
        )
    return conn
