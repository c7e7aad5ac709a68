"""Real keys made per run and real tokens signed with PyJWT, for the authentication tests.

Nothing here is a fake: the service under test verifies these tokens with its own verifier.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "dashboards"
ISSUER = "https://auth.test"


@dataclass(frozen=True)
class SigningKey:
    """A private key (or shared secret) to sign with, and the file the service reads."""

    algorithm: str
    private: Any
    key_file: Path

    def sign(self, **claims: Any) -> str:
        """A token with ``claims``; ``None`` values are left out (to test missing claims)."""
        return jwt.encode(
            {k: v for k, v in claims.items() if v is not None}, self.private, self.algorithm
        )


def hs256_key(directory: Path) -> SigningKey:
    """A fresh shared secret, written with a trailing newline (the service strips it)."""
    secret = secrets.token_urlsafe(48)  # 64 bytes: long enough for HS512
    path = directory / "jwt-secret"
    path.write_text(secret + "\n")
    return SigningKey("HS256", secret, path)


def public_key(directory: Path, algorithm: str) -> SigningKey:
    """A fresh RS256 or ES256 key pair; the public key's PEM file is what the service reads."""
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"jwt-{algorithm}.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return SigningKey(algorithm, private, path)


def claims(sub: str | None = "alice", ttl_s: float = 600, **extra: Any) -> dict[str, Any]:
    """The usual claims: ``sub``, ``aud``, ``iss``, ``exp`` ``ttl_s`` from now, and ``extra``."""
    return {
        "sub": sub,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "exp": int(time.time() + ttl_s),
        **extra,
    }
