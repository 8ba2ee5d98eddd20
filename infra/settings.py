"""Process settings: one validated model per process, read from ``SONAE_*`` variables.

A wrong or missing value must stop the process at start-up with a message that
names the environment variable, not fail later deep inside a client library.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.redact import mask_passwords
from schemas.errors import InvalidNamespace
from schemas.topics import validate_namespace

ENV_PREFIX = "SONAE_"

_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
DEFAULT_FIELD_OUTBOX = Path("~/.sonae/field-outbox.jsonl")
"""The field client's outbox unless SONAE_FIELD_OUTBOX names another file."""
DEVELOPMENT_SECRET = "sonae-development-secret-change-me-0000"
"""The token secret in the source: accepted only with ``SONAE_DEVELOPMENT=true``."""


DATA_DIR_DESCRIPTION = "Where the embedded PostgreSQL keeps its data, logs and the stack state."


class KafkaProfile(StrEnum):
    """Which broker the clients talk to; the embedded one needs the compatibility layer."""

    EMBEDDED = "embedded"
    APACHE = "apache"


class SettingsError(ValueError):
    """A ``SONAE_*`` setting is missing or invalid; the message names the variable."""


Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    """Everything a Sonae process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        description="Kafka bootstrap servers, comma-separated HOST:PORT.",
    )
    kafka_profile: KafkaProfile = Field(
        default=KafkaProfile.EMBEDDED,
        description="'embedded' (Tansu, compatibility layer on) or 'apache' (layer off).",
    )
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:15432/sonae",
        description="PostgreSQL DSN (postgresql://user[:password]@host:port/db).",
    )
    namespace: str = Field(
        default="",
        description="Topic namespace; empty is live operations, anything else is isolated.",
    )
    data_dir: Path = Field(
        default=Path(".sonae"),
        description=DATA_DIR_DESCRIPTION,
    )
    region: str = Field(default="chiyoda", description="Region pack name or path.")
    token_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_SECRET),
        description="HMAC secret for bearer tokens (HS256), at least 32 characters; the "
                    "default (in the source) is refused unless SONAE_DEVELOPMENT=true.",
    )
    development: bool = Field(
        default=False,
        description="Development mode (`make demo`, the tests): the built-in token secret "
                    "is accepted, and then services bind to loopback only.",
    )
    token_max_ttl_hours: float = Field(
        default=7 * 24, gt=0, le=366 * 24,
        description="Longest token lifetime (exp - iat) intake and the gateway accept and "
                    "`sonae token issue` signs.",
    )
    token_denylist_poll_seconds: float = Field(
        default=2.0, ge=0.1, le=60,
        description="How often intake and the gateway re-read the token deny list besides "
                    "its LISTEN wake-ups (a revoked token is refused within this).",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP services bind.")
    intake_port: Port = 8080
    gateway_port: Port = 8765
    dashboard_port: Port = 8000
    broadcaster_port: Port = Field(default=8090, description="CAP/Atom feed of the broadcaster.")
    embedded_kafka_port: Port = 19092
    embedded_postgres_port: Port = 15432
    log_level: str = Field(default="INFO", description="Python logging level name.")
    intake_rate_per_second: float = Field(
        default=5.0, gt=0, le=1_000_000,
        description="Intake: sustained requests per second per token subject (then 429).",
    )
    intake_rate_burst: int = Field(
        default=20, ge=1, le=1_000_000,
        description="Intake: requests a token subject may make at once.",
    )
    intake_max_json_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="Intake: largest JSON body (a report's longest text is under 8 KiB).",
    )
    intake_max_cap_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Intake: largest CAP document (detailed polygons run to hundreds of KiB).",
    )
    intake_max_jma_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Intake: largest JMA XML message (JMA's largest sample is 548 kB).",
    )
    intake_unauthenticated_rate_per_second: float = Field(
        default=10.0, gt=0, le=1_000_000,
        description="Intake: sustained requests per second per client address without a "
                    "valid token (public paths, missing or invalid tokens; then 429).",
    )
    intake_unauthenticated_rate_burst: int = Field(
        default=50, ge=1, le=1_000_000,
        description="Intake: requests without a valid token a client address may make at once.",
    )
    intake_header_timeout_seconds: float = Field(
        default=20.0, ge=0.5, le=3600,
        description="Intake: seconds a connection may take to send a request's headers, "
                    "counted from its opening or the previous response (idle keep-alive "
                    "included); then it is closed.",
    )
    intake_body_timeout_seconds: float = Field(
        default=60.0, ge=0.5, le=3600,
        description="Intake: seconds a request's body may take to arrive (then 408 and the "
                    "connection is closed).",
    )
    intake_max_connections: int = Field(
        default=1024, ge=1, le=1_000_000,
        description="Intake: open HTTP connections at once; one more is answered 503 and "
                    "closed.",
    )
    intake_parse_workers: int = Field(
        default=2, ge=1, le=64,
        description="Intake: threads parsing CAP and JMA XML at once (never the event loop).",
    )
    intake_parse_queue: int = Field(
        default=8, ge=0, le=100_000,
        description="Intake: XML documents that may wait for a parsing thread (then 503 with "
                    "Retry-After).",
    )
    intake_cap_max_elements: int = Field(
        default=20_000, ge=100, le=100_000_000,
        description="Intake: elements in one CAP alert (then 413 naming the count).",
    )
    intake_cap_max_infos: int = Field(
        default=16, ge=1, le=100_000_000, description="Intake: info blocks in one CAP alert.")
    intake_cap_max_areas: int = Field(
        default=500, ge=1, le=100_000_000, description="Intake: area elements in one CAP alert.")
    intake_cap_max_polygons: int = Field(
        default=100, ge=1, le=100_000_000,
        description="Intake: polygon elements in one CAP alert.")
    intake_cap_max_circles: int = Field(
        default=100, ge=1, le=100_000_000,
        description="Intake: circle elements in one CAP alert.")
    intake_cap_max_polygon_points: int = Field(
        default=20_000, ge=4, le=100_000_000,
        description="Intake: points of all polygons of one CAP alert together.")
    intake_cap_max_geocodes: int = Field(
        default=2_000, ge=1, le=100_000_000,
        description="Intake: geocode elements in one CAP alert.")
    intake_jma_max_elements: int = Field(
        default=100_000, ge=100, le=100_000_000,
        description="Intake: elements in one JMA XML message (then 413).",
    )
    intake_url: str | None = Field(
        default=None,
        description="Intake's base URL as other processes reach it (the gateway forwards "
                    "field reports and the residents' at-home form there); default "
                    "http://HOST:INTAKE_PORT.",
    )
    field_outbox: Path = Field(
        default=DEFAULT_FIELD_OUTBOX,
        description="The field client's local outbox (JSON lines), where `sonae report` and "
                    "`sonae shelter-status` keep inputs until intake acknowledges them.",
    )
    webhooks_file: Path | None = Field(
        default=None,
        description="Broadcaster: TOML file of webhook subscribers and retry tuning; unset = "
                    "no webhooks.",
    )
    cap_dir: Path | None = Field(
        default=None,
        description="Broadcaster: also write every CAP document to this directory.",
    )
    cap_base_url: str | None = Field(
        default=None,
        description="Broadcaster: absolute base URL of the CAP feed's links (behind a proxy).",
    )
    gateway_message_rate_per_second: float = Field(
        default=10.0, gt=0, le=1_000_000,
        description="Gateway: sustained websocket messages per second a connection may send "
                    "(then an error rate_limited and close 1008).",
    )
    gateway_message_burst: int = Field(
        default=40, ge=1, le=1_000_000,
        description="Gateway: websocket messages a connection may send at once.",
    )
    gateway_max_connections_per_address: int = Field(
        default=64, ge=1, le=1_000_000,
        description="Gateway: websocket connections open at once from one client address "
                    "(one more is closed with 1013); raise it behind a proxy or NAT.",
    )
    push_contact: str = Field(
        default="mailto:sonae@localhost",
        pattern=r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s]+)$",
        description="Web Push: the VAPID 'sub' contact (mailto: or https:) push services "
                    "use to reach the operator; set the ward's address in production.",
    )
    push_concurrency: int = Field(
        default=32, ge=1, le=1000,
        description="Broadcaster: pushes in flight at once per push-service origin.",
    )
    push_allow_http_loopback: bool = Field(
        default=False,
        description="Gateway: accept http:// push endpoints on loopback addresses (tests' "
                    "and the benchmark's local push service); https:// is required otherwise.",
    )
    push_rate_per_second: float = Field(
        default=0.5, gt=0, le=1_000_000,
        description="Gateway: sustained push subscribe/unsubscribe requests per second per "
                    "client address (then 429).",
    )
    push_rate_burst: int = Field(
        default=10, ge=1, le=1_000_000,
        description="Gateway: push subscribe/unsubscribe requests a client address may make "
                    "at once.",
    )
    athome_form_rate_per_second: float = Field(
        default=0.2, gt=0, le=1_000_000,
        description="Gateway: sustained residents' at-home form posts per second per client "
                    "address (then 429).",
    )
    athome_form_rate_burst: int = Field(
        default=5, ge=1, le=1_000_000,
        description="Gateway: residents' at-home form posts a client address may make at once.",
    )

    @property
    def token_max_ttl(self) -> timedelta:
        """:attr:`token_max_ttl_hours` as a duration."""
        return timedelta(hours=self.token_max_ttl_hours)

    @model_validator(mode="after")
    def _development_only(self) -> Settings:
        # The secret in the source lets anyone mint an HQ token: only a deployment
        # that says it is a development one may use it, and then only on loopback.
        if self.development:
            if not _loopback(self.host):
                raise ValueError(f"SONAE_HOST: {self.host!r} is not a loopback address; in "
                                 "development mode (SONAE_DEVELOPMENT=true) services bind "
                                 "to loopback only")
        elif self.token_secret.get_secret_value() == DEVELOPMENT_SECRET:
            raise ValueError("SONAE_TOKEN_SECRET: the development secret (the default in the "
                             "source) is refused; set a secret of your own, or "
                             "SONAE_DEVELOPMENT=true on a development machine")
        return self

    jma_feed_enabled: bool = Field(
        default=False,
        description="JMA feed poller: follow JMA's Atom feeds (off by default: CI and the demo "
                    "have no internet).",
    )
    jma_feed_urls: str = Field(
        default=",".join(f"https://www.data.jma.go.jp/developer/xml/feed/{name}.xml"
                         for name in ("regular", "extra", "eqvol")),
        description="JMA feed poller: the Atom feeds to follow, comma-separated.",
    )
    jma_feed_interval_seconds: float = Field(
        default=60.0, ge=60.0, le=86_400.0,
        description="JMA feed poller: seconds between rounds (at least 60).",
    )
    jma_feed_jitter_seconds: float = Field(
        default=10.0, ge=0.0, le=600.0,
        description="JMA feed poller: up to this many seconds added at random to each wait.",
    )

    people_retention_days: int | None = Field(
        default=None, ge=1, le=3650,
        description="How many days personal data of people and supplies events is kept: "
                    "`sonae people purge` without --before purges what is older (unset: "
                    "--before is required).",
    )

    def given(self, name: str) -> bool:
        """Whether setting ``name`` was given (a ``SONAE_*`` variable or an option)."""
        return name in self.model_fields_set

    @property
    def jma_feed_url_list(self) -> tuple[str, ...]:
        """The feeds the JMA poller follows."""
        return tuple(u.strip() for u in self.jma_feed_urls.split(",") if u.strip())

    @property
    def intake_base_url(self) -> str:
        """Where intake's HTTP API is reached from this process."""
        return (self.intake_url or f"http://{self.host}:{self.intake_port}").rstrip("/")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or not all(_HOSTPORT_RE.match(p) for p in parts):
            raise ValueError(f"expected HOST:PORT[,HOST:PORT...], got {value!r}")
        return ",".join(parts)

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"expected a postgresql:// URL, got {mask_passwords(value)!r}")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        # The topic catalogue owns the namespace rule; one rule, one message.
        try:
            return validate_namespace(value)
        except InvalidNamespace as exc:
            raise ValueError(str(exc)) from None

    @field_validator("jma_feed_urls")
    @classmethod
    def _feed_urls(cls, value: str) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if not urls or bad:
            raise ValueError(f"expected comma-separated http(s):// URLs, got {value!r}")
        return ",".join(urls)

    @field_validator("token_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("intake_url", "cap_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # an empty variable (compose's `${X:-}`) means unset
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"expected an http:// or https:// URL, got {mask_passwords(value)!r}")
        return value or None

    @field_validator("webhooks_file", "cap_dir", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        # An empty variable (compose's `${X:-}`) means unset, as it always has.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("field_outbox", mode="before")
    @classmethod
    def _field_outbox(cls, value: Any) -> Any:
        # Set but empty means the default, as an unset variable does.
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_FIELD_OUTBOX
        return value

    @field_validator("field_outbox")
    @classmethod
    def _field_outbox_file(cls, value: Path) -> Path:
        if value.expanduser().is_dir():
            raise ValueError(f"expected a file path, got the directory {str(value)!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
        return upper

    def env(self) -> dict[str, str]:
        """These settings as ``SONAE_*`` variables, for handing to a child process."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, StrEnum):
                value = value.value
            elif value is None:
                continue  # unset optional settings stay unset in the child
            out[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class StackLocation(BaseSettings):
    """Only where a stack keeps its state: what ``sonae down`` needs to stop it.

    Stopping a stack must not depend on the rest of the settings being valid for
    running one: the shell that stops ``make demo`` has no ``SONAE_DEVELOPMENT``, and
    refusing the development secret there would leave the demo running.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".sonae"), description=DATA_DIR_DESCRIPTION)


def load_stack_location(data_dir: Path | None = None) -> Path:
    """The data directory from ``data_dir`` or ``SONAE_DATA_DIR``; other settings unread."""
    try:
        location = StackLocation() if data_dir is None else StackLocation(data_dir=data_dir)
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {ENV_PREFIX}DATA_DIR: "
                            f"{exc.errors()[0]['msg']}") from None
    return location.data_dir


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; raise :class:`SettingsError` naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a model-level rule: its message names the variables
                problems.append(str(err["msg"]).removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
