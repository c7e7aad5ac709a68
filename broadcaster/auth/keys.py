"""The keys that check token signatures, and which algorithms fit each kind of key.

A key source answers ``key_for(kid)`` with a :class:`VerificationKey`: the key and the
algorithms it may verify. The algorithm is tied to the key's kind (a secret verifies only
HS*, an RSA key only RS*/PS*, an EC key only the ES* of its curve, Ed25519 only EdDSA), which
makes algorithm confusion impossible: an HS256 token "signed" with an RSA public key's PEM is
refused before PyJWT sees it (and PyJWT would refuse it too).

Two sources live here: :class:`StaticKey` (``--jwt-secret-file`` or ``--jwt-public-key-file``,
read once at startup); the JWKS source is :mod:`broadcaster.auth.jwks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broadcaster.errors import ConfigError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
EDDSA_ALGORITHMS = ("EdDSA",)
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS + tuple(EC_ALGORITHM_BY_CURVE.values()) + EDDSA_ALGORITHMS
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS

# RFC 7518 3.2: an HMAC key at least as long as the hash output (32 bytes for HS256, 48 for
# HS384, 64 for HS512); NIST SP 800-131A: RSA keys of at least 2048 bits. PyJWT checks the
# same bounds (enforce_minimum_key_length); here a short key is a startup error instead.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048

SECRET_FLAG = "--jwt-secret-file"
PUBLIC_KEY_FLAG = "--jwt-public-key-file"
ALGORITHMS_FLAG = "--jwt-algorithms"


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key and the algorithms it may verify (never empty)."""

    key: bytes | PublicKey
    algorithms: frozenset[str]


class KeySource(Protocol):
    """Where the verifier gets the key for a token."""

    @property
    def fitting_algorithms(self) -> tuple[str, ...]:
        """The algorithms this source's keys can verify (the default ``--jwt-algorithms``)."""
        ...

    async def key_for(self, kid: str | None) -> VerificationKey:
        """The key for a token whose header names ``kid`` (or none).

        Raises:
            InvalidToken: no such key.
            KeysUnavailable: the keys cannot be had now.
        """
        ...


def algorithms_for_secret(secret: bytes) -> tuple[str, ...]:
    """The HS* algorithms ``secret`` is long enough for (RFC 7518 3.2)."""
    return tuple(alg for alg in HMAC_ALGORITHMS if len(secret) >= MIN_SECRET_BYTES[alg])


def algorithms_for_public_key(key: object) -> tuple[str, ...]:
    """The algorithms that fit ``key``'s kind; empty for a kind or size we do not accept."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS if key.key_size >= MIN_RSA_BITS else ()
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = EC_ALGORITHM_BY_CURVE.get(key.curve.name)
        return (algorithm,) if algorithm else ()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return EDDSA_ALGORITHMS
    return ()


class StaticKey:
    """One key from a file, for every token whatever its ``kid``."""

    def __init__(self, key: VerificationKey) -> None:
        self._key = key

    @property
    def fitting_algorithms(self) -> tuple[str, ...]:
        return tuple(alg for alg in SUPPORTED_ALGORITHMS if alg in self._key.algorithms)

    async def key_for(self, kid: str | None) -> VerificationKey:
        return self._key


def read_secret_file(path: Path, flag: str = SECRET_FLAG) -> bytes:
    """The shared secret: the file's bytes, surrounding whitespace stripped.

    Raises:
        ConfigError: unreadable, empty, or shorter than 32 bytes (RFC 7518 3.2).
    """
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(flag, str(path), f"cannot be read: {exc.strerror or exc}") from None
    if not secret:
        raise ConfigError(flag, str(path), "is empty")
    if not algorithms_for_secret(secret):
        raise ConfigError(
            flag,
            str(path),
            f"the secret is {len(secret)} bytes; HS256 needs at least "
            f"{MIN_SECRET_BYTES['HS256']} (RFC 7518 3.2)",
        )
    return secret


def read_public_key_file(path: Path, flag: str = PUBLIC_KEY_FLAG) -> PublicKey:
    """The PEM public key in ``path``.

    Raises:
        ConfigError: unreadable, not a PEM public key, or not an RSA (>= 2048 bits), EC
            (P-256, P-384, P-521) or Ed25519 key.
    """
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(flag, str(path), f"cannot be read: {exc.strerror or exc}") from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(flag, str(path), "is not a PEM public key (RSA, EC or Ed25519)") from None
    if not algorithms_for_public_key(key):
        raise ConfigError(
            flag,
            str(path),
            "the key must be RSA of at least 2048 bits, EC on P-256/P-384/P-521, or Ed25519",
        )
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return key


def static_key_from_file(secret_file: Path | None, public_key_file: Path | None) -> StaticKey:
    """The static key of ``--jwt-secret-file`` or else ``--jwt-public-key-file``.

    Raises:
        ConfigError: the file is unusable (see the readers).
    """
    if secret_file is not None:
        secret = read_secret_file(secret_file)
        return StaticKey(VerificationKey(secret, frozenset(algorithms_for_secret(secret))))
    assert public_key_file is not None
    public = read_public_key_file(public_key_file)
    return StaticKey(VerificationKey(public, frozenset(algorithms_for_public_key(public))))


def resolve_algorithms(configured: Iterable[str], fitting: tuple[str, ...]) -> tuple[str, ...]:
    """``--jwt-algorithms`` checked against what the key source can verify, or by default the
    algorithms that fit it.

    Raises:
        ConfigError: an algorithm PyJWT does not know, ``none``, or one that does not fit the
            key (e.g. HS256 with a public key: the door to algorithm confusion).
    """
    chosen = tuple(dict.fromkeys(configured))
    if not chosen:
        return fitting
    known = set(jwt.algorithms.get_default_algorithms()) - {"none"}
    for algorithm in chosen:
        problem = None
        if algorithm not in known:
            problem = f"{algorithm!r} is not a supported algorithm"
        elif algorithm not in fitting:
            problem = f"{algorithm} does not fit the key (fitting: {', '.join(fitting)})"
        if problem:
            raise ConfigError(ALGORITHMS_FLAG, ",".join(chosen), problem)
    return chosen
