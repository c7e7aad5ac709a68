"""Keys made per test run and tokens signed with them (real PyJWT signatures; nothing on disk
but what a test writes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_secret(size: int = 64) -> bytes:
    return secrets.token_hex(size // 2).encode()


def new_rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_ec(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def new_ed25519() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    """``sub`` alice, ``exp`` in ten minutes, plus ``overrides`` (a value None removes a claim)."""
    values: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 600}
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: Any, algorithm: str, kid: str | None = None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_raw_key(key: bytes, payload: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is ``key`` whatever it is, signed by hand: PyJWT refuses
    to use a PEM public key as an HMAC secret, which is what the algorithm-confusion attack
    does."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token."""
    return jwt.encode(payload, None, algorithm="none")


def jwk(key: PrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key``."""
    public = key.public_key()
    algorithm: Any
    if isinstance(public, rsa.RSAPublicKey):
        algorithm = jwt.algorithms.RSAAlgorithm
    elif isinstance(public, ec.EllipticCurvePublicKey):
        algorithm = jwt.algorithms.ECAlgorithm
    else:
        algorithm = jwt.algorithms.OKPAlgorithm
    data: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data
