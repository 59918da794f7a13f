"""Collector fixtures: one real PostgreSQL server per worker, and a collector app on each database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from esteira.collector.app import Collector, CollectorConfig
from tests.support.postgres import postgres_server

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
    import psycopg

    base = request.getfixturevalue("postgres_url")
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def collector(database: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = Collector(CollectorConfig(database, token=TOKEN, max_body=64 * 1024)).app()
    async with TestClient(TestServer(app)) as client:
        yield client
