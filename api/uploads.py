"""Receive a multipart upload without holding it in memory.

The request body is fed, chunk by chunk as the server receives it, to a
streaming multipart parser. The one file part (``file``) is written to a
temporary file while its size and SHA-256 are counted; the small text parts
(``record``, ``tags``, ``description``) are kept in memory up to
``MAX_FIELD_BYTES`` each. Memory use is therefore a few chunks plus the text
fields, whatever the file's size.

Size limit: once the file passes ``max_bytes`` the upload is refused with
``UploadTooLarge``. The rest of the body is still read and thrown away (up to
``DRAIN_FACTOR`` times the limit), because most HTTP clients send the whole
body before reading any answer and would report a broken connection instead
of the 413. A ``Content-Length`` beyond that bound is refused before reading.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from forcelink.errors import ForcelinkError

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32
DRAIN_FACTOR = 4
FORM_OVERHEAD = 256 * 1024


class UploadTooLarge(ForcelinkError):
    """The file is bigger than ``images.max_upload_bytes``."""


class BadUpload(ForcelinkError):
    """The body is not the multipart form this endpoint takes."""


@dataclass
class Upload:
    """A received upload: the file on disk, its digest and the text fields."""

    path: Path
    filename: str
    size: int
    sha256: str
    fields: dict[str, list[str]] = field(default_factory=dict)

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Receiver:
    """Parser callbacks: route each part's bytes to the file or a field."""

    def __init__(self, max_bytes: int, workdir: str | None) -> None:
        self.max_bytes = max_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", dir=workdir)
        self.file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.digest = hashlib.sha256()
        self.size = 0
        self.too_large = False
        self.filename: str | None = None
        self.fields: dict[str, list[str]] = {}
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._target: str | None = None
        self._buffer = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadUpload(f"more than {MAX_PARTS} form parts")
        self._headers = {}
        self._target = None
        self._buffer = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise BadUpload("a form part has no name")
        if b"filename" in options:
            if name != "file" or self.filename is not None:
                raise BadUpload("send exactly one file, in the part named 'file'")
            self.filename = options[b"filename"].decode("utf-8", "replace")
        self._target = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._target == "file" and self.filename is not None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self.too_large = True
            if not self.too_large:
                self.digest.update(chunk)
                self.file.write(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise BadUpload(f"form field {self._target!r} is too long")

    def _part_end(self) -> None:
        if self._target and not (self._target == "file" and self.filename is not None):
            value = self._buffer.decode("utf-8", "replace")
            self.fields.setdefault(self._target, []).append(value)


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    max_bytes: int,
    workdir: str | None = None,
) -> Upload:
    """Read a ``multipart/form-data`` body; the caller must ``discard()`` it."""
    boundary = _boundary(content_type)
    drain_limit = max_bytes * DRAIN_FACTOR + FORM_OVERHEAD
    if (
        content_length
        and content_length.isdigit()
        and int(content_length) > drain_limit
    ):
        raise UploadTooLarge(f"the upload is larger than {max_bytes} bytes")
    receiver = _Receiver(max_bytes, workdir)
    try:
        await _feed(receiver, boundary, body, drain_limit)
    except BaseException:
        receiver.file.close()
        receiver.path.unlink(missing_ok=True)
        raise
    receiver.file.close()
    upload = Upload(
        path=receiver.path,
        filename=receiver.filename or "",
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )
    if receiver.too_large:
        upload.discard()
        raise UploadTooLarge(f"the upload is larger than {max_bytes} bytes")
    if receiver.filename is None:
        upload.discard()
        raise BadUpload("no file: send the image in a form part named 'file'")
    return upload


async def _feed(
    receiver: _Receiver, boundary: bytes, body: AsyncIterator[bytes], drain_limit: int
) -> None:
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]  # callbacks typed as a TypedDict only under TYPE_CHECKING upstream
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > drain_limit:
            raise UploadTooLarge("the upload is far larger than allowed")
        if receiver.too_large:
            continue
        try:
            parser.write(chunk)
        except BadUpload:
            raise
        except Exception as error:
            raise BadUpload(f"malformed multipart body: {error}") from error
    if not receiver.too_large:
        parser.finalize()


def _boundary(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise BadUpload("send the image as multipart/form-data")
    return options[b"boundary"]
