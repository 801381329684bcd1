"""Field photos end to end: the image API and Site_Photo__c, both ways.

One real ``forcelink run`` process serves the image API and syncs
``salesforce.site_photo__c`` with the local org. Everything goes through the
clients people use: httpx against the API (a token from ``forcelink
token``), simple-salesforce against the org. The test walks one photo's life:

1. an upload becomes a Site_Photo__c record, and the row gets its sfid back;
2. tags edited in Salesforce show in the API's tag search;
3. a delete on either side removes the image on the other (after a delete
   in the org, the API's purge also removes the bytes);
4. once both sides are quiet, nobody writes to the org (no echo).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from PIL import Image
from psycopg.rows import dict_row

from tests.e2e.test_two_way import writes
from tests.sf_to_pg.harness import load_examples, slot_streaming
from tests.sf_to_pg.test_crash import start, wait_until, write_config
from tests.support.local_org import LocalOrg

WORK_ORDER_KEY = "WO-IMG-7"
PURGE_SECONDS = 1


def photo(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


def configure(workdir: Path, database_url: str, org: LocalOrg) -> Path:
    """The shared e2e config, with a purge short enough to watch it happen."""
    path = write_config(workdir, database_url, org)
    text = path.read_text()
    path.write_text(
        text.replace("api:\n", f"api:\n  purge_interval_seconds: {PURGE_SECONDS}\n")
    )
    return path


def api_client(config: Path) -> httpx.Client:
    """An httpx client for the API of ``config``, with a token the CLI issued."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORCELINK_")}
    token = subprocess.run(
        [
            *(sys.executable, "-m", "forcelink.cli", "-c", str(config), "token"),
            *("--org", "local", "--user", "field-crew"),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    listen = yaml.safe_load(config.read_text())["api"]["listen"]
    return httpx.Client(
        base_url=f"http://{listen}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def upload(
    api: httpx.Client, data: bytes, tags: str, description: str
) -> dict[str, Any]:
    response = api.post(
        "/v1/images",
        files={"file": ("site.jpg", data, "application/octet-stream")},
        data={"record": WORK_ORDER_KEY, "tags": tags, "description": description},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def mapped_row(database_url: str, image_id: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM salesforce.site_photo__c WHERE image_id__c = %s",
            (image_id,),
        ).fetchone()


def synced_sfid(database_url: str, image_id: str, log: Path) -> str:
    """Wait for the image's row to be synced; its sfid."""
    row = wait_until(
        lambda: (
            (r := mapped_row(database_url, image_id))
            and r["sfid"]
            and r["_sync_state"] == "synced"
            and r
        ),
        f"image {image_id} synced with an sfid",
        log,
        timeout=30,
    )
    return str(row["sfid"])


def in_org(sf: Any, image_id: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = sf.query(
        f"SELECT Id FROM Site_Photo__c WHERE Image_Id__c = '{image_id}'"
    )["records"]
    return records


def stored_files(root: Path, image_id: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and image_id in str(p)]


def private_row(database_url: str, image_id: str) -> bool:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT 1 FROM forcelink.images WHERE id = %s", (image_id,)
        ).fetchone()
    return found is not None


def test_images__synced_with_site_photo_records_both_ways(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    config = configure(tmp_path, fresh_database, org)
    log = tmp_path / "run.log"
    # simple-salesforce reaches sObjects by attribute (sf.Site_Photo__c),
    # which its type hints cannot express.
    sf: Any = org.salesforce(client_tag="office")
    work_order = sf.WorkOrder.create(
        {"Subject": "Roof inspection", "External_Id__c": WORK_ORDER_KEY}
    )
    process = start(config, tmp_path)
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader streaming", log)
        api = api_client(config)
        wait_until(lambda: _answers(api), "the image API answering", log)

        # 1. An upload becomes a Site_Photo__c record with its facts.
        data = photo((320, 240), (200, 40, 40))
        first = upload(api, data, "roof, before", "North side, before the repair")
        first_sfid = synced_sfid(fresh_database, first["id"], log)
        record = sf.Site_Photo__c.get(first_sfid)
        assert record["Image_Id__c"] == first["id"]
        assert record["Work_Order__c"] == work_order["id"]
        assert record["Tags__c"] == "roof;before"
        assert record["Description__c"] == "North side, before the repair"
        assert record["Image_URL__c"] == first["url"]
        assert (
            first["url"] == f"{str(api.base_url).rstrip('/')}/v1/images/{first['id']}"
        )
        assert (record["Width__c"], record["Height__c"]) == (320, 240)
        assert record["Sha256__c"] == hashlib.sha256(data).hexdigest()
        assert api.get(record["Image_URL__c"]).content == data
        by_record = api.get("/v1/images", params={"record": WORK_ORDER_KEY}).json()
        assert [(i["id"], i["record"]) for i in by_record["items"]] == [
            (first["id"], WORK_ORDER_KEY)
        ]

        # 2. Tags edited in Salesforce show in the API's search.
        assert api.get("/v1/images", params={"tag": "damage"}).json()["items"] == []
        before_edit = org.stats()
        sf.Site_Photo__c.update(first_sfid, {"Tags__c": "roof;damage"})
        found = wait_until(
            lambda: api.get("/v1/images", params={"tag": "damage"}).json()["items"],
            "the office's tags in the API's search",
            log,
            timeout=30,
        )
        assert [(i["id"], i["tags"]) for i in found] == [
            (first["id"], ["roof", "damage"])
        ]
        # The edit lands in Postgres tagged as forcelink's own write: the
        # WAL reader drops it, so it never goes back to the org.
        time.sleep(2)
        echo = writes(org.stats()) - writes(before_edit)
        assert echo == 1, "only the office's own update wrote to the org"

        # 3a. Deleted through the API: the record goes from the org.
        second = upload(api, photo((200, 100), (40, 40, 200)), "wall", "East wall")
        second_sfid = synced_sfid(fresh_database, second["id"], log)
        assert api.delete(f"/v1/images/{first['id']}").status_code == 204
        wait_until(
            lambda: not in_org(sf, first["id"]),
            "the API's delete in the org",
            log,
            timeout=30,
        )

        # 3b. Deleted in the org: the API forgets the image and its bytes.
        images = tmp_path / "images"
        assert stored_files(images, second["id"])
        sf.Site_Photo__c.delete(second_sfid)
        wait_until(
            lambda: api.get(f"/v1/images/{second['id']}").status_code == 404,
            "the org's delete in the API",
            log,
            timeout=30,
        )
        wait_until(
            lambda: (
                not stored_files(images, second["id"])
                and not private_row(fresh_database, second["id"])
            ),
            "the purge removing the deleted image's bytes",
            log,
            timeout=15,
        )
        assert in_org(sf, second["id"]) == []

        # 4. Quiet on both sides: nothing writes to the org any more.
        time.sleep(3)
        settled = writes(org.stats())
        time.sleep(4)
        assert writes(org.stats()) == settled, org.stats()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    assert settled > 0, "the org's write counters count nothing"
    assert mapped_row(fresh_database, first["id"]) is None
    assert sf.WorkOrder.get(work_order["id"])["External_Id__c"] == WORK_ORDER_KEY


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/v1/images").status_code == 200
    except httpx.TransportError:
        return False
