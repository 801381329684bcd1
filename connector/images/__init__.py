"""Image stores: where the bytes of field photos (and their thumbnails) live.

One interface (``ImageStore``), two implementations: a local directory (the
embedded default) and S3 through boto3. ``open_store(config)`` picks one from
``images.backend``. Keys are built only by ``keys.py`` from validated parts,
so nothing a client sends reaches a storage key unchecked.
"""

from forcelink.connector.images.keys import derived_key, image_prefix, original_key
from forcelink.connector.images.store import (
    ImageStore,
    ObjectInfo,
    ObjectMissing,
    StoreUnavailable,
    open_store,
)

__all__ = [
    "ImageStore",
    "ObjectInfo",
    "ObjectMissing",
    "StoreUnavailable",
    "derived_key",
    "image_prefix",
    "open_store",
    "original_key",
]
