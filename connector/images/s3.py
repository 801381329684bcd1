"""The S3 image store, through boto3.

Objects live at ``<prefix><key>`` in one bucket. Uploads go through boto3's
managed transfer: files above ``MULTIPART_THRESHOLD`` are sent as a multipart
upload of ``MULTIPART_CHUNK`` parts, at most ``TRANSFER_THREADS`` at a time,
so memory stays near chunk x threads whatever the file's size. Reads stream
the response body (with an HTTP Range for partial reads).

botocore's errors are translated here: a missing key becomes
``ObjectMissing``; anything else (unreachable endpoint, throttling, denied)
becomes ``StoreUnavailable`` naming the bucket and key, never credentials.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from forcelink.connector.images.keys import is_valid_key, is_valid_prefix
from forcelink.connector.images.store import (
    CHUNK,
    ObjectInfo,
    ObjectMissing,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

log = logging.getLogger("forcelink.connector.images.s3")

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024
TRANSFER_THREADS = 4
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Store:
    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                max_pool_connections=64,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=TRANSFER_THREADS,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, first local runs)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as error:
                raise self._unavailable("cannot create bucket", "", error) from error

    def _name(self, key: str) -> str:
        if not is_valid_key(key):
            raise ValueError(f"refusing a storage key not built by keys.py: {key!r}")
        return self.prefix + key

    def _unavailable(self, what: str, key: str, error: Exception) -> StoreUnavailable:
        code = (
            error.response.get("Error", {}).get("Code")
            if isinstance(error, ClientError)
            else None
        )
        return StoreUnavailable(
            f"{what}: {code or type(error).__name__}",
            store=self.name,
            bucket=self.bucket,
            key=key or None,
        )

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        """Run one client call, translating botocore's errors into ours."""
        try:
            return fn(**kwargs)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectMissing(
                    "no such object", key=key, store=self.name
                ) from None
            raise self._unavailable(what, key, error) from error
        except BotoCoreError as error:
            raise self._unavailable(what, key, error) from error

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        self._call(
            "cannot upload",
            key,
            self.client.upload_file,
            Filename=str(path),
            Bucket=self.bucket,
            Key=self._name(key),
            ExtraArgs={"ContentType": content_type},
            Config=self.transfer,
        )
        log.debug("stored %s", key)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            "cannot write",
            key,
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._name(key),
            Body=data,
            ContentType=content_type,
        )

    def stat(self, key: str) -> ObjectInfo:
        head = self._call(
            "cannot stat",
            key,
            self.client.head_object,
            Bucket=self.bucket,
            Key=self._name(key),
        )
        return ObjectInfo(key, int(head["ContentLength"]))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = self._call(
            "cannot read",
            key,
            self.client.get_object,
            Bucket=self.bucket,
            Key=self._name(key),
            **extra,
        )
        return self._chunks(key, response["Body"])

    def _chunks(self, key: str, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (ClientError, BotoCoreError) as error:
            raise self._unavailable("read interrupted", key, error) from error
        finally:
            body.close()

    def read_all(self, key: str) -> bytes:
        return b"".join(self.read(key))

    def delete_prefix(self, prefix: str) -> int:
        if not is_valid_prefix(prefix):
            raise ValueError(
                f"refusing a storage prefix not built by keys.py: {prefix!r}"
            )
        listing = self._call(
            "cannot list",
            prefix,
            self.client.list_objects_v2,
            Bucket=self.bucket,
            Prefix=self.prefix + prefix,
        )
        # One image has an original and a handful of derived images: far
        # below the 1000 objects one listing or one delete call can hold.
        objects = [{"Key": item["Key"]} for item in listing.get("Contents", [])]
        if objects:
            self._call(
                "cannot delete",
                prefix,
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": objects, "Quiet": True},
            )
        return len(objects)

    def presign(self, key: str, expires_seconds: int, content_type: str) -> str | None:
        url = self._call(
            "cannot presign",
            key,
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._name(key),
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_seconds,
        )
        return str(url)
