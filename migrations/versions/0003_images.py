"""Image metadata only forcelink needs: one row per uploaded field photo.

Revision ID: 0003_images
Revises: 0002_eventlog

``forcelink.images`` holds what the image API keeps to itself; what
Salesforce shares (record, tags, description, size, digest) lives in the
org's mapped Site_Photo__c table, joined on ``image_id__c = id::text``.

``org``
    The org whose token uploaded the image; every query filters on it.
``storage_key``
    Where the original bytes are in the image store (``<org>/<id>/original``).
``annotations``
    JSON shapes drawn on the image, and ``annotation_text`` their labels
    joined by spaces, for full-text search.
``orientation``
    The EXIF orientation (1-8) the thumbnails honour; ``width`` and
    ``height`` are already as displayed.
"""

from __future__ import annotations

from alembic import op

revision: str = "0003_images"
down_revision: str | None = "0002_eventlog"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = """
CREATE TABLE forcelink.images (
    id                uuid PRIMARY KEY,
    org               text NOT NULL,
    storage_key       text NOT NULL,
    original_filename text NOT NULL DEFAULT '',
    content_type      text NOT NULL,
    size_bytes        bigint NOT NULL CHECK (size_bytes >= 0),
    width             integer NOT NULL,
    height            integer NOT NULL,
    orientation       smallint NOT NULL DEFAULT 1,
    sha256            char(64) NOT NULL,
    captured_at       timestamptz,
    annotations       jsonb NOT NULL DEFAULT '[]'::jsonb,
    annotation_text   text NOT NULL DEFAULT '',
    uploaded_by       text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX images_org_newest ON forcelink.images (org, created_at DESC, id DESC);
"""

DOWNGRADE = "DROP TABLE IF EXISTS forcelink.images;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
