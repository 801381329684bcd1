"""The image API end to end over HTTP, on both store backends."""

from __future__ import annotations

import hashlib
import io
import time

import psycopg
from PIL import Image

from forcelink.connector.images import ObjectMissing, image_prefix
from forcelink.connector.images.keys import derived_key

from .conftest import Api, new_record, photo, upload


def test_upload__records_sniffed_facts_and_the_mapped_row(api: Api) -> None:
    data = photo(size=(400, 200), orientation=6)
    record = new_record()
    with api.client() as client:
        response = upload(
            client, data, record, "roof, crack", "Crack above window", "x.png"
        )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == "image/jpeg"  # sniffed, not from the name
    assert (body["width"], body["height"]) == (200, 400)  # orientation 6 honoured
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)
    assert body["captured_at"].startswith("2024-05-01T10:20:30")
    assert body["tags"] == ["roof", "crack"]
    assert body["record"] == record
    assert body["sync_state"] == "pending"
    assert response.headers["location"] == body["url"]

    with psycopg.connect(api.database) as conn:
        row = conn.execute(
            "SELECT work_order__c, tags__c, image_url__c, sha256__c, width__c,"
            " _sync_state FROM salesforce.site_photo__c WHERE image_id__c = %s",
            (body["id"],),
        ).fetchone()
    assert row == (record, "roof;crack", body["url"], body["sha256"], 200, "pending")


def test_original__bytes_etag_and_conditional_requests(api: Api) -> None:
    data = photo(size=(300, 300))
    with api.client() as client:
        image = upload(client, data, new_record()).json()
        got = client.get(f"/v1/images/{image['id']}")
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == "image/jpeg"
        etag, modified = got.headers["etag"], got.headers["last-modified"]
        assert etag == f'"{image["sha256"]}"'

        same = client.get(f"/v1/images/{image['id']}", headers={"If-None-Match": etag})
        assert same.status_code == 304
        assert same.content == b""
        since = client.get(
            f"/v1/images/{image['id']}", headers={"If-Modified-Since": modified}
        )
        assert since.status_code == 304
        changed = client.get(
            f"/v1/images/{image['id']}", headers={"If-None-Match": '"other"'}
        )
        assert changed.status_code == 200


def test_original__range_requests(api: Api) -> None:
    data = photo(size=(300, 300))
    size = len(data)
    with api.client() as client:
        image = upload(client, data, new_record()).json()
        url = f"/v1/images/{image['id']}"

        first = client.get(url, headers={"Range": "bytes=0-99"})
        assert first.status_code == 206
        assert first.content == data[:100]
        assert first.headers["content-range"] == f"bytes 0-99/{size}"

        tail = client.get(url, headers={"Range": "bytes=-50"})
        assert tail.status_code == 206
        assert tail.content == data[-50:]

        middle = client.get(url, headers={"Range": f"bytes=100-{size + 500}"})
        assert middle.content == data[100:]

        beyond = client.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"
        assert beyond.json()["error"]["code"] == "range_not_satisfiable"

        stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200
        assert stale.content == data


def test_thumbnail__upright_fitted_cached_and_conditional(api: Api) -> None:
    # Stored landscape with orientation 6: displayed as portrait, dark half on top.
    data = photo(size=(400, 200), orientation=6)
    with api.client() as client:
        image = upload(client, data, new_record()).json()
        url = f"/v1/images/{image['id']}/thumbnail"
        first = client.get(url, params={"w": 128})
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(first.content))
        assert thumb.size == (64, 128)
        top, bottom = thumb.getpixel((32, 10)), thumb.getpixel((32, 118))
        assert sum(top) < 100 < sum(bottom)  # type: ignore[arg-type]  # RGB tuples

        key = derived_key("local", image["id"], "thumb-128x128.jpeg")
        assert api.store.read_all(key) == first.content  # cached in the store
        again = client.get(url, params={"w": 128})
        assert again.content == first.content

        etag = first.headers["etag"]
        cached = client.get(url, params={"w": 128}, headers={"If-None-Match": etag})
        assert cached.status_code == 304

        webp = client.get(url, params={"w": 64, "h": 256, "format": "webp"})
        assert webp.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(webp.content)).format == "WEBP"

        odd = client.get(url, params={"w": 100})
        assert odd.status_code == 400
        assert odd.json()["error"]["code"] == "unsupported_size"


def test_thumbnail__carries_the_orgs_watermark(api: Api) -> None:
    data = photo(size=(256, 256), color=(10, 10, 10))
    with api.client("wmorg") as marked, api.client() as plain:
        mine = upload(marked, data, new_record()).json()
        theirs = upload(plain, data, new_record()).json()
        with_mark = marked.get(f"/v1/images/{mine['id']}/thumbnail?w=256").content
        without = plain.get(f"/v1/images/{theirs['id']}/thumbnail?w=256").content

    def light_pixels(jpeg: bytes) -> int:
        picture = Image.open(io.BytesIO(jpeg)).convert("L")
        corner = picture.crop((128, 200, 256, 256))  # where the text is drawn
        return sum(1 for value in corner.get_flattened_data() if value > 150)

    assert light_pixels(with_mark) > 50
    assert light_pixels(without) == 0


def test_patch__tags_description_annotations(api: Api) -> None:
    with api.client() as client:
        image = upload(client, photo(), new_record(), "before").json()
        url = f"/v1/images/{image['id']}"
        shapes = [
            {"type": "rect", "points": [[0.1, 0.1], [0.4, 0.5]], "label": "rust"},
            {"type": "polygon", "points": [[0, 0], [1, 0], [0.5, 1]]},
        ]
        patched = client.patch(
            url,
            json={
                "tags": ["after", "urgent"],
                "description": "Gutter",
                "annotations": shapes,
            },
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert body["tags"] == ["after", "urgent"]
        assert body["description"] == "Gutter"
        assert body["annotations"][0]["label"] == "rust"
        assert body["sync_state"] == "pending"

        only_tags = client.patch(url, json={"tags": ["x"]}).json()
        assert only_tags["description"] == "Gutter"
        assert len(only_tags["annotations"]) == 2

        bad = client.patch(
            url, json={"annotations": [{"type": "rect", "points": [[2, 0]]}]}
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_request"
        assert bad.json()["error"]["details"]
        unknown = client.patch(url, json={"owner": "me"})
        assert unknown.status_code == 422


def test_search__record_tag_text_pages_and_salesforce_edits(api: Api) -> None:
    record = new_record()
    with api.client() as client:
        ids = [
            upload(client, photo(), record, "roof", "Cracked chimney flashing").json()[
                "id"
            ],
            upload(client, photo(), record, "wall", "Damp patch near floor").json()[
                "id"
            ],
            upload(client, photo(), record, "roof,urgent", "Missing tiles").json()[
                "id"
            ],
        ]
        client.patch(
            f"/v1/images/{ids[1]}",
            json={
                "annotations": [
                    {"type": "point", "points": [[0.5, 0.5]], "label": "mould"}
                ]
            },
        )

        def found(**params: str) -> list[str]:
            page = client.get("/v1/images", params={"record": record, **params})
            assert page.status_code == 200, page.text
            return [item["id"] for item in page.json()["items"]]

        assert found() == ids[::-1]  # newest first
        assert found(tag="roof") == [ids[2], ids[0]]
        assert found(q="chimney") == [ids[0]]
        assert found(q="cracks") == [ids[0]]  # stemmed
        assert found(q="mould") == [ids[1]]  # annotation label
        assert found(q="urgent") == [ids[2]]  # tags are searched too

        first = client.get("/v1/images", params={"record": record, "limit": 2}).json()
        assert [i["id"] for i in first["items"]] == [ids[2], ids[1]]
        rest = client.get(
            "/v1/images",
            params={"record": record, "limit": 2, "cursor": first["next_cursor"]},
        ).json()
        assert [i["id"] for i in rest["items"]] == [ids[0]]
        assert rest["next_cursor"] is None

        # What the sync does when tags are edited in Salesforce.
        with psycopg.connect(api.database, autocommit=True) as conn:
            conn.execute(
                "UPDATE salesforce.site_photo__c SET tags__c = 'wall;asbestos',"
                " _sync_state = 'synced' WHERE image_id__c = %s",
                (ids[0],),
            )
        assert found(tag="asbestos") == [ids[0]]
        assert found(q="asbestos") == [ids[0]]
        assert client.get(f"/v1/images/{ids[0]}/thumbnail?w=64").status_code == 200


def test_delete__removes_rows_bytes_and_derived_images(api: Api) -> None:
    with api.client() as client:
        record = new_record()
        image = upload(client, photo(), record).json()
        url = f"/v1/images/{image['id']}"
        assert client.get(f"{url}/thumbnail?w=64").status_code == 200

        assert client.delete(url).status_code == 204
        assert client.get(url).status_code == 404
        assert client.get(f"{url}/thumbnail?w=64").status_code == 404
        assert client.get("/v1/images", params={"record": record}).json()["items"] == []
        assert client.delete(url).status_code == 404

    prefix = image_prefix("local", image["id"])
    for key in (
        prefix + "original",
        derived_key("local", image["id"], "thumb-64x64.jpeg"),
    ):
        try:
            api.store.stat(key)
            raise AssertionError(f"{key} still stored")
        except ObjectMissing:
            pass
    with psycopg.connect(api.database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM salesforce.site_photo__c WHERE image_id__c = %s",
            (image["id"],),
        ).fetchone()
    assert left == (0,)


def test_delete_in_salesforce__hides_then_purges_the_image(api: Api) -> None:
    with api.client() as client:
        image = upload(client, photo(), new_record()).json()
        url = f"/v1/images/{image['id']}"
        assert client.get(url).status_code == 200

        # What the sync does when the Site_Photo__c record is deleted in Salesforce.
        with psycopg.connect(api.database, autocommit=True) as conn:
            conn.execute(
                "UPDATE salesforce.site_photo__c SET isdeleted = true"
                " WHERE image_id__c = %s",
                (image["id"],),
            )
        assert client.get(url).status_code == 404

    key = image_prefix("local", image["id"]) + "original"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            api.store.stat(key)
        except ObjectMissing:
            return
        time.sleep(0.1)
    raise AssertionError("the purge did not remove the bytes of a deleted image")


def test_orgs__cannot_see_each_others_images(api: Api) -> None:
    record = new_record()
    with api.client("local") as owner, api.client("intruder") as intruder:
        image = upload(owner, photo(), record, "secret", "Private photo").json()
        url = f"/v1/images/{image['id']}"

        for response in (
            intruder.get(url),
            intruder.get(url, headers={"Range": "bytes=0-9"}),
            intruder.get(f"{url}/thumbnail?w=64"),
            intruder.patch(url, json={"tags": ["mine"]}),
            intruder.delete(url),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
        for params in ({"record": record}, {"tag": "secret"}, {"q": "private"}):
            assert intruder.get("/v1/images", params=params).json()["items"] == []

        still = owner.get(url)
        assert still.status_code == 200
        assert owner.get(url.replace(image["id"][:8], "00000000")).status_code == 404
        assert owner.get("/v1/images/not-a-uuid").status_code == 404


def test_orgs__each_writes_its_own_mapped_table(api: Api) -> None:
    with api.client("beta") as client:
        image = upload(client, photo(), new_record()).json()
        assert client.get(f"/v1/images/{image['id']}").status_code == 200
    with psycopg.connect(api.database) as conn:
        beta = conn.execute(
            "SELECT count(*) FROM salesforce_beta.site_photo__c WHERE image_id__c = %s",
            (image["id"],),
        ).fetchone()
        default = conn.execute(
            "SELECT count(*) FROM salesforce.site_photo__c WHERE image_id__c = %s",
            (image["id"],),
        ).fetchone()
    assert (beta, default) == ((1,), (0,))
