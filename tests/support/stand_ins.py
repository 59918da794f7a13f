"""Pieces shared by the tests' stand-ins for the servers Esteira proxies to."""

from __future__ import annotations

import asyncio


async def held_until_cancelled(held: asyncio.Event, let_go: asyncio.Event) -> None:
    """A stand-in handler's hold on its request until the server cancels the handler (aiohttp does when the client
    closes the connection, with ``handler_cancellation``): ``held`` is set once it holds, ``let_go`` once it has
    been cancelled."""
    held.set()
    try:
        await asyncio.Event().wait()
    finally:
        let_go.set()
