"""``forcelink orgs add|list|remove`` and the name resolution others rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forcelink import cli
from forcelink import config as configuration
from forcelink.orgs import all_orgs, connection_for
from tests.support.local_org import LocalOrg


@pytest.fixture
def config_file(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("FORCELINK_DATABASE_URL", fresh_database)
    path = tmp_path / "forcelink.yaml"
    path.write_text(f"database: {{url: '{fresh_database}'}}\n")
    return path


def _other_key(tmp_path: Path) -> Path:
    """An RSA key the org has never seen."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "other.pem"
    path.write_bytes(pem)
    return path


def _cli(config_file: Path, *args: str) -> int:
    return cli.main(["-c", str(config_file), *args])


def _registry(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT name, instance_url, details FROM forcelink.orgs ORDER BY name"
        ).fetchall()


def test_orgs_add__good_key_logs_in_and_stores_the_path_only(
    org: LocalOrg, config_file: Path, fresh_database: str, capsys: Any
) -> None:
    conn = org.connection()

    code = _cli(
        config_file, "orgs", "add", "prod",
        "--login-url", conn.login_url, "--client-id", conn.client_id,
        "--username", conn.username, "--private-key", conn.private_key_file,
        "--ca-file", str(conn.ca_file),
    )  # fmt: skip

    assert code == 0
    assert f"org prod added: {org.instance_url}" in capsys.readouterr().out
    [(name, instance, details)] = _registry(fresh_database)
    assert (name, instance) == ("prod", org.instance_url)
    assert details["private_key_file"] == str(Path(conn.private_key_file).resolve())
    key = Path(conn.private_key_file).read_text()
    assert "PRIVATE KEY" not in json.dumps(details)
    assert key.splitlines()[1] not in json.dumps(details)


def test_orgs_add__connection_file(
    org: LocalOrg, config_file: Path, fresh_database: str
) -> None:
    code = _cli(
        config_file, "orgs", "add", "emu", "--connection-file", str(org.connection_file)
    )

    assert code == 0
    assert [row[0] for row in _registry(fresh_database)] == ["emu"]


def test_orgs_add__bad_key_is_refused_in_the_orgs_words_and_not_stored(
    org: LocalOrg, config_file: Path, fresh_database: str, tmp_path: Path, capsys: Any
) -> None:
    bad = _other_key(tmp_path)

    code = _cli(
        config_file, "orgs", "add", "prod", "--connection-file",
        str(org.connection_file), "--private-key", str(bad),
    )  # fmt: skip

    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "invalid_grant" in err
    assert bad.read_text().splitlines()[1] not in err
    with psycopg.connect(fresh_database) as conn:
        present = conn.execute("SELECT to_regclass('forcelink.orgs')").fetchone()
        stored = (
            conn.execute("SELECT count(*) FROM forcelink.orgs").fetchone()
            if (present and present[0])
            else (0,)
        )
    assert stored == (0,)


def test_orgs_list__file_and_registry_with_login_check(
    org: LocalOrg, config_file: Path, tmp_path: Path, capsys: Any
) -> None:
    config_file.write_text(
        config_file.read_text()
        + f"orgs:\n  - {{name: local, connection_file: '{org.connection_file}'}}\n"
    )
    key_copy = tmp_path / "copy.pem"
    key_copy.write_text(Path(org.connection().private_key_file).read_text())
    _cli(config_file, "orgs", "add", "broken", "--connection-file",
         str(org.connection_file), "--private-key", str(key_copy))  # fmt: skip
    key_copy.write_text(_other_key(tmp_path).read_text())  # the key was rotated
    capsys.readouterr()

    code = _cli(config_file, "orgs", "list", "--check")

    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # one org cannot log in
    assert lines[0].split() == ["NAME", "SOURCE", "INSTANCE", "USER", "LOGIN"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["local"].split()[1:3] == ["config", org.instance_url]
    assert rows["local"].endswith("ok")
    assert rows["broken"].split()[1] == "registry"
    assert "failed: invalid_grant" in rows["broken"]


def test_connection_for__file_wins_over_the_registry_with_a_warning(
    org: LocalOrg, config_file: Path, tmp_path: Path, capsys: Any
) -> None:
    _cli(
        config_file,
        "orgs",
        "add",
        "local",
        "--connection-file",
        str(org.connection_file),
    )
    _cli(config_file, "orgs", "add", "second", "--connection-file",
         str(org.connection_file))  # fmt: skip
    other_key = _other_key(tmp_path)
    config_file.write_text(
        config_file.read_text()
        + "orgs:\n  - {name: local, login_url: https://login.example.com,"
        + " client_id: file-app, username: file-user,"
        + f" private_key_file: '{other_key}'}}\n"
    )
    settings = configuration.load(config_file)

    names = [o.name for o in all_orgs(settings)]
    local = connection_for(settings, "local")
    second = connection_for(settings, "second")

    assert names == ["local", "second"]
    assert (local.client_id, local.username) == ("file-app", "file-user")
    # cli.main installed the log handler on this test's (captured) stderr
    warnings = capsys.readouterr().err
    assert "org local is both in" in warnings
    assert "the file's settings win" in warnings
    assert second.instance_url == org.instance_url
    assert second.username == org.connection().username


def test_orgs_remove(org: LocalOrg, config_file: Path, fresh_database: str) -> None:
    _cli(
        config_file,
        "orgs",
        "add",
        "gone",
        "--connection-file",
        str(org.connection_file),
    )

    assert _cli(config_file, "orgs", "remove", "gone") == 0
    assert _registry(fresh_database) == []
    assert _cli(config_file, "orgs", "remove", "gone") == 2
