"""From settings to the auth parts: the token verifier, and the file checks done before serving.

Every file is read here, at startup, so a missing, empty or wrong key or token file stops the
process with exit code 2 and a line naming the flag, before any port is opened.
"""

from __future__ import annotations

import httpx

from broadcaster.auth.admin import AdminTokens
from broadcaster.auth.identity import TokenVerifier
from broadcaster.auth.jwks import JwksKeys
from broadcaster.auth.keys import (
    ASYMMETRIC_ALGORITHMS,
    KeySource,
    resolve_algorithms,
    static_key_from_file,
)
from broadcaster.auth.tokens import JwtVerifier
from broadcaster.config import Settings


def build_verifier(settings: Settings, client: httpx.AsyncClient) -> TokenVerifier | None:
    """The token verifier of ``--auth-mode jwt``, or None for ``--auth-mode none``.

    Args:
        settings: the validated settings (jwt mode has exactly one key source there).
        client: the service's HTTP client, used only for ``--jwks-url``.

    Raises:
        ConfigError: a key file is unreadable or unusable, or ``--jwt-algorithms`` does not
            fit the key.
    """
    if settings.auth_mode == "none":
        return None
    keys: KeySource
    if settings.jwks_url is not None:
        keys = JwksKeys(str(settings.jwks_url), client)
    else:
        keys = static_key_from_file(settings.jwt_secret_file, settings.jwt_public_key_file)
    return JwtVerifier(
        keys,
        resolve_algorithms(settings.jwt_algorithms, keys.fitting_algorithms),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def check_auth_files(settings: Settings) -> None:
    """Read and check every auth file now (key file, ``--jwt-algorithms`` against it, admin
    token file), for the CLI to call before it starts the service.

    Raises:
        ConfigError: naming the flag of the first unusable file.
    """
    if settings.auth_mode == "jwt":
        fitting = (
            ASYMMETRIC_ALGORITHMS
            if settings.jwks_url is not None
            else static_key_from_file(
                settings.jwt_secret_file, settings.jwt_public_key_file
            ).fitting_algorithms
        )
        resolve_algorithms(settings.jwt_algorithms, fitting)
    if settings.admin_token_file is not None:
        AdminTokens(settings.admin_token_file)
