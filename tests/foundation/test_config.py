"""forcelink.yaml: bad settings stop the CLI with one line naming file:line: key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forcelink import config
from forcelink.errors import ConfigError

CASES = [
    pytest.param(
        "database:\n  url: postgresql://x/y\neventlog:\n  bakend: kafka\n",
        "forcelink.yaml:4: eventlog.bakend: unknown key (did you mean 'backend'?)",
        id="typo-in-key",
    ),
    pytest.param(
        "eventlog:\n  kafka:\n    partitions: lots\n",
        "forcelink.yaml:3: eventlog.kafka.partitions: "
        "must be a whole number (got 'lots')",
        id="wrong-type",
    ),
    pytest.param(
        "eventlog:\n  backend: rabbitmq\n",
        "forcelink.yaml:2: eventlog.backend: must be one of embedded, kafka "
        "(got 'rabbitmq')",
        id="bad-choice",
    ),
    pytest.param(
        "orgs:\n  - login_url: https://localhost:8443\n    client_id: abc\n",
        "forcelink.yaml:2: orgs[0].name: missing required value",
        id="missing-required",
    ),
    pytest.param(
        "logging:\n  json: [1, 2]\n",
        "forcelink.yaml:2: logging.json: must be a single value (bool)",
        id="list-for-scalar",
    ),
    pytest.param(
        "database:\n  url: [unclosed\n",
        "forcelink.yaml:3: YAML syntax error",
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_config__cli_exits_with_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "forcelink.yaml").write_text(text)

    result = subprocess.run(
        [sys.executable, "-m", "forcelink.cli", "config", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"forcelink: {expected}")


def test_good_config__loads_with_defaults_and_env_override(tmp_path: Path) -> None:
    file = tmp_path / "forcelink.yaml"
    file.write_text(
        "database:\n  url: postgresql://a@localhost/db\n"
        "orgs:\n  - name: acme\n    connection_file: org/connection.json\n"
    )

    loaded = config.load(file, environ={"FORCELINK_EVENTLOG_BACKEND": "kafka"})

    assert loaded.database.url == "postgresql://a@localhost/db"
    assert loaded.eventlog.backend == "kafka"
    assert loaded.eventlog.embedded.partitions == 6
    assert loaded.org("acme").connection_file == "org/connection.json"
    with pytest.raises(ConfigError, match="no org named 'other'"):
        loaded.org("other")


def test_env_value_that_does_not_fit__names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(
            tmp_path / "absent.yaml" if False else None,
            environ={
                "FORCELINK_METRICS_LISTEN": "x",
                "FORCELINK_EVENTLOG_BACKEND": "zmq",
            },
        )

    assert str(caught.value).startswith("$FORCELINK_EVENTLOG_BACKEND: must be one of")


def test_named_file_missing__is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.yaml")


def test_cli_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forcelink.cli", "--help"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0
    assert "config" in result.stdout
    assert "forcelink <command> --help" in result.stdout
