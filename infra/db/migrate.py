"""Numbered plain-SQL migrations, applied in order, each in its own transaction.

Files are ``infra/db/migrations/NNNN_name.sql``. Each applied file is recorded in
``schema_migrations`` with a checksum; re-running is a no-op, and an applied file
that was edited afterwards is an error (change the schema with a new file).
A session-level advisory lock serialises concurrent migrators (two services
starting at once).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant shared by every migrator of this project.
_LOCK_KEY = 0x50_4E_41_45  # "SNAE"


class MigrationError(RuntimeError):
    """The migrations on disk and the ones recorded in the database disagree."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: detects edits after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the packaged ones), in version order."""
    if directory is None:
        root = resources.files("infra.db").joinpath("migrations")
        entries = [(p.name, p.read_text(encoding="utf-8")) for p in root.iterdir()]
    else:
        entries = [(p.name, p.read_text(encoding="utf-8")) for p in directory.iterdir()]
    found: dict[int, Migration] = {}
    for filename, text in entries:
        if not filename.endswith(".sql"):
            continue
        match = _FILE_RE.match(filename)
        if match is None:
            raise MigrationError(
                f"migration file {filename!r} is not named NNNN_lower_snake_name.sql"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations share version {version:04d}: {found[version].name!r} and "
                f"{match.group(2)!r}"
            )
        found[version] = Migration(version, match.group(2), text)
    return [found[v] for v in sorted(found)]


async def migrate(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply the pending migrations in order; return the ones applied now."""
    migrations = discover() if migrations is None else migrations
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """
            create table if not exists schema_migrations (
                version    integer primary key,
                name       text not null,
                checksum   text not null,
                applied_at timestamptz not null default now()
            )
            """
        )
        rows = await conn.fetch("select version, name, checksum from schema_migrations")
        applied = {r["version"]: r for r in rows}
        known = {m.version for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                "the database has migrations this code does not know: "
                + ", ".join(f"{v:04d}_{applied[v]['name']}" for v in unknown)
                + " (is this an older version of Sonae?)"
            )
        done: list[Migration] = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name}.sql was changed after it was "
                        "applied; add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(m.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name}.sql failed: {exc}"
                    ) from exc
                await conn.execute(
                    "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            log.info("applied migration %04d_%s", m.version, m.name)
            done.append(m)
        return done
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate_database(dsn: str) -> list[Migration]:
    """:func:`migrate` on a connection of its own to ``dsn``; return the migrations applied."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def current_version(conn: asyncpg.Connection) -> int | None:
    """Highest applied migration version, or None before the first migration."""
    exists = await conn.fetchval("select to_regclass('schema_migrations') is not null")
    if not exists:
        return None
    version: int | None = await conn.fetchval("select max(version) from schema_migrations")
    return version
