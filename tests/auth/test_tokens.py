"""JwtVerifier and the static key files: tokens signed per run (HS256/384/512 with a secret;
RS256/PS256, ES256/ES384 and EdDSA with keys generated per run), and every way a token is
refused, each with its reason."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.auth import reasons
from broadcaster.auth.identity import Identity, InvalidToken, TokenVerifier
from broadcaster.auth.keys import (
    EDDSA_ALGORITHMS,
    HMAC_ALGORITHMS,
    RSA_ALGORITHMS,
    StaticKey,
    VerificationKey,
    algorithms_for_secret,
)
from broadcaster.auth.startup import build_verifier, check_auth_files
from broadcaster.auth.tokens import CLOCK_SKEW_LEEWAY_S, MAX_TOKEN_CHARS, JwtVerifier
from broadcaster.config import build_settings
from broadcaster.errors import ConfigError
from tests.auth.signing import (
    claims,
    hs256_with_raw_key,
    new_ec,
    new_ed25519,
    new_rsa,
    new_secret,
    public_pem,
    sign,
    unsigned,
    write,
)

SECRET = new_secret(64)
RSA_KEY = new_rsa()
EC_KEY = new_ec()
ED_KEY = new_ed25519()

Build = Callable[..., JwtVerifier]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def build(tmp_path: Path, client: httpx.AsyncClient) -> Build:
    """``build(secret=... | public_key=..., **settings)``: a verifier built from settings, as
    the service builds it."""

    def make(secret: bytes | None = None, public_key: bytes | None = None, **extra: Any) -> Any:
        values: dict[str, Any] = {"auth_mode": "jwt", **extra}
        if secret is not None:
            values["jwt_secret_file"] = str(write(tmp_path / "secret", secret))
        if public_key is not None:
            values["jwt_public_key_file"] = str(write(tmp_path / "key.pem", public_key))
        verifier = build_verifier(build_settings(values), client)
        assert isinstance(verifier, JwtVerifier)
        return verifier

    return make


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    reason = caught.value.reason
    assert reason.startswith(reasons.PREFIX)
    assert not token or token not in reason
    assert len(reason.encode()) <= 123  # fits a WebSocket close reason
    return reason


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", HMAC_ALGORITHMS)
async def test_secret_tokens_of_every_hs_algorithm_are_accepted(
    build: Build, algorithm: str
) -> None:
    verifier = build(secret=b"  " + SECRET + b"\n")  # surrounding whitespace is stripped
    exp = int(time.time()) + 600
    token = sign(SECRET, algorithm, exp=exp, tenant="acme", topics=["overview", "region-*"])
    assert await verifier.verify(token) == Identity(
        sub="alice", tenant="acme", topics=("overview", "region-*"), expires_at_unix_s=exp
    )


@pytest.mark.parametrize(
    ("private", "algorithm"),
    [
        (RSA_KEY, "RS256"),
        (RSA_KEY, "PS512"),
        (EC_KEY, "ES256"),
        (new_ec(ec.SECP384R1()), "ES384"),
        (ED_KEY, "EdDSA"),
    ],
)
async def test_public_key_tokens_are_accepted(build: Build, private: Any, algorithm: str) -> None:
    verifier = build(public_key=public_pem(private))
    identity = await verifier.verify(sign(private, algorithm))
    assert (identity.sub, identity.tenant, identity.topics) == ("alice", None, None)


async def test_default_algorithms_follow_the_key_kind(build: Build) -> None:
    assert build(secret=SECRET).algorithms == HMAC_ALGORITHMS
    assert build(secret=new_secret(32)).algorithms == ("HS256",)
    assert build(public_key=public_pem(RSA_KEY)).algorithms == RSA_ALGORITHMS
    assert build(public_key=public_pem(EC_KEY)).algorithms == ("ES256",)
    assert build(public_key=public_pem(new_ec(ec.SECP521R1()))).algorithms == ("ES512",)
    assert build(public_key=public_pem(ED_KEY)).algorithms == EDDSA_ALGORITHMS


async def test_audience_and_issuer_are_accepted_when_they_match(build: Build) -> None:
    verifier = build(secret=SECRET, jwt_audience="dash", jwt_issuer="https://idp")
    token = sign(SECRET, "HS256", aud=["other", "dash"], iss="https://idp")
    assert (await verifier.verify(token)).sub == "alice"


async def test_aud_in_a_token_is_ignored_when_no_audience_is_configured(build: Build) -> None:
    assert (await build(secret=SECRET).verify(sign(SECRET, "HS256", aud="x"))).sub == "alice"


async def test_an_iat_slightly_ahead_is_within_the_clock_skew_leeway(build: Build) -> None:
    token = sign(SECRET, "HS256", iat=int(time.time()) + CLOCK_SKEW_LEEWAY_S - 2)
    assert (await build(secret=SECRET).verify(token)).sub == "alice"


# --- refused --------------------------------------------------------------------------------


def _hs(**overrides: Any) -> str:
    return sign(SECRET, "HS256", **overrides)


REFUSED_WITH_SECRET = [
    ("bad signature", sign(new_secret(64), "HS256"), reasons.SIGNATURE_FAILED),
    ("alg none", unsigned(claims()), reasons.algorithm_not_allowed("none")),
    ("expired", _hs(exp=int(time.time()) - 60), reasons.EXPIRED),
    # Inside PyJWT's leeway but past exp: refused, as the connection would close at exp.
    ("expired within the leeway", _hs(exp=int(time.time()) - 1), reasons.EXPIRED),
    ("nbf in the future", _hs(nbf=int(time.time()) + 600), reasons.NOT_YET_VALID),
    ("iat in the future", _hs(iat=int(time.time()) + 600), reasons.NOT_YET_VALID),
    ("missing sub", _hs(sub=None), reasons.missing_claim("sub")),
    ("missing exp", _hs(exp=None), reasons.missing_claim("exp")),
    ("empty sub", _hs(sub=""), reasons.BAD_SUB),
    ("sub not a string", _hs(sub=42), reasons.BAD_SUB),
    ("exp a string", _hs(exp=str(int(time.time()) + 600)), reasons.BAD_EXP),
    ("exp not a number", _hs(exp="soon"), reasons.MALFORMED),
    ("tenant with a quote", _hs(tenant="acme' OR '1'='1"), reasons.BAD_TENANT),
    ("tenant with a newline", _hs(tenant="acme\n"), reasons.BAD_TENANT),
    ("tenant too long", _hs(tenant="a" * 65), reasons.BAD_TENANT),
    ("tenant not a string", _hs(tenant=7), reasons.BAD_TENANT),
    ("topics not a list", _hs(topics="overview,regressions"), reasons.BAD_TOPICS),
    ("topics with an empty name", _hs(topics=["overview", ""]), reasons.BAD_TOPICS),
    ("topics with a number", _hs(topics=[1]), reasons.BAD_TOPICS),
    ("garbage", "not a token", reasons.MALFORMED),
    ("three garbage parts", "a.b.c", reasons.MALFORMED),
    ("empty", "", reasons.MALFORMED),
    ("not ascii", "é.é.é", reasons.MALFORMED),
    ("lone surrogate", "\ud800", reasons.MALFORMED),
    ("too long", "a" * (MAX_TOKEN_CHARS + 1), reasons.TOO_LONG),
]


@pytest.mark.parametrize(
    ("token", "reason"),
    [case[1:] for case in REFUSED_WITH_SECRET],
    ids=[case[0] for case in REFUSED_WITH_SECRET],
)
async def test_refused_tokens_say_why(build: Build, token: str, reason: str) -> None:
    assert await refused(build(secret=SECRET), token) == reason


async def test_an_algorithm_outside_jwt_algorithms_is_refused(build: Build) -> None:
    verifier = build(secret=SECRET, jwt_algorithms="HS256")
    assert await refused(verifier, sign(SECRET, "HS512")) == reasons.algorithm_not_allowed("HS512")


async def test_hs256_signed_with_the_public_key_pem_is_refused(build: Build) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    pem = public_pem(RSA_KEY)
    token = hs256_with_raw_key(pem, claims())
    assert await refused(build(public_key=pem), token) == reasons.algorithm_not_allowed("HS256")


async def test_a_token_of_another_key_kind_is_refused(build: Build) -> None:
    verifier = build(public_key=public_pem(RSA_KEY))
    assert await refused(verifier, sign(EC_KEY, "ES256")) == reasons.algorithm_not_allowed("ES256")
    assert await refused(verifier, sign(new_rsa(), "RS256")) == reasons.SIGNATURE_FAILED


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (_hs(aud="other", iss="https://idp"), reasons.AUDIENCE_MISMATCH),
        (_hs(iss="https://idp"), reasons.missing_claim("aud")),
        (_hs(aud="dash", iss="https://evil"), reasons.ISSUER_MISMATCH),
        (_hs(aud="dash"), reasons.missing_claim("iss")),
    ],
)
async def test_audience_and_issuer_mismatches_are_refused(
    build: Build, token: str, reason: str
) -> None:
    verifier = build(secret=SECRET, jwt_audience="dash", jwt_issuer="https://idp")
    assert await refused(verifier, token) == reason


def test_a_long_algorithm_name_is_not_echoed() -> None:
    assert (
        reasons.algorithm_not_allowed("X" * 500)
        == "invalid token: algorithm (unsupported) not allowed"
    )
    assert reasons.algorithm_not_allowed(["HS256"]).endswith("(unsupported) not allowed")


@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-=.]{0,80}"))
async def test_any_text_is_a_valid_token_or_an_invalid_token_never_an_error(text: str) -> None:
    # Built directly: a function-scoped fixture is not shared by Hypothesis examples.
    verifier = JwtVerifier(_static_secret(), HMAC_ALGORITHMS)
    reason = reasons.PREFIX
    try:
        await verifier.verify(text)
    except InvalidToken as exc:
        reason = exc.reason
    assert reason.startswith(reasons.PREFIX)


def _static_secret() -> StaticKey:
    return StaticKey(VerificationKey(SECRET, frozenset(algorithms_for_secret(SECRET))))


# --- key files ------------------------------------------------------------------------------


def _settings(tmp_path: Path, **values: Any) -> Any:
    return build_settings({"auth_mode": "jwt", **values})


@pytest.mark.parametrize(
    ("flag", "content", "problem"),
    [
        ("jwt_secret_file", b" \n\t", "is empty"),
        ("jwt_secret_file", b"short", "needs at least 32"),
        ("jwt_public_key_file", b"not a key", "is not a PEM public key"),
        ("jwt_public_key_file", public_pem(new_rsa(1024)), "at least 2048 bits"),
        ("jwt_public_key_file", public_pem(new_ec(ec.SECP256K1())), "P-256/P-384/P-521"),
    ],
)
async def test_unusable_key_files_are_config_errors_naming_the_flag(
    tmp_path: Path, client: httpx.AsyncClient, flag: str, content: bytes, problem: str
) -> None:
    settings = _settings(tmp_path, **{flag: str(write(tmp_path / "key", content))})
    for attempt in (lambda: check_auth_files(settings), lambda: build_verifier(settings, client)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert caught.value.setting == "--" + flag.replace("_", "-")
        assert problem in caught.value.problem


def test_a_private_key_pem_is_not_a_public_key(tmp_path: Path) -> None:
    pem = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    settings = _settings(tmp_path, jwt_public_key_file=str(write(tmp_path / "k.pem", pem)))
    with pytest.raises(ConfigError, match="--jwt-public-key-file"):
        check_auth_files(settings)


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, jwt_secret_file=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="cannot be read"):
        check_auth_files(settings)


@pytest.mark.parametrize(
    ("key_flag", "content", "algorithms"),
    [
        ("jwt_public_key_file", public_pem(RSA_KEY), "RS256,HS256"),
        ("jwt_secret_file", new_secret(32), "HS512"),
        ("jwt_secret_file", SECRET, "RS256"),
        ("jwt_secret_file", SECRET, "XX999"),
    ],
)
def test_algorithms_that_do_not_fit_the_key_are_config_errors(
    tmp_path: Path, key_flag: str, content: bytes, algorithms: str
) -> None:
    settings = _settings(
        tmp_path, **{key_flag: str(write(tmp_path / "k", content))}, jwt_algorithms=algorithms
    )
    with pytest.raises(ConfigError) as caught:
        check_auth_files(settings)
    assert caught.value.setting == "--jwt-algorithms"


async def test_auth_mode_none_builds_no_verifier(client: httpx.AsyncClient) -> None:
    assert build_verifier(build_settings({}), client) is None
