"""Storage keys, built from validated parts only.

Every object of one image lives under ``<org>/<image id>/``::

    acme/5f0c.../original                 the uploaded bytes, as sent
    acme/5f0c.../thumb-256x256.jpeg       a derived image (no watermark)
    acme/5f0c.../thumb-256x256-wm3fa1c2d4.webp   with a watermark (text hash)

The org name comes from a verified token and the image id is parsed as a
UUID, so a key can never climb out of its org's prefix. The store adds its
own root (a directory, or the configured S3 prefix) in front.
"""

from __future__ import annotations

import re
import uuid

_ORG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DERIVED = re.compile(r"^thumb-[0-9]{1,5}x[0-9]{1,5}(-wm[0-9a-f]{8})?\.(jpeg|webp)$")


def check_org(org: str) -> str:
    """Return ``org`` if it is a safe key part; raise ValueError otherwise."""
    if not _ORG.match(org):
        raise ValueError(f"not a valid org name for a storage key: {org!r}")
    return org


def image_prefix(org: str, image_id: str) -> str:
    """``<org>/<uuid>/``: every object of one image starts with this."""
    canonical = str(uuid.UUID(image_id))
    return f"{check_org(org)}/{canonical}/"


def original_key(org: str, image_id: str) -> str:
    return image_prefix(org, image_id) + "original"


def derived_key(org: str, image_id: str, name: str) -> str:
    """The key of a derived image named like ``thumb-256x256.jpeg``."""
    if not _DERIVED.match(name):
        raise ValueError(f"not a derived image name: {name!r}")
    return image_prefix(org, image_id) + name


def is_valid_key(key: str) -> bool:
    """True for keys this module could have built (stores check before I/O)."""
    parts = key.split("/")
    if len(parts) != 3 or not _ORG.match(parts[0]):
        return False
    try:
        if str(uuid.UUID(parts[1])) != parts[1]:
            return False
    except ValueError:
        return False
    return parts[2] == "original" or bool(_DERIVED.match(parts[2]))


def is_valid_prefix(prefix: str) -> bool:
    parts = prefix.split("/")
    return (
        len(parts) == 3
        and parts[2] == ""
        and is_valid_key(f"{parts[0]}/{parts[1]}/original")
    )
