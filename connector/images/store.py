"""The ``ImageStore`` interface and the factory that picks an implementation.

Contract shared by every store (``tests/api/test_store.py`` runs the same
cases against each):

* ``put_file`` stores a whole file under a key, replacing any old object;
  readers see either the old or the new object, never a part. Memory use does
  not grow with the file's size.
* ``read`` yields the bytes of ``[start, end]`` (inclusive, like an HTTP
  range) in chunks of at most ``CHUNK`` bytes; a missing key raises
  ``ObjectMissing`` before the first chunk.
* ``delete_prefix`` removes every object under one image's prefix and is
  idempotent.
* ``presign`` returns a time-limited URL a client may fetch directly, or
  None when the store has no such thing (the local directory).

Keys must come from ``forcelink.connector.images.keys``; stores refuse others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from forcelink.errors import SourceUnavailable, TerminalError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from forcelink.config import ImagesConfig

CHUNK = 256 * 1024


class ObjectMissing(TerminalError):
    """The key has no object (never written, or deleted)."""


class StoreUnavailable(SourceUnavailable):
    """The store could not be reached or refused the request for now."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ImageStore(Protocol):
    name: str
    """``local`` or ``s3``, for logs and error messages."""

    def put_file(self, key: str, path: Path, content_type: str) -> None: ...

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes ``start..end`` inclusive (``end=None``: to the end)."""
        ...

    def read_all(self, key: str) -> bytes:
        """The whole object; only for small ones (derived images)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many there were."""
        ...

    def presign(
        self, key: str, expires_seconds: int, content_type: str
    ) -> str | None: ...


def open_store(config: ImagesConfig) -> ImageStore:
    """The store ``images.backend`` names, configured from ``images``."""
    if config.backend == "s3":
        from forcelink.connector.images.s3 import S3Store

        return S3Store(
            bucket=config.s3.bucket,
            prefix=config.s3.prefix,
            endpoint_url=config.s3.endpoint_url,
            region=config.s3.region,
        )
    from forcelink.connector.images.local import LocalStore

    return LocalStore(Path(config.local_dir))
