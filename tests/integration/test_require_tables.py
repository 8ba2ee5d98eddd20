"""The shared require-tables check against a real PostgreSQL schema."""

from __future__ import annotations

import asyncpg
import pytest

from services.common.tables import missing_tables, require_tables


class _Missing(Exception):
    """A stand-in for a service's ``*TablesMissing``."""


async def test_missing_tables_are_named_in_order_with_the_schema(
    db_pool: asyncpg.Pool, db_schema: str,
) -> None:
    """Only absent tables are named, in the order asked, and the message names the schema."""
    async with db_pool.acquire() as conn:
        await conn.execute("create table present (id int)")
        assert await missing_tables(conn, ("present",)) == ()
        assert await missing_tables(conn, ("zeta", "present", "alpha")) == ("zeta", "alpha")
        await require_tables(conn, ("present",), _Missing, "unused {tables}")
        with pytest.raises(_Missing) as info:
            await require_tables(conn, ("zeta", "present", "alpha"), _Missing,
                                 "tables {tables} are missing from schema {schema!r}")
    assert str(info.value) == f"tables zeta, alpha are missing from schema {db_schema!r}"
