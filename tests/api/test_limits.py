"""What the upload refuses: too big, not an image, decompression bombs."""

from __future__ import annotations

import os
import socket
import struct
import zlib

from .conftest import MAX_UPLOAD, Api, new_record, photo, upload


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def test_upload__over_the_size_limit_is_413(local_api: Api) -> None:
    big = photo() + os.urandom(MAX_UPLOAD)  # a JPEG with trailing bytes
    with local_api.client() as client:
        response = upload(client, big, new_record())
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"
        # The connection is still good for the next request.
        assert upload(client, photo(), new_record()).status_code == 201


def test_upload__far_over_the_limit_is_refused_from_its_length(local_api: Api) -> None:
    # httpx will not send a body shorter than its Content-Length: use a socket.
    host, port = local_api.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/images HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {local_api.token()}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {MAX_UPLOAD * 100}\r\n\r\n--x\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode())
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_upload__text_named_jpg_is_415(local_api: Api) -> None:
    with local_api.client() as client:
        response = upload(
            client, b"just some notes\n" * 100, new_record(), filename="a.jpg"
        )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_upload__decompression_bombs_are_refused(local_api: Api) -> None:
    with local_api.client() as client:
        declared = upload(
            client, _png_claiming(50_000, 50_000), new_record(), filename="b.png"
        )
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "image_too_large"
        # A real, valid image: 9 Mpx of one colour compresses to a few KB.
        real = photo(size=(3000, 3000), fmt="PNG", taken=None)
        assert len(real) < 100_000
        refused = upload(client, real, new_record(), filename="c.png")
        assert refused.status_code == 413


def test_upload__bad_fields_are_named(local_api: Api) -> None:
    with local_api.client() as client:
        no_record = upload(client, photo(), "")
        assert no_record.status_code == 422
        assert "record" in no_record.json()["error"]["message"]
        bad_tag = upload(client, photo(), new_record(), tags="a;b")
        assert bad_tag.status_code == 422
        no_file = client.post("/v1/images", data={"record": new_record()})
        assert no_file.status_code == 400
        assert no_file.json()["error"]["code"] == "bad_upload"
        empty = upload(client, b"", new_record())
        assert empty.status_code == 400


def test_errors__one_shape_and_an_openapi_description(local_api: Api) -> None:
    with local_api.client() as client:
        missing_route = client.get("/v1/nothing-here")
        assert missing_route.status_code == 404
        assert set(missing_route.json()["error"]) == {"status", "code", "message"}
        wrong_method = client.put("/v1/images")
        assert wrong_method.json()["error"]["status"] == 405

        spec = client.get("/openapi.json").json()
    assert {
        "/v1/images",
        "/v1/images/{image_id}",
        "/v1/images/{image_id}/thumbnail",
    } <= set(spec["paths"])
    assert (
        "multipart/form-data"
        in spec["paths"]["/v1/images"]["post"]["requestBody"]["content"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
