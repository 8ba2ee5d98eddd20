"""``sonae token issue``: bearer tokens from the command line, next to the code that signs them.

Issuing is :func:`services.common.auth.issue_token`; this module is its click
group (``token``), which the composition root adds to ``sonae``. ``--area`` is
checked against the region pack before anything is signed. Nothing here reads
settings or files at import time.
"""

from __future__ import annotations

import re
from datetime import timedelta

import click

from services.common.auth import Role, issue_token

__all__ = ["token"]


def _parse_ttl(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) <= 0:
        raise click.BadParameter("use a positive number with s, m, h or d, e.g. 30m, 12h, 7d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


@click.group()
def token() -> None:
    """Bearer tokens for intake and the gateway (signed with SONAE_TOKEN_SECRET)."""


@token.command("issue")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True,
              help="field, shelter_staff, sensor, hq (intake) or public (gateway only).")
@click.option("--name", required=True,
              help="Who the token is for: a team, device group, feed or operator "
                   "(letters, digits, ._@:+-).")
@click.option("--ttl", default="12h", show_default=True,
              help="Lifetime, e.g. 30m, 12h, 7d.")
@click.option("--area", "areas", multiple=True, metavar="AREA",
              help="A field team's area (repeat for several): the gateway shows the team "
                   "these areas' reports and shelters. Checked against SONAE_REGION.")
def token_issue(role: str, name: str, ttl: str, areas: tuple[str, ...]) -> None:
    """Print a new token (only the token, so `export SONAE_TOKEN=$(sonae token issue ...)`)."""
    from infra.settings import SettingsError, load_settings
    from schemas.region import RegionPackError, load_region

    try:
        settings = load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    if areas:
        try:
            known = {d.id for d in load_region(settings.region).districts}
        except RegionPackError as e:
            raise click.ClickException(f"cannot check --area against region pack "
                                       f"{settings.region!r} (SONAE_REGION): {e}") from None
        unknown = [a for a in areas if a not in known]
        if unknown:
            raise click.BadParameter(
                f"no area {', '.join(map(repr, unknown))} in region {settings.region!r}; "
                f"its areas are {', '.join(sorted(known))}", param_hint="'--area'")
    try:
        click.echo(issue_token(settings.token_secret, role, name, _parse_ttl(ttl),
                               areas=areas))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
