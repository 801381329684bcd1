"""Bearer tokens for the image API: RS256 JWTs signed with one key per org.

Each org has its own RSA key pair under ``api.keys_dir``::

    keys/acme.key.pem   private key (mode 0600), created on first use by
                        ``forcelink token``; never leaves this machine
    keys/acme.pub.pem   public key the API verifies acme's tokens with

A token's claims: ``iss`` and ``aud`` from the config, ``sub`` the user,
``org`` the org, ``iat`` and ``exp``. Verification reads the ``org`` claim
without trusting it, only to choose the public key, then decodes again with
that key and ``algorithms=["RS256"]`` pinned, requiring ``exp``, ``iat``,
``sub`` and ``org`` and checking issuer and audience. So ``alg: none``, an
HS256 token signed with a public key as its secret (the HS/RS confusion),
another org's key or an expired token all fail in the same way:
``InvalidToken``, which the API turns into a 401 without saying why.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from forcelink import log as forcelink_log
from forcelink.config import ApiConfig
from forcelink.errors import ForcelinkError

log = logging.getLogger("forcelink.api.auth")

ALGORITHM = "RS256"
LEEWAY_SECONDS = 30
_ORG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class InvalidToken(ForcelinkError):
    """The token is missing, malformed, forged, expired or not for us."""


@dataclass(frozen=True)
class Principal:
    org: str
    user: str


class KeyRing:
    """The per-org key pairs in one directory; public keys are cached."""

    def __init__(self, keys_dir: str | Path) -> None:
        self.dir = Path(keys_dir)
        self._public: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def _paths(self, org: str) -> tuple[Path, Path]:
        if not _ORG.match(org):
            raise InvalidToken("not a valid org name")
        return self.dir / f"{org}.key.pem", self.dir / f"{org}.pub.pem"

    def private_key_pem(self, org: str) -> bytes:
        """The org's signing key, created (with its public half) on first use."""
        private_path, public_path = self._paths(org)
        with self._lock:
            if not private_path.exists():
                self._create(private_path, public_path)
                log.info("created a token signing key for org %s", org)
            pem = private_path.read_bytes()
        forcelink_log.register_secret(pem.decode())
        return pem

    def _create(self, private_path: Path, public_path: Path) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private)
        public_path.write_bytes(public)

    def public_key(self, org: str) -> rsa.RSAPublicKey:
        """The org's verification key; ``InvalidToken`` if the org has none."""
        cached = self._public.get(org)
        if cached is not None:
            return cached
        _, public_path = self._paths(org)
        try:
            key = serialization.load_pem_public_key(public_path.read_bytes())
        except FileNotFoundError:
            raise InvalidToken("no key for this org") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidToken("the org's public key is not an RSA key")
        self._public[org] = key
        return key


def issue_token(
    keys: KeyRing, config: ApiConfig, org: str, user: str, ttl_seconds: int = 3600
) -> str:
    """A signed token for ``user`` of ``org``, valid for ``ttl_seconds``."""
    if not user:
        raise ValueError("a token needs a user")
    now = int(time.time())
    claims = {
        "iss": config.token_issuer,
        "aud": config.token_audience,
        "sub": user,
        "org": org,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    token = jwt.encode(claims, keys.private_key_pem(org), algorithm=ALGORITHM)
    forcelink_log.register_secret(token)
    return token


def verify_token(keys: KeyRing, config: ApiConfig, token: str) -> Principal:
    """The org and user a token names, once its signature and claims check out."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        org = unverified.get("org")
        if not isinstance(org, str):
            raise InvalidToken("no org claim")
        claims = jwt.decode(
            token,
            keys.public_key(org),
            algorithms=[ALGORITHM],
            audience=config.token_audience,
            issuer=config.token_issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "org"]},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(f"token rejected: {type(error).__name__}") from None
    if claims["org"] != org or not isinstance(claims["sub"], str):
        raise InvalidToken("token rejected: claims changed")
    return Principal(org=org, user=claims["sub"])
