"""Collector fixtures: one real PostgreSQL server per worker, and a collector app on each database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from esteira.collector.app import Collector, CollectorConfig
from tests.support.postgres import postgres_server
from tests.support.waiting import eventually

TOKEN = "s3cret-token"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind (PostgreSQL: a new schema-free database per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"))


def fresh_postgres_database(server: str) -> str:
    """A new, empty database on the server at `server`; returns its URL."""
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


def drop_connections(server: str, database: str) -> None:
    """What a database restart or failover does to its clients: every connection to `database` is closed by
    the server. Returns once the server has no such connection left."""
    import psycopg

    name = database.rsplit("/", 1)[1]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        eventually(
            lambda: (
                conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone() == (0,)
            ),
            10,
            f"the server to close every connection to {name}",
        )


@pytest.fixture
async def collector(database: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = Collector(CollectorConfig(database, token=TOKEN, max_body=64 * 1024)).app()
    async with TestClient(TestServer(app)) as client:
        yield client
