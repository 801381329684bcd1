"""The image store contract, run against the local directory and S3 (moto)."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from forcelink.connector.images import (
    ImageStore,
    ObjectMissing,
    derived_key,
    image_prefix,
    original_key,
)
from forcelink.connector.images.local import LocalStore
from forcelink.connector.images.s3 import MULTIPART_THRESHOLD, S3Store

from .conftest import Api, make_config, new_record, photo, start_api, upload


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "images")
        return
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint_url")
    yield S3Store(bucket, prefix=f"t{uuid.uuid4().hex[:6]}/", endpoint_url=endpoint)


def test_store__put_read_ranges_and_delete(store: ImageStore, tmp_path: Path) -> None:
    image_id = str(uuid.uuid4())
    data = os.urandom(700_000)  # several read chunks
    source = tmp_path / "upload"
    source.write_bytes(data)
    key = original_key("acme", image_id)

    store.put_file(key, source, "image/jpeg")
    store.put_bytes(
        derived_key("acme", image_id, "thumb-64x64.jpeg"), b"small", "image/jpeg"
    )

    assert store.stat(key).size == len(data)
    assert b"".join(store.read(key)) == data
    assert b"".join(store.read(key, 10, 19)) == data[10:20]
    assert b"".join(store.read(key, 699_990)) == data[699_990:]
    assert store.read_all(derived_key("acme", image_id, "thumb-64x64.jpeg")) == b"small"

    assert store.delete_prefix(image_prefix("acme", image_id)) == 2
    assert store.delete_prefix(image_prefix("acme", image_id)) == 0
    with pytest.raises(ObjectMissing):
        store.stat(key)
    with pytest.raises(ObjectMissing):
        store.read(key)


def test_store__large_files_go_up_in_parts(store: ImageStore, tmp_path: Path) -> None:
    data = os.urandom(MULTIPART_THRESHOLD + 1_000_000)
    source = tmp_path / "big"
    source.write_bytes(data)
    key = original_key("acme", str(uuid.uuid4()))
    store.put_file(key, source, "image/jpeg")
    digest = hashlib.sha256()
    for chunk in store.read(key):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "acme/../../x/original",
        "acme/not-a-uuid/original",
        "acme/6f1c1f5e-0b4f-4d7c-9a57-3f2f0e6f2b11/../original",
        "acme/6f1c1f5e-0b4f-4d7c-9a57-3f2f0e6f2b11/thumb-1x1.exe",
        "/abs/6f1c1f5e-0b4f-4d7c-9a57-3f2f0e6f2b11/original",
    ],
)
def test_store__refuses_keys_it_did_not_build(store: ImageStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x", "image/jpeg")
    with pytest.raises(ValueError):
        store.read_all(key)


def test_keys__client_text_never_reaches_a_key() -> None:
    with pytest.raises(ValueError):
        original_key("acme/../other", str(uuid.uuid4()))
    with pytest.raises(ValueError):
        original_key("acme", "../../other")
    with pytest.raises(ValueError):
        derived_key("acme", str(uuid.uuid4()), "../original")


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _expected_signature(url: str, secret: str) -> str:
    """SigV4 for a presigned GET, computed from the AWS specification."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.pop("X-Amz-Signature")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            "GET",
            parts.path,
            canonical_query,
            f"host:{parts.netloc}\n",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )
    day, region = query["X-Amz-Credential"].split("/")[1:3]
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            query["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _signing_key(secret, day, region)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_s3_presign__is_sigv4_signed_and_expires(
    s3_bucket: str, s3_endpoint_url: str
) -> None:
    store = S3Store(s3_bucket, prefix="p/", endpoint_url=s3_endpoint_url)
    key = original_key("acme", str(uuid.uuid4()))
    url = store.presign(key, 120, "image/png")
    assert url is not None
    query = dict(parse_qsl(urlsplit(url).query))

    assert urlsplit(url).path == f"/{s3_bucket}/p/{key}"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "120"
    assert query["response-content-type"] == "image/png"
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC
    )
    assert abs(signed_at.timestamp() - time.time()) < 60
    assert query["X-Amz-Credential"].startswith(os.environ["AWS_ACCESS_KEY_ID"] + "/")
    # moto does not check signatures: recompute it from the specification.
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert query["X-Amz-Signature"] == _expected_signature(url, secret)
    assert query["X-Amz-Signature"] != _expected_signature(url, secret + "x")


@pytest.fixture(scope="module")
def presigning_api(
    request: pytest.FixtureRequest,
    api_database: str,
    mapping_files: list[str],
    keys_dir: Path,
    s3_bucket: str,
    s3_endpoint_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    config = make_config(
        mapping_files,
        api_database,
        keys_dir,
        "s3",
        tmp_path_factory.mktemp("x"),
        s3_bucket,
        s3_endpoint_url,
    )
    config.images.presigned_redirect = True
    config.images.presigned_ttl_seconds = 90
    yield from start_api(request, config, keys_dir, purge=3600)


def test_original__redirects_to_a_presigned_url(presigning_api: Api) -> None:
    data = photo()
    with presigning_api.client() as client:
        image = upload(client, data, new_record()).json()
        response = client.get(f"/v1/images/{image['id']}")
        assert response.status_code == 307
        assert response.headers["cache-control"] == "no-store"
        location = response.headers["location"]
        query = dict(parse_qsl(urlsplit(location).query))
        assert query["X-Amz-Expires"] == "90"
        assert urlsplit(location).path.endswith(f"/photos/local/{image['id']}/original")
        etag = f'"{image["sha256"]}"'
        cached = client.get(
            f"/v1/images/{image['id']}", headers={"If-None-Match": etag}
        )
        assert cached.status_code == 304
    fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert fetched.content == data
