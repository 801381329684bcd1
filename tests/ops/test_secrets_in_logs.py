"""No secret in any log line: a full ``forcelink run`` at DEBUG, as JSON.

The service logs in to the local org with its JWT key, streams changes,
syncs a row each way, and stores a photo uploaded through the image API
with a token from ``forcelink token``; all at DEBUG with ``--log-json``.
Then its whole output and the emulator's are searched for:

* every line of the private key's body;
* the API token;
* any access token the org issues. Their shape is learnt by logging in
  with the same key (``<15-char org id>!<random>``): the pattern catches
  every token the org handed the service, whichever it was.

Every line the service wrote must also be one JSON object.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from forcelink.connector.salesforce.auth import fetch_token
from tests.e2e.test_images_sync import (
    WORK_ORDER_KEY,
    api_client,
    photo,
    synced_sfid,
    upload,
)
from tests.ops.run_support import (
    insert_accounts,
    run_config,
    slot_streaming,
    start_run,
    stop_run,
    unsynced,
)
from tests.sf_to_pg.harness import load_examples, rows
from tests.sf_to_pg.test_crash import wait_until
from tests.support.local_org import LocalOrg


def key_lines(private_key_file: str) -> list[str]:
    text = Path(private_key_file).read_text()
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("-----")
    ]


def test_debug_json_logs_carry_no_key_and_no_token(
    org: LocalOrg, fresh_database: str, tmp_path: Path
) -> None:
    load_examples(fresh_database)
    sf: Any = org.salesforce(client_tag="office")
    sf.WorkOrder.create({"Subject": "Log check", "External_Id__c": WORK_ORDER_KEY})
    config = run_config(tmp_path, fresh_database, org)
    log = tmp_path / "run.log"
    process = start_run(config, tmp_path, "--log-level", "DEBUG", "--log-json")
    try:
        wait_until(lambda: slot_streaming(fresh_database), "the reader", log)
        insert_accounts(fresh_database, "LOGS-", 2)
        wait_until(lambda: unsynced(fresh_database, "LOGS-") == 0, "rows to org", log)
        (account,) = rows(
            fresh_database,
            "SELECT sfid FROM salesforce.account WHERE external_id__c = 'LOGS-0'",
        )
        sf.Account.update(account["sfid"], {"Website": "https://logs.example"})
        wait_until(
            lambda: rows(
                fresh_database,
                "SELECT 1 FROM salesforce.account WHERE website = %s",
                "https://logs.example",
            ),
            "the org's edit in Postgres",
            log,
        )
        api = api_client(config)
        image = upload(api, photo((64, 48), (10, 200, 10)), "logs", "log check")
        synced_sfid(fresh_database, image["id"], log)
        api_token = str(api.headers["Authorization"]).removeprefix("Bearer ")
    finally:
        stop_run(process)

    output = log.read_text(errors="replace")
    emulator = (org.workdir / "emulator.log").read_text(errors="replace")
    mine = fetch_token(org.connection()).access_token
    org_token = re.compile(re.escape(mine.split("!", 1)[0]) + r"![\w.\-]{20,}")
    assert org_token.fullmatch(mine), "the token pattern must match a real token"
    assert len(key_lines(org.connection().private_key_file)) > 10

    for name, text in (("forcelink run", output), ("emulator", emulator)):
        for line in key_lines(org.connection().private_key_file):
            assert line not in text, f"{name} printed a private key line"
        assert api_token not in text, f"{name} printed the API token"
        found = org_token.findall(text)
        assert not found, f"{name} printed {len(found)} org access tokens"

    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) > 20, "DEBUG should say more than this"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(entry), line
    assert any(json.loads(line)["level"] == "DEBUG" for line in lines)
