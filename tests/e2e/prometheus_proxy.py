"""A front for a real Prometheus, as a cluster puts one behind an authenticating proxy.

It can demand credentials (answering 401 without them), records the Authorization headers it saw, and
can hold queries (a closed gate) so a test can stop the operator in the middle of an analysis.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Self

import aiohttp
import aiohttp.web

from tests.support.net import free_port


class PrometheusProxy:
    """Forwards `/api/v1/*` to `upstream`; `authorization` is the exact header it demands, if any."""

    def __init__(self, upstream: str, authorization: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.authorization = authorization
        self.port = free_port()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # set while a query is held at the closed gate
        self.seen: list[str | None] = []  # the Authorization header of every request
        self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prometheus-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        header = request.headers.get("Authorization")
        self.seen.append(header)
        if self.authorization is not None and header != self.authorization:
            self.refused += 1
            return aiohttp.web.Response(status=401, text="Unauthorized\n")
        if not self.gate.is_set():
            self.waiting.set()
            await asyncio.to_thread(self.gate.wait)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.upstream}{request.path}", params=request.query) as answer,
        ):
            body = await answer.read()
        return aiohttp.web.Response(status=answer.status, body=body, content_type="application/json")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = aiohttp.web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the Prometheus proxy did not start")
        return self

    def stop(self) -> None:
        self.gate.set()
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
