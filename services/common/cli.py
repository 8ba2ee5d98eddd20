"""What every service's ``sonae`` subcommands share: settings from options, time arguments.

Each service package contributes its own click commands (listed in the
composition root's registry); they read their settings and their ``--since`` /
``--until`` times the same way, through these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from infra.settings import Settings, SettingsError, load_settings

__all__ = ["INSTANT", "Instant", "cli_settings", "parse_instant"]


def cli_settings(**overrides: Any) -> Settings:
    """The process settings with the options that were given; a bad one is a usage error."""
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def parse_instant(text: str) -> datetime:
    """An ISO-8601 time with a timezone (``Z`` or ``+09:00``), as UTC.

    Raises ValueError saying what is wrong: a time without a timezone would mean
    a different instant on every machine, so it is refused, not guessed.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 time, e.g. 2025-08-21T14:00:00+09:00"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(
            f"{text!r} has no timezone; add one, e.g. {text.strip()}+09:00 or {text.strip()}Z"
        )
    return parsed.astimezone(UTC)


class Instant(click.ParamType):
    """An ISO-8601 time with a timezone; click names the option in its error."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


INSTANT = Instant()
"""The one time type of ``sonae events export`` and ``sonae drill record``."""
