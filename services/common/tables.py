"""Require-tables, once: a service refuses to start on a database it was not migrated for.

:func:`missing_tables` asks PostgreSQL which of a service's tables are not
visible on the connection's search path (one query; ``to_regclass`` is null for
a missing relation); :func:`require_tables` raises the service's own
``*TablesMissing`` error, with its message, when any is.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

__all__ = ["missing_tables", "require_tables"]


async def missing_tables(conn: asyncpg.Connection, tables: Sequence[str]) -> tuple[str, ...]:
    """The tables of ``tables`` (in their order) that do not exist for ``conn``."""
    missing = await conn.fetchval(
        "select coalesce(array_agg(t order by i), '{}') "
        "from unnest($1::text[]) with ordinality as x(t, i) where to_regclass(t) is null",
        list(tables))
    return tuple(missing)


async def require_tables(conn: asyncpg.Connection, tables: Sequence[str],
                         error_type: type[Exception], message: str) -> None:
    """Raise ``error_type(message)`` unless every table of ``tables`` exists.

    ``message`` is a format string: ``{tables}`` becomes the missing tables,
    comma-separated, and ``{schema}`` the connection's current schema.
    """
    missing = await missing_tables(conn, tables)
    if missing:
        schema = await conn.fetchval("select current_schema()")
        raise error_type(message.format(tables=", ".join(missing), schema=schema))
