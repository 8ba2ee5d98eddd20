"""``sonae token issue`` / ``revoke``: bearer tokens from the command line.

Issuing is :func:`services.common.auth.issue_token`; revoking is
:func:`services.common.revocation.revoke` (the token's ``jti`` onto the deny list
in PostgreSQL, which intake and every gateway honour within seconds). This module
is their click group (``token``), which the composition root adds to ``sonae``.
``--area`` is checked against the region pack before anything is signed, ``--ttl``
against ``SONAE_TOKEN_MAX_TTL_HOURS``. Nothing here reads settings or files at
import time.
"""

from __future__ import annotations

import asyncio
import getpass
import re
from datetime import UTC, datetime, timedelta

import click
import jwt

from services.common.auth import ALGORITHM, ISSUER, Role, issue_token

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
              help="The team's area (repeat for several; required for field and "
                   "shelter_staff): the gateway shows the team these areas' reports and "
                   "shelters. Checked against SONAE_REGION.")
@click.option("--sender", "senders", multiple=True, metavar="KIND:NAME",
              help="A sensor token: a warning sender it may speak for besides itself "
                   "(repeat for several), e.g. cap:jma.go.jp or jma:気象庁本庁.")
@click.option("--shelter", "shelters", multiple=True, metavar="SITE",
              help="A shelter_staff token: a shelter or facility its staff run (repeat "
                   "for several); without it, every site of its areas. Checked against "
                   "SONAE_REGION.")
def token_issue(role: str, name: str, ttl: str, areas: tuple[str, ...],
                senders: tuple[str, ...], shelters: tuple[str, ...]) -> None:
    """Print a new token (only the token, so `export SONAE_TOKEN=$(sonae token issue ...)`)."""
    from infra.settings import SettingsError, load_settings
    from schemas.region import RegionPackError, load_region

    try:
        settings = load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    if areas or shelters:
        try:
            region = load_region(settings.region)
        except RegionPackError as e:
            raise click.ClickException(f"cannot check --area/--shelter against region pack "
                                       f"{settings.region!r} (SONAE_REGION): {e}") from None
        known = {d.id for d in region.districts}
        unknown = [a for a in areas if a not in known]
        if unknown:
            raise click.BadParameter(
                f"no area {', '.join(map(repr, unknown))} in region {settings.region!r}; "
                f"its areas are {', '.join(sorted(known))}", param_hint="'--area'")
        sites = {site.id: site for site in region.sites}
        for shelter in shelters:
            site = sites.get(shelter)
            if site is None or site.district_id not in areas:
                raise click.BadParameter(
                    f"{shelter!r} is not a site of the token's areas ({', '.join(areas)}) in "
                    f"region {settings.region!r}", param_hint="'--shelter'")
    try:
        click.echo(issue_token(settings.token_secret, role, name, _parse_ttl(ttl),
                               areas=areas, senders=senders, shelters=shelters,
                               max_ttl=settings.token_max_ttl))
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _token_id(secret: str, text: str) -> tuple[str, datetime | None]:
    """The ``jti`` (and expiry) of a token, or ``text`` itself when it is a bare id."""
    if text.count(".") != 2:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", text):
            raise click.BadParameter("expected a token or its id (jti)", param_hint="TOKEN")
        return text, None
    try:
        # An expired token can still be revoked (it may be replayed within the leeway).
        claims = jwt.decode(text, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"verify_exp": False, "require": ["jti", "exp"]})
    except jwt.PyJWTError as e:
        raise click.BadParameter(f"not a token of this deployment: {e}",
                                 param_hint="TOKEN") from None
    return str(claims["jti"]), datetime.fromtimestamp(int(claims["exp"]), UTC)


@token.command("revoke")
@click.argument("token_or_id", metavar="TOKEN")
@click.option("--reason", default="", help="Why (kept with the deny-list entry).")
def token_revoke(token_or_id: str, reason: str) -> None:
    """Revoke a token (or its jti): intake and every gateway refuse it within seconds."""
    import asyncpg

    from infra.settings import SettingsError, load_settings
    from services.common.revocation import revoke

    try:
        settings = load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    jti, expires = _token_id(settings.token_secret.get_secret_value(), token_or_id.strip())

    async def run() -> bool:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await revoke(conn, jti, revoked_by=getpass.getuser(), expires_at=expires,
                                reason=reason)
        finally:
            await conn.close()

    try:
        added = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as e:
        raise click.ClickException(f"cannot write the deny list (SONAE_DATABASE_URL; run "
                                   f"`sonae db migrate` first?): {type(e).__name__}: {e}"
                                   ) from None
    click.echo(f"revoked {jti}" if added else f"{jti} was already revoked")
