"""Session fixtures: one real broker and one real PostgreSQL for the whole run.

Tests never skip for lack of infrastructure: the session starts both itself from
the project's own dependencies. Each test gets its own topic namespace and its
own database schema so tests cannot see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from infra.embedded.broker import EmbeddedBroker
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.processes import free_port
from tests.support.stack import UpProcess

# The test session is a development one (the built-in token secret is accepted, and
# only on loopback); a test of production settings says development=False itself.
os.environ["SONAE_DEVELOPMENT"] = "true"


@dataclass
class Stack:
    """The running embedded parts of the test session."""

    broker: EmbeddedBroker
    postgres: EmbeddedPostgres

    @property
    def kafka_bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def database_url(self) -> str:
        return self.postgres.url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start the embedded broker and PostgreSQL once for the session."""
    base: Path = tmp_path_factory.mktemp("stack")
    broker = EmbeddedBroker(port=free_port(), log_path=base / "tansu.log")
    postgres = EmbeddedPostgres(data_dir=base / "postgres", port=free_port(), durable=False)
    broker.start()
    try:
        postgres.start()
    except BaseException:
        broker.stop()
        raise
    try:
        yield Stack(broker=broker, postgres=postgres)
    finally:
        postgres.stop()
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: Stack) -> str:
    """Bootstrap address of the session's real broker."""
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(stack: Stack) -> str:
    """DSN of the session's real PostgreSQL database."""
    return stack.database_url


@pytest.fixture
def namespace() -> str:
    """A topic namespace of the test's own."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def db_schema(database_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema for the test, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'create schema "{name}"')
        yield name
        await conn.execute(f'drop schema "{name}" cascade')
    finally:
        await conn.close()


@pytest.fixture
async def db_pool(database_url: str, db_schema: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool whose search_path is the test's own schema."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, server_settings={"search_path": db_schema}
    )
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    """A real `sonae up` in a fresh data directory, stopped after the test."""
    proc = UpProcess(tmp_path / "stack")
    try:
        yield proc
    finally:
        proc.stop()
