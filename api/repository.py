"""Image metadata in Postgres: forcelink's private table and the mapped one.

Two tables hold one image:

``forcelink.images`` (migration 0003)
    What only forcelink needs: the org, the storage key, the original file
    name, the sniffed type, the annotations. Every query here filters by the
    caller's org (invariant 8).
the org's mapped ``Site_Photo__c`` table (``salesforce.site_photo__c``)
    What Salesforce shares: record, tags, description, size, dimensions,
    digest, URLs. The sync machinery moves these rows both ways, so it is
    the source of truth for tags and description: tags edited in Salesforce
    arrive here and show in search at once. A row written by the API is
    marked ``_sync_state = 'pending'`` for the sync to pick up.

The upload's ``record`` names the WorkOrder the photo belongs to, the way
the mapping relates Site_Photo__c to it: a WorkOrder id goes into the lookup
column ``work_order__c`` (it holds sfids), anything else is the WorkOrder's
external id and goes into the mapping's parent-key column
(``work_order__r__external_id__c``), which the sync sends to Salesforce as
``Work_Order__r: {External_Id__c: ...}``.

An image exists for the API while both rows exist and the mapped row is not
``isdeleted``. A delete on the Salesforce side removes or flags the mapped
row; ``orphans`` then finds images whose bytes should go.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.pool import QueuePool

from forcelink.config import Config
from forcelink.errors import SourceUnavailable

Conn = psycopg.Connection[dict[str, Any]]
TAG_SEPARATOR = ";"
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
# A WorkOrder id (key prefix 0WO, 15 or 18 characters). Anything else an
# upload names is taken for the WorkOrder's external id.
_WORK_ORDER_ID = re.compile(r"^0WO[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
WORK_ORDER_FIELD = "work_order__c"


@dataclass
class ImageRecord:
    id: str
    org: str
    storage_key: str
    filename: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    captured_at: datetime | None
    record: str | None
    tags: list[str]
    description: str
    annotations: list[dict[str, Any]]
    uploaded_by: str
    created_at: datetime
    updated_at: datetime
    sfid: str | None
    sync_state: str | None
    sync_error: Any = None


@dataclass
class NewImage:
    """Everything an upload knows, written in one transaction by ``insert``."""

    id: str
    org: str
    storage_key: str
    filename: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    orientation: int
    sha256: str
    captured_at: datetime | None
    record: str | None
    tags: list[str]
    description: str
    uploaded_by: str
    image_url: str
    thumbnail_url: str
    name: str


@dataclass
class Changes:
    """A PATCH: only the fields that are not None change."""

    tags: list[str] | None = None
    description: str | None = None
    annotations: list[dict[str, Any]] | None = None
    annotation_text: str = ""


@dataclass
class Query:
    record: str | None = None
    tag: str | None = None
    text: str | None = None
    limit: int = 50
    after: tuple[datetime, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PhotoTables:
    """Which mapped table holds each org's Site_Photo__c rows.

    From the mappings (``config.mappings``): each org's Site_Photo__c mapping
    names its table. An entry under ``api.orgs`` overrides that, and an org
    with neither uses ``DEFAULT_TABLE``. Mapping files that do not load are
    skipped here (``forcelink mappings check`` is where they get reported).
    """

    DEFAULT_TABLE = "salesforce.site_photo__c"
    DEFAULT_KEY_COLUMN = "work_order__r__external_id__c"

    def __init__(
        self,
        tables: dict[str, str],
        default: str = DEFAULT_TABLE,
        key_columns: dict[str, str | None] | None = None,
    ) -> None:
        self._tables = dict(tables)
        self._default = default
        self._key_columns = dict(key_columns or {})
        for name in [*self._tables.values(), default]:
            if not _TABLE.match(name):
                raise ValueError(f"photo table: not schema.table: {name!r}")

    @classmethod
    def from_config(cls, config: Config) -> PhotoTables:
        from forcelink.mapping.loader import check_mappings

        mappings, _problems = check_mappings(config.mappings)
        photos = [m for m in mappings if m.object.lower() == "site_photo__c"]
        tables = {m.org: m.table for m in photos}
        tables.update({org.name: org.photo_table for org in config.api.orgs})
        key_columns = {
            m.org: next(
                (
                    f.column
                    for f in m.fields
                    if f.field.lower() == WORK_ORDER_FIELD and f.parent_key
                ),
                None,
            )
            for m in photos
        }
        return cls(tables, key_columns=key_columns)

    def table(self, org: str) -> str:
        return self._tables.get(org, self._default)

    def key_column(self, org: str) -> str | None:
        """The column holding the WorkOrder's external id; None if not mapped."""
        return self._key_columns.get(org, self.DEFAULT_KEY_COLUMN)

    def record_column(self, org: str, record: str) -> str | None:
        """The column an upload's ``record`` goes to; None if none can hold it."""
        if _WORK_ORDER_ID.match(record):
            return WORK_ORDER_FIELD
        return self.key_column(org)

    def record_key(self, org: str) -> sql.Composable:
        """``p.<external-id column>``, or NULL when the mapping has none."""
        column = self.key_column(org)
        if column is None:
            return sql.SQL("NULL::text")
        return sql.SQL("p.{}").format(sql.Identifier(column))

    def identifier(self, org: str) -> sql.Identifier:
        schema, table = self.table(org).split(".")
        return sql.Identifier(schema, table)


def encode_cursor(created_at: datetime, image_id: str) -> str:
    raw = f"{created_at.isoformat()}|{image_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raise ValueError for anything ``encode_cursor`` did not produce."""
    padded = cursor + "=" * (-len(cursor) % 4)
    moment, _, image_id = base64.urlsafe_b64decode(padded).decode().partition("|")
    return datetime.fromisoformat(moment), str(uuid.UUID(image_id))


class Repository:
    """Pooled connections and the queries of the image API."""

    def __init__(self, database_url: str, tables: PhotoTables, pool_size: int = 8):
        self.tables = tables
        self._url = database_url
        # SQLAlchemy's pool only needs a callable returning a DB-API
        # connection; its stub type is narrower than psycopg's class.
        creator = cast("Callable[[], Any]", self._connect)
        self._pool = QueuePool(creator, pool_size=pool_size, max_overflow=pool_size)

    def _connect(self) -> Conn:
        try:
            return psycopg.connect(self._url, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as error:
            raise SourceUnavailable(f"cannot reach the database: {error}") from error

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        proxy = self._pool.connect()
        try:
            conn: Conn = proxy.driver_connection  # type: ignore[assignment]  # the creator above returns psycopg connections
            yield conn
        except psycopg.OperationalError as error:
            proxy.invalidate()
            raise SourceUnavailable(f"database connection failed: {error}") from error
        finally:
            proxy.close()

    def close(self) -> None:
        self._pool.dispose()

    def insert(self, image: NewImage) -> ImageRecord:
        """Write both rows in one transaction and return the stored image."""
        insert = sql.SQL(_INSERT_MAPPED).format(
            table=self.tables.identifier(image.org),
            key=self._key_column(image.org, image.record),
        )
        with self.connection() as conn, conn.transaction():
            conn.execute(_INSERT_PRIVATE, _private_values(image))
            conn.execute(insert, _mapped_values(image))
        found = self.get(image.org, image.id)
        if found is None:
            raise SourceUnavailable(
                "image vanished right after being written", record=image.id
            )
        return found

    def get(self, org: str, image_id: str) -> ImageRecord | None:
        where = sql.SQL("i.org = %(org)s AND i.id = %(id)s")
        with self.connection() as conn:
            row = conn.execute(
                self._select(org, where), {"org": org, "id": image_id}
            ).fetchone()
        return _record(row) if row else None

    def search(self, org: str, query: Query) -> list[ImageRecord]:
        """Images of ``org`` matching every given filter, newest first."""
        clauses: list[sql.Composable] = [sql.SQL("i.org = %(org)s")]
        params: dict[str, Any] = {"org": org, "limit": query.limit}
        if query.record:
            clauses.append(
                sql.SQL("%(record)s IN (p.work_order__c, {key})").format(
                    key=self.tables.record_key(org)
                )
            )
            params["record"] = query.record
        if query.tag:
            clauses.append(sql.SQL(_HAS_TAG))
            params["tag"] = query.tag
        if query.text:
            clauses.append(sql.SQL(_MATCHES_TEXT))
            params["text"] = query.text
        if query.after:
            clauses.append(
                sql.SQL("(i.created_at, i.id) < (%(after_ts)s, %(after_id)s)")
            )
            params["after_ts"], params["after_id"] = query.after
        statement = self._select(org, sql.SQL(" AND ").join(clauses)) + sql.SQL(
            " ORDER BY i.created_at DESC, i.id DESC LIMIT %(limit)s"
        )
        with self.connection() as conn:
            rows = conn.execute(statement, params).fetchall()
        return [_record(row) for row in rows]

    def update(self, org: str, image_id: str, changes: Changes) -> ImageRecord | None:
        """Apply a PATCH; None when the image is not visible to ``org``."""
        if self.get(org, image_id) is None:
            return None
        table = self.tables.identifier(org)
        params = {
            "org": org,
            "id": image_id,
            "tags": None if changes.tags is None else TAG_SEPARATOR.join(changes.tags),
            "description": changes.description,
            "annotations": None
            if changes.annotations is None
            else Jsonb(changes.annotations),
            "annotation_text": changes.annotation_text,
        }
        with self.connection() as conn, conn.transaction():
            conn.execute(_UPDATE_PRIVATE, params)
            if changes.tags is not None or changes.description is not None:
                conn.execute(sql.SQL(_UPDATE_MAPPED).format(table=table), params)
        return self.get(org, image_id)

    def delete(self, org: str, image_id: str) -> str | None:
        """Remove both rows; return the image's storage key, None if not visible.

        Deleting the mapped row is what a Heroku Connect user does to delete
        the Salesforce record: the sync captures the DELETE and passes it on.
        """
        found = self.get(org, image_id)
        if found is None:
            return None
        table = self.tables.identifier(org)
        params = {"org": org, "id": image_id}
        with self.connection() as conn, conn.transaction():
            conn.execute(sql.SQL(_DELETE_MAPPED).format(table=table), params)
            conn.execute(_DELETE_PRIVATE, params)
        return found.storage_key

    def orphans(self, org: str, limit: int = 500) -> list[tuple[str, str]]:
        """(id, storage key) of ``org``'s images whose mapped row is gone or deleted."""
        statement = sql.SQL(_ORPHANS).format(table=self.tables.identifier(org))
        with self.connection() as conn:
            rows = conn.execute(statement, {"org": org, "limit": limit}).fetchall()
        return [(str(row["id"]), row["storage_key"]) for row in rows]

    def forget(self, org: str, image_id: str) -> None:
        """Drop the private row of an image whose mapped row is already gone."""
        with self.connection() as conn:
            conn.execute(_DELETE_PRIVATE, {"org": org, "id": image_id})

    def orgs_with_images(self) -> list[str]:
        with self.connection() as conn:
            rows = conn.execute("SELECT DISTINCT org FROM forcelink.images").fetchall()
        return [row["org"] for row in rows]

    def _key_column(self, org: str, record: str | None) -> sql.Identifier:
        """Where an upload's ``record`` goes; the service has checked it fits."""
        column = self.tables.record_column(org, record) if record else None
        return sql.Identifier(column or WORK_ORDER_FIELD)

    def _select(self, org: str, where: sql.Composable) -> sql.Composed:
        return sql.SQL(_SELECT).format(
            table=self.tables.identifier(org),
            key=self.tables.record_key(org),
            where=where,
        )


_SELECT = """
SELECT i.id, i.org, i.storage_key, i.original_filename, i.content_type,
       i.size_bytes, i.width, i.height, i.sha256, i.captured_at, i.annotations,
       i.uploaded_by, i.created_at,
       greatest(i.updated_at, p.systemmodstamp) AS updated_at,
       p.sfid, coalesce({key}, p.work_order__c) AS record, p.tags__c,
       p.description__c,
       p._sync_state, p._sync_error
FROM forcelink.images i
JOIN {table} p ON p.image_id__c = i.id::text
WHERE NOT coalesce(p.isdeleted, false) AND {where}
"""

_HAS_TAG = "%(tag)s = ANY(string_to_array(p.tags__c, ';'))"

# Full-text search over what a user would call the photo's words. The
# document joins two tables, so no single index covers it: the org filter
# (indexed) narrows the rows first, then each is matched. Worth an expression
# index on the mapped table if an org grows to hundreds of thousands of photos.
_MATCHES_TEXT = """to_tsvector('english', concat_ws(' ', p.description__c,
    replace(p.tags__c, ';', ' '), i.annotation_text))
    @@ websearch_to_tsquery('english', %(text)s)"""

_INSERT_PRIVATE = """
INSERT INTO forcelink.images (id, org, storage_key, original_filename,
    content_type, size_bytes, width, height, orientation, sha256, captured_at,
    uploaded_by)
VALUES (%(id)s, %(org)s, %(storage_key)s, %(filename)s, %(content_type)s,
    %(size_bytes)s, %(width)s, %(height)s, %(orientation)s, %(sha256)s,
    %(captured_at)s, %(uploaded_by)s)
"""

_INSERT_MAPPED = """
INSERT INTO {table} (name, image_id__c, {key}, tags__c, description__c,
    image_url__c, thumbnail_url__c, content_type__c, size_bytes__c, width__c,
    height__c, sha256__c, captured_at__c, systemmodstamp, isdeleted, _sync_state)
VALUES (%(name)s, %(id)s, %(record)s, %(tags)s, %(description)s,
    %(image_url)s, %(thumbnail_url)s, %(content_type)s, %(size_bytes)s,
    %(width)s, %(height)s, %(sha256)s, %(captured_at)s, now(), false, 'pending')
"""

_UPDATE_PRIVATE = """
UPDATE forcelink.images
SET annotations = coalesce(%(annotations)s, annotations),
    annotation_text = CASE WHEN %(annotations)s::jsonb IS NULL
                           THEN annotation_text ELSE %(annotation_text)s END,
    updated_at = now()
WHERE org = %(org)s AND id = %(id)s
"""

_UPDATE_MAPPED = """
UPDATE {table}
SET tags__c = coalesce(%(tags)s, tags__c),
    description__c = coalesce(%(description)s, description__c),
    systemmodstamp = now(), _sync_state = 'pending', _sync_error = NULL
WHERE image_id__c = %(id)s::text
"""

_DELETE_MAPPED = "DELETE FROM {table} WHERE image_id__c = %(id)s::text"
_DELETE_PRIVATE = "DELETE FROM forcelink.images WHERE org = %(org)s AND id = %(id)s"

_ORPHANS = """
SELECT i.id, i.storage_key FROM forcelink.images i
LEFT JOIN {table} p ON p.image_id__c = i.id::text
WHERE i.org = %(org)s AND (p.image_id__c IS NULL OR p.isdeleted)
LIMIT %(limit)s
"""


def _private_values(image: NewImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "org": image.org,
        "storage_key": image.storage_key,
        "filename": image.filename,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "width": image.width,
        "height": image.height,
        "orientation": image.orientation,
        "sha256": image.sha256,
        "captured_at": image.captured_at,
        "uploaded_by": image.uploaded_by,
    }


def _mapped_values(image: NewImage) -> dict[str, Any]:
    return {
        "name": image.name,
        "id": image.id,
        "record": image.record,
        "tags": TAG_SEPARATOR.join(image.tags),
        "description": image.description,
        "image_url": image.image_url,
        "thumbnail_url": image.thumbnail_url,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "captured_at": image.captured_at,
    }


def _record(row: dict[str, Any]) -> ImageRecord:
    tags = [t for t in (row["tags__c"] or "").split(TAG_SEPARATOR) if t]
    return ImageRecord(
        id=str(row["id"]),
        org=row["org"],
        storage_key=row["storage_key"],
        filename=row["original_filename"] or "",
        content_type=row["content_type"],
        size_bytes=int(row["size_bytes"]),
        width=row["width"],
        height=row["height"],
        sha256=row["sha256"],
        captured_at=row["captured_at"],
        record=row["record"],
        tags=tags,
        description=row["description__c"] or "",
        annotations=row["annotations"] or [],
        uploaded_by=row["uploaded_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sfid=row["sfid"],
        sync_state=row["_sync_state"],
        sync_error=row["_sync_error"],
    )
