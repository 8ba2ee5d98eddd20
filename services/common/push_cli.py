"""``sonae push keys``: the deployment's VAPID key pair, made once and kept in PostgreSQL.

The gateway and the broadcaster create the pair on their first start too; this
command lets an operator create it ahead of time and read the public key (the
page's ``applicationServerKey``, also served at ``GET /v1/push/key``). It never
replaces a pair: browsers bind their subscriptions to the public key, so a new
pair would silently orphan every subscription.
"""

from __future__ import annotations

import asyncio

import click

__all__ = ["push"]


@click.group()
def push() -> None:
    """Web Push for residents (the VAPID key pair in SONAE_DATABASE_URL)."""


@push.command("keys")
def push_keys() -> None:
    """Create the VAPID key pair if there is none; print its public key (base64url)."""
    import asyncpg

    from infra.settings import SettingsError, load_settings
    from services.common.retry import TRANSIENT_DB
    from services.common.webpush import ensure_vapid_keys

    try:
        settings = load_settings()
    except SettingsError as e:
        raise click.ClickException(str(e)) from None

    async def run() -> str:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return (await ensure_vapid_keys(pool)).public_key
        finally:
            await pool.close()

    try:
        click.echo(asyncio.run(run()))
    except asyncpg.UndefinedTableError:
        raise click.ClickException("no push_vapid_keys table in SONAE_DATABASE_URL: apply "
                                   "the migrations first (sonae db migrate)") from None
    except (*TRANSIENT_DB, asyncpg.PostgresError) as e:
        raise click.ClickException(f"cannot reach SONAE_DATABASE_URL: {e}") from None
