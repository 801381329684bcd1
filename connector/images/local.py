"""The embedded image store: a directory on the local disk.

Objects are files at ``<root>/<key>``. A write goes to a temporary file in
the same directory and is renamed into place, so a reader never sees half an
object and a crash leaves at worst a stray ``.tmp-*`` file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from forcelink.connector.images.keys import is_valid_key, is_valid_prefix
from forcelink.connector.images.store import (
    CHUNK,
    ObjectInfo,
    ObjectMissing,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO

log = logging.getLogger("forcelink.connector.images.local")


class LocalStore:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not is_valid_key(key):
            raise ValueError(f"refusing a storage key not built by keys.py: {key!r}")
        return self.root / key

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        with path.open("rb") as source:
            self._write(key, lambda target: shutil.copyfileobj(source, target, CHUNK))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._write(key, lambda target: target.write(data))

    def _write(self, key: str, fill: Callable[[IO[bytes]], object]) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
            with os.fdopen(fd, "wb") as out:
                fill(out)
            os.replace(temp, target)
        except OSError as error:
            raise StoreUnavailable(
                f"cannot write {key}: {error}", store=self.name
            ) from error
        log.debug("stored %s", key)

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            raise ObjectMissing("no such object", key=key, store=self.name) from None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing("no such object", key=key, store=self.name) from None
        return self._chunks(handle, start, end)

    @staticmethod
    def _chunks(handle: IO[bytes], start: int, end: int | None) -> Iterator[bytes]:
        with handle:
            handle.seek(start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                data = handle.read(CHUNK if left is None else min(CHUNK, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data

    def read_all(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing("no such object", key=key, store=self.name) from None

    def delete_prefix(self, prefix: str) -> int:
        if not is_valid_prefix(prefix):
            raise ValueError(
                f"refusing a storage prefix not built by keys.py: {prefix!r}"
            )
        folder = self.root / prefix
        if not folder.is_dir():
            return 0
        count = sum(1 for p in folder.iterdir() if not p.name.startswith(".tmp-"))
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def presign(self, key: str, expires_seconds: int, content_type: str) -> str | None:
        return None
