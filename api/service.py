"""The image API's work, apart from HTTP: upload, derive, edit, delete, purge.

Order of writes on upload: bytes to the store first, then both metadata rows
in one transaction. If the transaction fails the bytes are deleted again; if
the process dies in between, the bytes are unreferenced and harmless (no
row points at them). On delete the order is reversed: rows first, then
bytes, so no visible image ever lacks its bytes.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import uuid
import zlib
from dataclasses import dataclass

from forcelink.api import imaging
from forcelink.api.auth import Principal
from forcelink.api.repository import (
    Changes,
    ImageRecord,
    NewImage,
    Query,
    Repository,
)
from forcelink.api.uploads import BadUpload, Upload
from forcelink.config import Config
from forcelink.connector.images import (
    ImageStore,
    ObjectMissing,
    derived_key,
    image_prefix,
    original_key,
)
from forcelink.connector.images.store import CHUNK
from forcelink.errors import ForcelinkError

log = logging.getLogger("forcelink.api.images")

# The WorkOrder a photo belongs to: its external id (the parent_key of
# Work_Order__c in mappings/site_photo.yaml) or its 15/18-character id;
# printable, no ';'. The repository decides which column holds it.
_RECORD_ID = re.compile(r"^[^\x00-\x1f\x7f;]{1,255}$")
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_DESCRIPTION = 32000
_LOCK_STRIPES = 64


class InvalidInput(ForcelinkError):
    """A field the client sent does not fit (named in the message)."""


@dataclass(frozen=True)
class Derived:
    """A derived image: its bytes and what names this exact rendition."""

    data: bytes
    content_type: str
    etag: str


def clean_tags(values: list[str]) -> list[str]:
    """Tags from form or JSON values: comma-split, trimmed, unique, checked."""
    tags: list[str] = []
    for value in values:
        for raw in value.split(","):
            tag = raw.strip()
            if not tag or tag in tags:
                continue
            if len(tag) > MAX_TAG_LENGTH or ";" in tag:
                raise InvalidInput(
                    f"tag {tag[:20]!r}: at most {MAX_TAG_LENGTH} characters, no ';'"
                )
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags")
    return tags


def check_record(record: str | None) -> str:
    if not record or not _RECORD_ID.match(record):
        raise InvalidInput("record: the WorkOrder key (1-255 characters) is required")
    return record


class ImageService:
    def __init__(
        self, config: Config, store: ImageStore, repository: Repository
    ) -> None:
        self.config = config
        self.store = store
        self.repository = repository
        self._watermarks = {org.name: org.watermark_text for org in config.api.orgs}
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def create(
        self, principal: Principal, upload: Upload, base_url: str
    ) -> ImageRecord:
        """Check an uploaded file, store it and record it; the caller discards it."""
        record = check_record(upload.field("record"))
        if self.repository.tables.record_column(principal.org, record) is None:
            raise InvalidInput(
                "record: this org's Site_Photo__c mapping has no parent_key for "
                "Work_Order__c, so the record must be a WorkOrder id (0WO...)"
            )
        tags = clean_tags(upload.fields.get("tags", []))
        description = upload.field("description") or ""
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"description: at most {MAX_DESCRIPTION} characters")
        if upload.size == 0:
            raise BadUpload("the file is empty")
        with upload.path.open("rb") as source:
            facts = imaging.inspect(source, self.config.images.max_image_pixels)

        image_id = str(uuid.uuid4())
        key = original_key(principal.org, image_id)
        self.store.put_file(key, upload.path, facts.content_type)
        new = NewImage(
            id=image_id,
            org=principal.org,
            storage_key=key,
            filename=upload.filename[:255],
            content_type=facts.content_type,
            size_bytes=upload.size,
            width=facts.width,
            height=facts.height,
            orientation=facts.orientation,
            sha256=upload.sha256,
            captured_at=facts.captured_at,
            record=record,
            tags=tags,
            description=description,
            uploaded_by=principal.user,
            image_url=f"{base_url}/v1/images/{image_id}",
            thumbnail_url=f"{base_url}/v1/images/{image_id}/thumbnail?w={self.default_size}",
            name=(upload.filename or f"Photo {image_id[:8]}")[:80],
        )
        try:
            stored = self.repository.insert(new)
        except BaseException:
            self.store.delete_prefix(image_prefix(principal.org, image_id))
            raise
        log.debug(
            "org %s stored image %s (%d bytes)", principal.org, image_id, upload.size
        )
        return stored

    @property
    def default_size(self) -> int:
        return sorted(self.config.images.thumbnail_sizes)[
            len(self.config.images.thumbnail_sizes) // 2
        ]

    def get(self, principal: Principal, image_id: str) -> ImageRecord | None:
        return self.repository.get(principal.org, image_id)

    def search(self, principal: Principal, query: Query) -> list[ImageRecord]:
        return self.repository.search(principal.org, query)

    def update(
        self, principal: Principal, image_id: str, changes: Changes
    ) -> ImageRecord | None:
        return self.repository.update(principal.org, image_id, changes)

    def delete(self, principal: Principal, image_id: str) -> bool:
        key = self.repository.delete(principal.org, image_id)
        if key is None:
            return False
        self._remove_bytes(principal.org, image_id)
        return True

    def _remove_bytes(self, org: str, image_id: str) -> bool:
        try:
            count = self.store.delete_prefix(image_prefix(org, image_id))
        except ForcelinkError as error:
            # Nothing serves these bytes any more, but they take space: say
            # so, naming the image, so an operator can remove them.
            log.warning(
                "org %s: bytes of deleted image %s stay in the store: %s",
                org,
                image_id,
                error,
            )
            return False
        log.debug("org %s: removed %d stored objects of image %s", org, count, image_id)
        return True

    def thumbnail_etag(
        self, image: ImageRecord, width: int, height: int, fmt: str
    ) -> str:
        mark = self._watermark(image.org)
        tag = imaging.watermark_tag(mark) if mark else "plain"
        return f'"{image.sha256[:20]}-{width}x{height}-{tag}.{fmt}"'

    def thumbnail(
        self, image: ImageRecord, width: int, height: int, fmt: imaging.ThumbFormat
    ) -> Derived:
        """The cached rendition, generated (once, even under concurrency) if missing."""
        mark = self._watermark(image.org)
        name = (
            f"thumb-{width}x{height}"
            + (f"-wm{imaging.watermark_tag(mark)}" if mark else "")
            + f".{fmt}"
        )
        key = derived_key(image.org, image.id, name)
        etag = self.thumbnail_etag(image, width, height, fmt)
        content_type = imaging.THUMB_TYPES[fmt]
        try:
            return Derived(self.store.read_all(key), content_type, etag)
        except ObjectMissing:
            pass
        with self._locks[zlib.crc32(key.encode()) % _LOCK_STRIPES]:
            try:
                return Derived(self.store.read_all(key), content_type, etag)
            except ObjectMissing:
                data = self._render(image, width, height, fmt, mark)
                self.store.put_bytes(key, data, content_type)
                return Derived(data, content_type, etag)

    def _render(
        self,
        image: ImageRecord,
        width: int,
        height: int,
        fmt: imaging.ThumbFormat,
        mark: str,
    ) -> bytes:
        # Spool the original to a temporary file: Pillow needs to seek, and
        # an original may be far larger than we want to hold in memory.
        with tempfile.SpooledTemporaryFile(max_size=4 * CHUNK) as spool:
            for chunk in self.store.read(image.storage_key):
                spool.write(chunk)
            spool.seek(0)
            return imaging.thumbnail(spool, width, height, fmt, mark)

    def _watermark(self, org: str) -> str:
        return self._watermarks.get(org, "")

    def purge_orphans(self) -> int:
        """Remove bytes and private rows of images deleted on the Salesforce side."""
        removed = 0
        for org in self.repository.orgs_with_images():
            for image_id, _key in self.repository.orphans(org):
                # Keep the row while the bytes stay, so the next purge retries.
                if self._remove_bytes(org, image_id):
                    self.repository.forget(org, image_id)
                    removed += 1
        if removed:
            log.info("purged %d images deleted in Salesforce", removed)
        return removed
