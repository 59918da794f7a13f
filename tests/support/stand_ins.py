"""Pieces shared by the tests' stand-ins for the servers Esteira proxies to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from esteira.local.model_server import ModelServer


async def held_until_cancelled(held: asyncio.Event, let_go: asyncio.Event) -> None:
    """A stand-in handler's hold on its request until the server cancels the handler (aiohttp does when the client
    closes the connection, with ``handler_cancellation``): ``held`` is set once it holds, ``let_go`` once it has
    been cancelled."""
    held.set()
    try:
        await asyncio.Event().wait()
    finally:
        let_go.set()


@dataclass
class StandInServer(ModelServer):
    """A model server for tests of `esteira up`'s runtime: no ports, no metrics, no runtime variables, never
    ready; a test's subclass says what it runs and when it is ready."""

    @property
    def url(self) -> str | None:
        return None

    @property
    def metrics_url(self) -> str | None:
        return None

    def listening(self) -> str:
        return "nowhere"

    def prepare(self) -> list[str]:
        return ["true"]

    def runtime_env(self) -> dict[str, str]:
        return {}

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        return False
