"""Settings: one frozen, validated object built once at the edge (the CLI) and passed down.

Every field is a command-line flag (``ws_port`` -> ``--ws-port``) and an environment variable
(``BROADCASTER_WS_PORT``); the flag wins. Nothing below the CLI reads the environment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from broadcaster.errors import ConfigError

ENV_PREFIX = "BROADCASTER_"
# scheme://host[:port], as browsers send it in Origin (lowercase scheme, no path).
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$")

# A comma followed by a URL scheme: where one notification URL ends and the next begins.
_URL_START = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")

Port = Annotated[int, Field(ge=0, le=65535)]
PositiveMs = Annotated[int, Field(gt=0, le=86_400_000)]


class Settings(BaseModel):
    """Everything the service can be told. Units are in the names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ws_host: str = Field("127.0.0.1", description="address the WebSocket server binds")
    ws_port: Port = Field(8765, description="WebSocket port (0: any free port)")
    http_host: str = Field("127.0.0.1", description="address the HTTP server binds")
    http_port: Port = Field(8080, description="HTTP port for status, health and metrics")
    influx_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:8086"), description="InfluxDB base URL (InfluxQL /query)"
    )
    influx_db: str = Field("metrics", min_length=1, description="InfluxDB database")
    influx_token: str | None = Field(
        None, description="API token (InfluxDB 2.x/3.x), sent as 'Authorization: Token ...'"
    )
    influx_username: str | None = Field(None, description="InfluxDB 1.x user")
    influx_password: str | None = Field(None, description="InfluxDB 1.x password")
    query_timeout_ms: PositiveMs = Field(5000, description="deadline of one topic query")
    broadcast_interval_ms: PositiveMs = Field(10000, description="time between two ticks")
    tick_offset_ms: Annotated[int, Field(ge=0, le=86_400_000)] = Field(
        1000,
        description="tick k happens at k * --broadcast-interval-ms + this, in ms since the Unix "
        "epoch (the data's rhythm; the same tick numbers on every node)",
    )
    heartbeat_interval_ms: PositiveMs = Field(15000, description="time between two pings")
    connection_timeout_ms: PositiveMs = Field(
        45000, description="silence after which a connection is closed"
    )
    stats_interval_ms: PositiveMs = Field(60000, description="time between two stats lines")
    shutdown_timeout_ms: PositiveMs = Field(
        5000, description="how long shutdown waits for clients to close"
    )
    reconnect_after_ms: Annotated[int, Field(ge=0, le=3_600_000)] = Field(
        2000, description="reconnectAfterMs told to clients in server_shutdown"
    )
    max_message_bytes: Annotated[int, Field(ge=128, le=64 * 1024 * 1024)] = Field(
        65536, description="largest client message in bytes; larger ones close with 1009"
    )
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10000, description="connections over this are refused with 1013"
    )
    reuse_port: bool = Field(
        False,
        description="both listeners set SO_REUSEPORT: processes started with it share the "
        "ports, the kernel spreads new connections between them",
    )
    # At least 2: shutdown queues server_shutdown and then the close frame.
    outbox_messages: Annotated[int, Field(ge=2, le=100_000)] = Field(
        64, description="messages pending per connection before it counts as too slow (4008)"
    )
    max_pending_output_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = Field(
        1 << 20, description="bytes pending per connection before it counts as too slow (4008)"
    )
    send_stall_timeout_ms: PositiveMs = Field(
        15000, description="a connection whose socket takes nothing this long is too slow (4008)"
    )
    client_messages_per_s: Annotated[float, Field(gt=0, le=100_000)] = Field(
        20, description="messages a client may send per second on average (then rate_limited)"
    )
    client_message_burst: Annotated[int, Field(ge=1, le=100_000)] = Field(
        100, description="messages a client may send in one burst (the token bucket's size)"
    )
    client_bytes_per_s: Annotated[int, Field(ge=1024, le=1 << 30)] = Field(
        16384,
        description="bytes a client may send per second on average; over it, reading pauses",
    )
    client_frames_per_s: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        200,
        description="WebSocket frames (pings, fragments) a client may send per second; over it, "
        "reading pauses",
    )
    max_message_fragments: Annotated[int, Field(ge=1, le=100_000)] = Field(
        64, description="frames one client message may be split into; more close with 1009"
    )
    topics_file: Path | None = Field(None, description="TOML file with extra topics")
    default_topics: tuple[str, ...] = Field(
        ("overview", "regressions"), description="topics a new connection is subscribed to"
    )
    # --- security (docs/operations.md, "Security") -------------------------------------------
    auth_mode: Literal["none", "jwt"] = Field(
        "none",
        description="none: anyone who reaches the port may subscribe; jwt: a token is needed",
    )
    jwt_secret_file: Path | None = Field(
        None, description="file holding the HS256/384/512 shared secret (jwt mode)"
    )
    jwt_public_key_file: Path | None = Field(
        None, description="PEM file holding the RSA, EC or Ed25519 public key (jwt mode)"
    )
    jwks_url: AnyHttpUrl | None = Field(
        None, description="URL of a JSON Web Key Set, cached and refetched for unknown kids"
    )
    jwt_algorithms: tuple[str, ...] = Field(
        (), description="accepted JWT algorithms (default: those of the key's kind; never none)"
    )
    jwt_audience: str | None = Field(None, description="when set, tokens must carry this aud")
    jwt_issuer: str | None = Field(None, description="when set, tokens must carry this iss")
    auth_timeout_ms: PositiveMs = Field(
        5000, description="time a client has to present a token (then closed with 4001)"
    )
    allowed_origins: tuple[str, ...] = Field(
        (),
        description="browser Origins allowed to connect (exact origins, or *); default: the "
        "Origin's host must be the Host header's host",
    )
    max_connections_per_ip: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        0, description="connections one address may hold; over it: 1013 (0: unlimited)"
    )
    max_connections_per_identity: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        0,
        description="connections one token sub may hold; a newer one closes the oldest with "
        "4009 (0: unlimited)",
    )
    admin_token_file: Path | None = Field(
        None,
        description="file of one or two admin tokens; /api/websocket/status and /metrics then "
        "need 'Authorization: Bearer <token>'",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain: both servers speak TLS (wss://, https://)"
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of --tls-cert-file")
    # --- cluster (docs/operations.md, "Running a cluster") ------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis that makes processes one cluster (redis://, rediss:// for TLS, user "
        "and password in the URL); unset: standalone",
    )
    cluster_name: str = Field(
        "broadcaster",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="processes sharing a Redis and this name form one cluster; prefixes every "
        "Redis key and channel",
    )
    node_id: str | None = Field(
        None,
        max_length=128,
        description="this process's name in the cluster (default: hostname, pid and a random "
        "suffix)",
    )
    # --- notifications (docs/operations.md, "Monitoring and alerts") -------------------------
    notify_urls: tuple[str, ...] = Field(
        (),
        description="Apprise URLs notified of service events (discord://, slack://, mailto://, "
        "json://, ...), comma-separated; empty: no notifications",
    )
    notify_after_failures: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        3, description="consecutive failed queries or pings that make database_down"
    )
    notify_no_clients_after_ms: PositiveMs = Field(
        300000, description="time without clients (after having had some) that makes clients_gone"
    )
    notify_heartbeat_failures: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        50,
        description="connections closed for silence in one heartbeat interval over which "
        "heartbeat_failures is sent",
    )
    log_format: Literal["json", "console"] = Field("json", description="log line format")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="lowest level logged"
    )

    @field_validator("ws_host", "http_host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("default_topics", "jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        # A comma starts a new URL only before a scheme: Apprise URLs keep commas in their
        # parameters (mailto://...?to=a@example.com,b@example.com).
        if isinstance(value, str):
            return tuple(url.strip() for url in _URL_START.split(value) if url.strip())
        return value

    @field_validator("notify_urls")
    @classmethod
    def _apprise_can_send(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not _apprise_can_send_to(url):
                # Only the scheme is shown: the rest of a notification URL is often a secret.
                raise _FieldProblem(
                    "notify_urls",
                    url.split("://", 1)[0] + "://...",
                    "not a URL Apprise can send to (see https://github.com/caronc/apprise/wiki)",
                )
        return urls

    @field_validator(
        "topics_file",
        "jwt_secret_file",
        "jwt_public_key_file",
        "jwks_url",
        "admin_token_file",
        "tls_cert_file",
        "tls_key_file",
        "redis_url",
        "node_id",
        mode="before",
    )
    @classmethod
    def _empty_means_no_file(cls, value: Any) -> Any:
        # Given but empty means "none" (as for --default-topics), so that `--topics-file ""`
        # overrides the environment; as a path it would be "." and fail as a directory.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            # Only the scheme is shown: the rest may hold a password.
            raise _FieldProblem(
                "redis_url",
                value.split("://", 1)[0] + "://...",
                "must start with redis://, rediss:// or unix://",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.connection_timeout_ms <= self.heartbeat_interval_ms:
            raise _FieldProblem(
                "connection_timeout_ms",
                self.connection_timeout_ms,
                "must be longer than --heartbeat-interval-ms",
            )
        if self.influx_token and (self.influx_username or self.influx_password):
            raise _FieldProblem(
                "influx_token", "***", "give either a token or a username and password, not both"
            )
        if self.influx_username and not self.influx_password:
            raise _FieldProblem(
                "influx_username", self.influx_username, "needs --influx-password too"
            )
        if self.influx_password and not self.influx_username:
            raise _FieldProblem("influx_password", "***", "needs --influx-username too")
        self._check_security()
        return self

    def _check_security(self) -> None:
        keys = [
            name
            for name in ("jwt_secret_file", "jwt_public_key_file", "jwks_url")
            if getattr(self, name) is not None
        ]
        if self.auth_mode == "jwt" and len(keys) != 1:
            raise _FieldProblem(
                "auth_mode",
                self.auth_mode,
                "jwt needs exactly one of --jwt-secret-file, --jwt-public-key-file, --jwks-url"
                + (f" (given: {', '.join(flag_name(k) for k in keys)})" if keys else ""),
            )
        if "none" in (algorithm.lower() for algorithm in self.jwt_algorithms):
            raise _FieldProblem(
                "jwt_algorithms", ",".join(self.jwt_algorithms), "'none' is never accepted"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given = "tls_cert_file" if self.tls_cert_file is not None else "tls_key_file"
            raise _FieldProblem(
                given, str(getattr(self, given)), "--tls-cert-file and --tls-key-file go together"
            )
        for origin in self.allowed_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise _FieldProblem(
                    "allowed_origins",
                    ",".join(self.allowed_origins),
                    f"{origin!r} is not an origin such as https://noc.example.com (or *)",
                )

    @property
    def tls(self) -> bool:
        """Whether both servers speak TLS."""
        return self.tls_cert_file is not None

    @property
    def influx_base_url(self) -> str:
        """The InfluxDB URL without a trailing slash."""
        return str(self.influx_url).rstrip("/")


class _FieldProblem(ValueError):
    """A cross-field problem, pinned to the field it is reported against."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(problem)


def _apprise_can_send_to(url: str) -> bool:
    """Whether Apprise parses ``url`` into a service (its own complaint is not logged)."""
    import apprise  # here: the import costs 0.4 s, and only notification URLs need it

    apprise_log = logging.getLogger("apprise")
    disabled, apprise_log.disabled = apprise_log.disabled, True
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True) is not None
    finally:
        apprise_log.disabled = disabled


def flag_name(field: str) -> str:
    """``ws_port`` -> ``--ws-port``."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """``ws_port`` -> ``BROADCASTER_WS_PORT``."""
    return ENV_PREFIX + field.upper()


def build_settings(values: dict[str, Any]) -> Settings:
    """Validate raw values (strings from flags or the environment) into Settings.

    Raises:
        ConfigError: naming the first bad setting by its flag, with the value given.
    """
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        context = error.get("ctx") or {}
        cause = context.get("error")
        if isinstance(cause, _FieldProblem):
            raise ConfigError(flag_name(cause.field), cause.value, cause.problem) from None
        field = str(error["loc"][0]) if error["loc"] else "settings"
        value = values.get(field, error.get("input"))
        raise ConfigError(flag_name(field), value, error["msg"]) from None
