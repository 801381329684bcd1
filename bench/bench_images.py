"""Benchmark the image API: cached thumbnails, originals, 10 MB uploads.

    eval "$(python scripts/services.py env)"
    python bench/bench_images.py [--backend local|s3] [--seconds 10] [--concurrency 32]

Starts the API as a subprocess (one uvicorn worker) on a fresh database whose
tables come from ``mappings apply``, then prints:

* upload throughput for 10 MB JPEGs, and the server's peak RSS while
  receiving them (VmHWM from /proc, so nothing between samples is missed);
* requests/s and p50/p99 latency for cached thumbnails and for originals
  under concurrent load.

The load generator (httpx, asyncio) runs on the same machine and takes CPU
from the server: figures are a floor, not the API's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import psycopg
import yaml
from PIL import Image

from forcelink.api.auth import KeyRing, issue_token
from forcelink.api.server import free_port
from forcelink.config import Config
from forcelink.connector.images.s3 import S3Store
from forcelink.mapping.ddl import apply
from forcelink.mapping.loader import load_mappings

ROOT = Path(__file__).resolve().parent.parent
PORTS = range(55650, 55700)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["local", "s3"], default="local")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--uploads", type=int, default=12)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()

    base = os.environ.get("FORCELINK_DATABASE_URL")
    if not base:
        print("set FORCELINK_DATABASE_URL (scripts/services.py env)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    database = _create_database(base)
    try:
        config_file = _write_config(work, database, args.backend)
        with _Server(config_file) as server:
            token = issue_token(
                KeyRing(work / "keys"), Config().api, "local", "bench", 3600
            )
            asyncio.run(_run(server, token, args))
    finally:
        _drop_database(base, database)
    return 0


def _create_database(base: str) -> str:
    name = f"bench_images_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    apply(url, load_mappings([ROOT / "mappings" / "site_photo.yaml"]))
    return url


def _drop_database(base: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _write_config(work: Path, database: str, backend: str) -> Path:
    images: dict[str, object] = {
        "backend": backend,
        "local_dir": str(work / "images"),
        "max_upload_bytes": 32 * 1024 * 1024,
        "max_image_pixels": 60_000_000,
    }
    if backend == "s3":
        endpoint = os.environ["FORCELINK_IMAGES_S3_ENDPOINT_URL"]
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        S3Store(bucket, endpoint_url=endpoint).ensure_bucket()
        images["s3"] = {"bucket": bucket, "endpoint_url": endpoint, "prefix": "b/"}
    config = {
        "database": {"url": database},
        "images": images,
        "api": {"keys_dir": str(work / "keys")},
        "mappings": [str(ROOT / "mappings" / "site_photo.yaml")],
        "logging": {"level": "WARNING"},
    }
    path = work / "forcelink.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class _Server:
    """The API in a subprocess, so its memory can be read from /proc."""

    def __init__(self, config_file: Path) -> None:
        self.port = free_port(PORTS)
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "forcelink.api.server",
            "--config",
            str(config_file),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        # Unset variables would override the file (FORCELINK_* wins).
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
        self.process = subprocess.Popen(self.command, env=env, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/openapi.json").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the API server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def memory(self, field: str) -> int:
        """A /proc/<pid>/status figure in bytes (VmRSS now, VmHWM the peak)."""
        assert self.process
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)


def _jpeg(width: int, height: int, noise: bool) -> bytes:
    if noise:  # noise does not compress: about 10 MB at 3500x2700, quality 95
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (90, 120, 60))
        image.paste((200, 200, 200), (0, 0, width // 3, height // 2))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def _upload_form(data: bytes, i: int) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=f"photo{i}.jpg", content_type="image/jpeg")
    form.add_field("record", f"WO-{i % 7}")
    form.add_field("tags", "bench")
    form.add_field("description", "bench photo")
    return form


async def _run(server: _Server, token: str, args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(
        server.url, headers=headers, connector=connector
    ) as client:
        await _uploads(server, client, args.uploads)
        ids = await _seed(client, args.images)
        thumbs = [f"/v1/images/{i}/thumbnail?w=256" for i in ids]
        originals = [f"/v1/images/{i}" for i in ids]
        for name, paths in (("cached thumbnails", thumbs), ("originals", originals)):
            await _load(client, name, paths, args.seconds, args.concurrency)
    peak = server.memory("VmHWM") / 2**20
    print(f"server peak RSS over the whole run: {peak:.0f} MiB")


async def _post(client: aiohttp.ClientSession, data: bytes, i: int) -> str:
    async with client.post("/v1/images", data=_upload_form(data, i)) as response:
        response.raise_for_status()
        return str((await response.json())["id"])


async def _uploads(server: _Server, client: aiohttp.ClientSession, count: int) -> None:
    big = _jpeg(3500, 2700, noise=True)
    before = server.memory("VmRSS")
    started = time.perf_counter()
    for i in range(count):
        await _post(client, big, i)
    elapsed = time.perf_counter() - started
    megabytes = len(big) * count / 2**20
    print(
        f"upload: {count} x {len(big) / 2**20:.1f} MiB JPEG in {elapsed:.2f} s = "
        f"{count / elapsed:.1f} uploads/s, {megabytes / elapsed:.1f} MiB/s (sequential)"
    )
    print(
        f"upload: server RSS {before / 2**20:.0f} MiB before, peak "
        f"{server.memory('VmHWM') / 2**20:.0f} MiB during (VmHWM)"
    )


async def _seed(client: aiohttp.ClientSession, count: int) -> list[str]:
    """Upload ``count`` ordinary photos and fetch each thumbnail once (cache it)."""
    data = _jpeg(1600, 1200, noise=False)
    ids = [await _post(client, data, i) for i in range(count)]
    started = time.perf_counter()
    for image_id in ids:
        async with client.get(f"/v1/images/{image_id}/thumbnail?w=256") as response:
            response.raise_for_status()
            await response.read()
    per = (time.perf_counter() - started) / count * 1000
    print(
        f"seed: {count} photos of {len(data) / 1024:.0f} KiB; "
        f"first thumbnail request {per:.1f} ms each (generate + store)"
    )
    return ids


async def _load(
    client: aiohttp.ClientSession,
    name: str,
    paths: list[str],
    seconds: float,
    workers: int,
) -> None:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with client.get(random.choice(paths)) as response:
                await response.read()
                errors += response.status != 200
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rate = len(latencies) / elapsed
    print(
        f"{name}: {rate:.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"({len(latencies)} requests, {workers} concurrent, {errors} errors)"
    )


if __name__ == "__main__":
    sys.exit(main())
