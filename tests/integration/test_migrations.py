"""Migrations apply in order, once, inside transactions, and refuse edited history."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from infra.db.migrate import MigrationError, current_version, discover, migrate


async def test_packaged_migrations_apply_and_are_idempotent(db_pool: asyncpg.Pool) -> None:
    """Applying the packaged migrations twice creates the event store once."""
    async with db_pool.acquire() as conn:
        first = await migrate(conn)
        second = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in discover()]
        assert second == []
        assert await current_version(conn) == discover()[-1].version
        assert await conn.fetchval("select to_regclass('events') is not null")


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


async def test_failed_migration_is_rolled_back(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A failing migration leaves neither its partial changes nor its record behind."""
    _write(tmp_path, {
        "0001_one.sql": "create table one (x int);",
        "0002_bad.sql": "create table two (x int); select * from no_such_table;",
    })
    async with db_pool.acquire() as conn:
        with pytest.raises(MigrationError, match=r"0002_bad\.sql failed"):
            await migrate(conn, discover(tmp_path))
        assert await conn.fetchval("select to_regclass('one') is not null")
        assert not await conn.fetchval("select to_regclass('two') is not null")
        assert await current_version(conn) == 1


async def test_edited_applied_migration_is_refused(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Changing a migration after it was applied is an error naming the file."""
    _write(tmp_path, {"0001_one.sql": "create table one (x int);"})
    async with db_pool.acquire() as conn:
        await migrate(conn, discover(tmp_path))
        _write(tmp_path, {"0001_one.sql": "create table one (x bigint);"})
        with pytest.raises(MigrationError, match=r"0001_one\.sql was changed"):
            await migrate(conn, discover(tmp_path))


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    """A migration file without the NNNN_name.sql shape is reported by name."""
    _write(tmp_path, {"1_oops.sql": "select 1;"})
    with pytest.raises(MigrationError, match=r"1_oops\.sql"):
        discover(tmp_path)


async def test_migrations_apply_in_version_order(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    """Files apply in numeric order whatever the directory order."""
    _write(tmp_path, {
        "0010_later.sql": "alter table base add column y int;",
        "0002_base.sql": "create table base (x int);",
    })
    async with db_pool.acquire() as conn:
        done = await migrate(conn, discover(tmp_path))
        assert [m.version for m in done] == [2, 10]
