"""A stand-in for Prometheus's query API: one handler answers every `/api/v1/query`, for the tests that need a
Prometheus which fails, waits or checks credentials on cue."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp.web

Handler = Callable[[aiohttp.web.Request], Any]


@asynccontextmanager
async def serving(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``handler`` on a free port; yields the base URL with ``{}`` where userinfo may go."""
    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/query", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://{{}}127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def vector(*values: float) -> aiohttp.web.Response:
    """A successful instant query's answer: one unlabelled sample per value."""
    result = [{"metric": {}, "value": [0, str(value)]} for value in values]
    return aiohttp.web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})
