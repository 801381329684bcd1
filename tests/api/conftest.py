"""A real image API for the tests: uvicorn in a thread, httpx as the client.

One database per test session (migrated with ``forcelink.db.migrate``), one
server per store backend (local directory and S3 on the moto server). Tests
keep apart by org and record id instead of by database, which keeps the
suite fast: starting a server costs about as much as ten tests.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from PIL import Image

from forcelink.api.app import create_app
from forcelink.api.auth import KeyRing, issue_token
from forcelink.api.server import free_port
from forcelink.config import ApiOrgConfig, Config
from forcelink.connector.images import ImageStore, open_store
from forcelink.connector.images.s3 import S3Store
from forcelink.mapping.ddl import apply
from forcelink.mapping.loader import load_mappings

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(55610, 55700)
MAX_UPLOAD = 3 * 1024 * 1024
MAX_PIXELS = 4_000_000
WATERMARK_ORG = "wmorg"
OTHER_TABLE_ORG = "beta"


@pytest.fixture(scope="session")
def mapping_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The shipped Site_Photo__c mapping, and org beta's copy in another table."""
    shipped = ROOT / "mappings" / "site_photo.yaml"
    text = shipped.read_text().replace("org: local", f"org: {OTHER_TABLE_ORG}")
    text = text.replace(
        "object: Site_Photo__c",
        "object: Site_Photo__c\ntable: salesforce_beta.site_photo__c",
    )
    beta = tmp_path_factory.mktemp("mappings") / "beta_site_photo.yaml"
    beta.write_text(text)
    return [str(shipped), str(beta)]


@pytest.fixture(scope="session")
def api_database(database_url: str, mapping_files: list[str]) -> Iterator[str]:
    """A migrated database with the mapped tables of the test orgs."""
    name = f"t_api_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    apply(url, load_mappings(mapping_files))  # the mapping engineer's machinery
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint_url: str) -> str:
    # moto accepts any credentials; boto3 only needs some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "forcelink-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "forcelink-test-secret")
    bucket = f"images-{uuid.uuid4().hex[:8]}"
    S3Store(bucket, endpoint_url=s3_endpoint_url).ensure_bucket()
    return bucket


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


def make_config(
    mappings: list[str],
    database: str,
    keys: Path,
    backend: str,
    root: Path,
    bucket: str = "",
    endpoint: str = "",
) -> Config:
    config = Config()
    config.database.url = database
    config.mappings = mappings  # org beta's photo table comes from these
    config.api.keys_dir = str(keys)
    config.api.orgs = [
        ApiOrgConfig(name=WATERMARK_ORG, watermark_text="ACME"),
    ]
    config.images.backend = "s3" if backend == "s3" else "local"
    config.images.local_dir = str(root)
    config.images.s3.bucket = bucket
    config.images.s3.endpoint_url = endpoint or None
    config.images.s3.prefix = "photos/"
    config.images.max_upload_bytes = MAX_UPLOAD
    config.images.max_image_pixels = MAX_PIXELS
    config.images.thumbnail_sizes = [64, 128, 256]
    return config


@dataclass
class Api:
    """A running server and what tests need to talk to it."""

    url: str
    config: Config
    store: ImageStore
    keys: KeyRing
    database: str

    def token(self, org: str = "local", user: str = "tester", ttl: int = 600) -> str:
        return issue_token(self.keys, self.config.api, org, user, ttl)

    def client(self, org: str = "local", user: str = "tester") -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(org, user)}"},
            timeout=30,
        )


class Server:
    """uvicorn serving ``create_app(config)`` in a thread."""

    def __init__(self, config: Config, purge_interval: float) -> None:
        self.store = open_store(config.images)
        app = create_app(config, self.store, purge_interval=purge_interval)
        self.port = free_port(PORTS)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_api(
    request: pytest.FixtureRequest, config: Config, keys: Path, purge: float = 0.3
) -> Iterator[Api]:
    with Server(config, purge) as server:
        yield Api(
            f"http://127.0.0.1:{server.port}",
            config,
            server.store,
            KeyRing(keys),
            config.database.url,
        )


@pytest.fixture(scope="session", params=["local", "s3"])
def api(
    request: pytest.FixtureRequest,
    api_database: str,
    mapping_files: list[str],
    keys_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """The API on each store backend in turn."""
    backend = request.param
    bucket = endpoint = ""
    if backend == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_endpoint_url")
    root = tmp_path_factory.mktemp("images")
    config = make_config(
        mapping_files, api_database, keys_dir, backend, root, bucket, endpoint
    )
    yield from start_api(request, config, keys_dir)


@pytest.fixture(scope="session")
def local_api(
    request: pytest.FixtureRequest,
    api_database: str,
    mapping_files: list[str],
    keys_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """The API on the local store, for tests the backend cannot change."""
    config = make_config(
        mapping_files, api_database, keys_dir, "local", tmp_path_factory.mktemp("img")
    )
    # It shares the database with ``api``: only one server may purge it, or
    # this one would "purge" images whose bytes are in the other's store.
    yield from start_api(request, config, keys_dir, purge=3600)


def photo(
    size: tuple[int, int] = (400, 200),
    orientation: int = 1,
    taken: str | None = "2024:05:01 10:20:30",
    fmt: str = "JPEG",
    color: tuple[int, int, int] = (200, 40, 40),
) -> bytes:
    """An image with the EXIF orientation and capture time a phone would write."""
    image = Image.new("RGB", size, color)
    # A dark left half, so tests can tell which way round a thumbnail is.
    image.paste((10, 10, 10), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[274] = orientation
    if taken:
        exif[0x8769] = {36867: taken}
    out = io.BytesIO()
    image.save(out, fmt, exif=exif) if fmt == "JPEG" else image.save(out, fmt)
    return out.getvalue()


def new_record() -> str:
    """A fresh WorkOrder-like id (key prefix 0WO), unique per test."""
    return "0WO" + uuid.uuid4().hex[:15].upper()


Uploader = Callable[..., httpx.Response]


def upload(
    client: httpx.Client,
    data: bytes,
    record: str,
    tags: str = "",
    description: str = "",
    filename: str = "site.jpg",
) -> httpx.Response:
    return client.post(
        "/v1/images",
        files={"file": (filename, data, "application/octet-stream")},
        data={"record": record, "tags": tags, "description": description},
    )
