"""Webhook subscribers and delivery tuning, from the TOML file named by ``SONAE_WEBHOOKS_FILE``.

::

    [retry]                          # optional; these are the defaults
    max_attempts = 8                 # per delivery, then it is given up (broadcast.failed)
    base_delay_seconds = 1.0         # full jitter: uniform(0, min(max, base·2^(n-1)))
    max_delay_seconds = 300.0
    failures_to_down = 5             # consecutive failures before a subscriber is marked down
    probe_interval_seconds = 30.0    # a down subscriber is probed with one delivery this often…
    max_probe_interval_seconds = 600.0   # …doubling while probes fail, up to this

    [[subscribers]]
    name = "city-app"                # slug; the channel is "webhook-city-app"
    url = "https://push.example.org/sonae"
    secret_env = "CITY_APP_WEBHOOK_SECRET"   # or secret = "..." (32+ characters)
    languages = ["ja", "en", "zh", "ko"]     # default: all four
    live = true                      # true: reaches the public, never gets drills
    timeout_seconds = 10.0

Without ``SONAE_WEBHOOKS_FILE`` there are no webhook subscribers. A file that is
missing or invalid stops the broadcaster at start-up with an error naming the
variable, the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas.common import SLUG_PATTERN
from services.broadcaster.channels import WebhookSubscriber
from services.broadcaster.errors import WebhookConfigError

__all__ = ["WEBHOOKS_ENV", "RetrySettings", "WebhookConfig", "load_webhooks", "webhooks_for"]

WEBHOOKS_ENV: Final = "SONAE_WEBHOOKS_FILE"

_MIN_SECRET = 32


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrySettings(_Model):
    """Backoff and circuit-breaker tuning shared by every subscriber."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 8
    base_delay_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    max_delay_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    failures_to_down: Annotated[int, Field(ge=1, le=1000)] = 5
    probe_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    max_probe_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0


class _SubscriberEntry(_Model):
    name: Annotated[str, Field(pattern=SLUG_PATTERN, max_length=56)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    secret: SecretStr | None = None
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    languages: tuple[Literal["ja", "en", "zh", "ko"], ...] = ("ja", "en", "zh", "ko")
    live: bool = True
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0

    @model_validator(mode="after")
    def _one_secret(self) -> _SubscriberEntry:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret and secret_env")
        if self.secret is not None and len(self.secret.get_secret_value()) < _MIN_SECRET:
            raise ValueError(f"secret must be at least {_MIN_SECRET} characters")
        if not self.languages or len(set(self.languages)) != len(self.languages):
            raise ValueError("languages must name each language once, at least one")
        return self


class _File(_Model):
    retry: RetrySettings = RetrySettings()
    subscribers: tuple[_SubscriberEntry, ...] = ()


@dataclass(frozen=True)
class WebhookConfig:
    """The subscribers and the retry tuning."""

    retry: RetrySettings = field(default_factory=RetrySettings)
    subscribers: tuple[WebhookSubscriber, ...] = ()


def load_webhooks(path: Path, environ: Mapping[str, str] | None = None) -> WebhookConfig:
    """Read and check a subscriber file; raise WebhookConfigError naming the file and field."""
    env = os.environ if environ is None else environ
    where = f"{WEBHOOKS_ENV}={path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WebhookConfigError(f"{where}: file does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise WebhookConfigError(f"{where}: cannot read: {e}") from e
    try:
        parsed = _File.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise WebhookConfigError(f"{where}: {field}: {first['msg']}") from None
    names = [s.name for s in parsed.subscribers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WebhookConfigError(f"{where}: subscriber name(s) used twice: {', '.join(duplicates)}")
    subscribers = []
    for index, entry in enumerate(parsed.subscribers):
        if entry.secret is not None:
            secret = entry.secret.get_secret_value()
        else:
            assert entry.secret_env is not None
            secret = env.get(entry.secret_env, "")
            if len(secret) < _MIN_SECRET:
                raise WebhookConfigError(
                    f"{where}: subscribers.{index}.secret_env: environment variable "
                    f"{entry.secret_env} must hold a secret of at least {_MIN_SECRET} characters")
        subscribers.append(WebhookSubscriber(
            name=entry.name, url=entry.url, secret=secret.encode("utf-8"),
            languages=entry.languages, live=entry.live, timeout=entry.timeout_seconds))
    return WebhookConfig(retry=parsed.retry, subscribers=tuple(subscribers))


def webhooks_for(path: Path | None, environ: Mapping[str, str] | None = None) -> WebhookConfig:
    """The configuration in the file ``SONAE_WEBHOOKS_FILE`` names; none when it is unset.

    ``environ`` is where a subscriber's ``secret_env`` is looked up (default: the process
    environment): secrets are named by the file, not by Sonae's settings.
    """
    return WebhookConfig() if path is None else load_webhooks(path, environ)
