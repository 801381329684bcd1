"""forcelink.log: JSON lines stay valid JSON and registered secrets never show."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from forcelink import log

# Characters JSON escapes (quote, backslash, newline) inside the secret: the
# encoded line holds them escaped, so masking only the encoded text would miss.
PASSWORD = 'pa"ss\\word-4711'
TOKEN = "00Dxx0000001gPL!AQ4AQFfAKEtokenVALUEforTESTS"
PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu\n"
    "-----END PRIVATE KEY-----"
)


@pytest.fixture
def capture(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = log.make_handler(stream, json_output=request.param)
    logger = logging.getLogger("forcelink.test.log")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for secret in (PASSWORD, TOKEN, PRIVATE_KEY):
        log.register_secret(secret)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def _emit(logger: logging.Logger) -> None:
    logger.info("connecting with password %s", PASSWORD)
    logger.warning("token %s refused for org %s", TOKEN, "acme")
    logger.debug("loaded key\n%s", PRIVATE_KEY)
    try:
        raise ValueError(f"bad key line {PRIVATE_KEY.splitlines()[1]}")
    except ValueError:
        logger.exception("signing failed with token=%s", TOKEN)


def _assert_no_secret(text: str) -> None:
    escaped = json.dumps(PASSWORD)[1:-1]
    for secret in (PASSWORD, escaped, TOKEN, *PRIVATE_KEY.splitlines()[1:3]):
        assert secret not in text


@pytest.mark.parametrize("capture", [True], indirect=True)
def test_json_logs__valid_json_and_masked(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    _emit(logger)

    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 4
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    assert entries[0]["logger"] == "forcelink.test.log"
    assert entries[1]["message"] == f"token {log.MASK} refused for org acme"
    assert "Traceback" in entries[3]["exc"]
    _assert_no_secret(stream.getvalue())


@pytest.mark.parametrize("capture", [False], indirect=True)
def test_text_logs__masked(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    _emit(logger)

    assert "token *** refused for org acme" in stream.getvalue()
    _assert_no_secret(stream.getvalue())
