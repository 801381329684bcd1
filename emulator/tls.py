"""The emulator's TLS and login material, kept in the ``--tls-dir`` folder.

Files written there (and reused on the next start, so that a restarted
emulator keeps trusting the same clients and vice versa):

- ``ca.pem``: the local test CA clients must trust; ``ca-key.pem`` its key.
- ``app-key.pem``: the connected app's private key, used by clients to sign
  JWT assertions (mode 0600).
- ``connection.json``: ``login_url``, ``instance_url``, ``client_id``,
  ``username``, ``private_key_file``, ``ca_file``.

The server certificate is issued fresh by the CA at each start.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CONNECTION_FILE = "connection.json"
DEFAULT_USERNAME = "integration@forcelink.local"


@dataclass
class Material:
    ca_file: Path
    key_file: Path
    connection_file: Path
    client_id: str
    username: str
    public_key_pem: str
    server_context: ssl.SSLContext


def prepare(directory: Path, hostnames: list[str]) -> Material:
    """Create or reuse the CA, the app key and identities under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hostnames).configure_cert(context)

    key_file = directory / "app-key.pem"
    if not key_file.exists():
        _write_private(key_file, _new_key())
    private = serialization.load_pem_private_key(key_file.read_bytes(), None)
    public_pem = (
        private.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )

    previous = _previous(directory / CONNECTION_FILE)
    return Material(
        ca_file=directory / "ca.pem",
        key_file=key_file,
        connection_file=directory / CONNECTION_FILE,
        client_id=previous.get("client_id") or "3MVG9" + secrets.token_urlsafe(60),
        username=previous.get("username") or DEFAULT_USERNAME,
        public_key_pem=public_pem,
        server_context=context,
    )


def write_connection(material: Material, url: str) -> None:
    """Write ``connection.json`` for clients of the org served at ``url``."""
    connection = {
        "login_url": url,
        "instance_url": url,
        "client_id": material.client_id,
        "username": material.username,
        "private_key_file": str(material.key_file.resolve()),
        "ca_file": str(material.ca_file.resolve()),
    }
    partial = material.connection_file.with_suffix(".partial")
    partial.write_text(json.dumps(connection, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, material.connection_file)


def _ca(directory: Path) -> trustme.CA:
    cert, key = directory / "ca.pem", directory / "ca-key.pem"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="forcelink local org")
    _write_private(key, ca.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(cert))
    return ca


def _new_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def _previous(path: Path) -> dict[str, str]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
