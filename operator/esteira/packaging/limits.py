"""What a slow or abusive client may hold: time to send a request head and a body, and connections at once.

aiohttp's server has an idle keep-alive timeout but no deadline for a request head or body, and no cap on
connections, so a client sending a byte now and then (slowloris) keeps a connection, and its buffers, for
ever. Both client-facing servers, the local router and the model server's front, listen through
:class:`GuardedRunner`: a connection that has not finished a request head within ``header_seconds`` is
closed, a body that has not arrived within ``body_seconds`` is a 408 (:func:`read_body`), a connection
beyond ``max_connections`` gets a 503 and is closed, and a malformed request (a URL over 8 KB, a bad header)
logs one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientLimits:
    """Per-connection deadlines (seconds) and the number of connections served at once."""

    header_seconds: float = 10.0
    body_seconds: float = 30.0
    idle_seconds: float = 15.0
    max_connections: int = 512


async def read_body(request: web.Request, limits: ClientLimits) -> bytes:
    """The whole request body, or a 408 when it does not arrive within ``body_seconds``."""
    if request.content.is_eof():  # all of it came with the head, as small inference bodies do: nothing to wait for
        return await request.read()
    try:
        async with asyncio.timeout(limits.body_seconds):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {limits.body_seconds:g}s") from None


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a deadline for each request head and a cap on connections."""

    def __init__(self, manager: web.Server, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._head_since: float | None = None
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > self._limits.max_connections:
            logger.warning(
                "refused a connection: %d open, the limit is %d",
                len(manager.connections) - 1,
                self._limits.max_connections,
            )
            assert isinstance(transport, asyncio.Transport)
            transport.write(_refusal(f"too many connections (limit {self._limits.max_connections}); retry later"))
            self.force_close()
            transport.close()
            return
        self._head_since = self._loop.time()
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_since is None and not self._request_in_progress:
            self._head_since = self._loop.time()
        super().data_received(data)

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        self._head_since = None
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._head_since = None

    def _arm(self) -> None:
        self._watch = self._loop.call_later(self._limits.header_seconds / 2, self._check_head)

    def _check_head(self) -> None:
        if self.transport is None:
            return
        since = self._head_since
        if since is not None and not self._request_in_progress:
            waited = self._loop.time() - since
            if waited >= self._limits.header_seconds:
                logger.info("closed a connection whose request head took over %gs", self._limits.header_seconds)
                self.force_close()
                self.transport.close()
                return
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        error = kw.get("exc_info")
        if isinstance(error, HttpProcessingError):
            logger.warning("refused a malformed request: %s", _one_line(error))
            return
        super().log_exception(*args, **kw)


def _one_line(error: HttpProcessingError) -> str:
    text = f"{error.code} {error.message}".splitlines()[0] if error.message else str(error.code)
    return text[:120]


class _GuardedServer:
    """aiohttp's Server, making guarded connection handlers; everything else is the wrapped server's."""

    def __init__(self, inner: web.Server, limits: ClientLimits) -> None:
        self._inner = inner
        self._limits = limits

    def __call__(self) -> RequestHandler:
        kwargs = {**self._inner._kwargs, "keepalive_timeout": self._limits.idle_seconds}
        return _GuardedHandler(self._inner, self._limits, loop=self._inner._loop, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections obey ``limits``."""

    def __init__(self, app: web.Application, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(server, self.limits)  # type: ignore[return-value]
