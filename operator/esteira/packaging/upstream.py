"""A lean keep-alive HTTP/1.1 client for the one hop from a front to the model server behind it.

Why not aiohttp's ClientSession: on the local router's inference path, building its request, response and
connector objects cost more CPU per request than the model server answering it (py-spy under wrk). This client
does only what that hop needs: one origin, whole bodies both ways, answers delimited by Content-Length, chunked
encoding or the connection's end (parsed by httptools, llhttp underneath), idle connections kept for reuse, and
errors that say what failed without naming the address (callers log that).

A request sent on a reused connection that the server closes before answering a byte is sent once more on a new
connection: the server may have closed it as idle just as the request left, and nothing was answered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httptools

_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The server gave no complete answer; the message says what happened and never names the address."""


class Unreachable(UpstreamError):
    """No connection could be opened."""


class Disconnected(UpstreamError):
    """The connection ended before a complete answer."""


class TimedOut(UpstreamError):
    """No complete answer within the deadline."""


class Malformed(UpstreamError):
    """The answer is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete answer; header names are lower case (a repeated header's values joined by ", ")."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def parse_address(address: str) -> tuple[str, int]:
    """``http://HOST:PORT`` as (host, port); ValueError naming the address otherwise."""
    scheme, sep, rest = address.rstrip("/").partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "http" or not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not http://HOST:PORT")
    return host.strip("[]"), int(port)


def request_head(method: str, target: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers; a name or value with CR or LF is refused (it would split the request)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request at a time; httptools calls the ``on_*`` methods."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._answer: asyncio.Future[Reply] | None = None
        self._head_only = False
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._received = False
        self._until_close = False

    # --- asyncio ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing was asked: a server speaking out of turn is not reused
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Malformed(f"the answer is not HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and exc is None:  # the answer's body ran to the end of the connection
            self.on_message_complete()
        self._fail(Disconnected("the connection closed before a complete answer"))

    # --- httptools -------------------------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self._head_only:  # llhttp cannot be told a HEAD answer has no body: end here, close after
            self.on_message_complete()
            return
        status = self._parser.get_status_code()
        framed = "content-length" in self._headers or "chunked" in self._headers.get("transfer-encoding", "")
        self._until_close = not framed and status >= 200 and status not in _NO_BODY_STATUSES

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        parser, answer = self._parser, self._answer
        if parser is None or answer is None:
            return
        reply = Reply(parser.get_status_code(), self._reason, self._headers, b"".join(self._chunks))
        if self._head_only or self._until_close or not parser.should_keep_alive():
            self.close()
        self._parser = self._answer = None
        if not answer.done():
            answer.set_result(reply)

    # --- the client's side -----------------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, head_only: bool) -> asyncio.Future[Reply]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._head_only, self._until_close, self._received = head_only, False, False
        self._reason, self._headers, self._chunks = "", {}, []
        self.transport.writelines((head, body) if body else (head,))
        return self._answer

    @property
    def answered_nothing(self) -> bool:
        return not self._received

    def time_out(self, seconds: float) -> None:
        self._fail(TimedOut(f"no complete answer within {seconds:g}s"))
        self.close()

    def _fail(self, error: UpstreamError) -> None:
        answer, self._answer, self._parser = self._answer, None, None
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Upstream:
    """Keep-alive connections to one ``http://HOST:PORT`` server, reused one request at a time."""

    def __init__(
        self,
        address: str,
        connect_seconds: float = 5.0,
        answer_seconds: float | None = 60.0,
        idle_seconds: float = 10.0,
        max_idle: int = 128,
    ) -> None:
        self.host, self.port = parse_address(address)
        self._authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.connect_seconds = connect_seconds
        self.answer_seconds = answer_seconds
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Reply:
        """One request and its whole answer; UpstreamError when there is none (the message names no address)."""
        head = request_head(method, target, self._authority, headers or {}, len(body))
        loop = asyncio.get_running_loop()
        deadline = None if self.answer_seconds is None else loop.time() + self.answer_seconds
        head_only = method == "HEAD"
        connection, reused = await self._connection(loop, deadline)
        try:
            return await self._exchange(loop, connection, (head, body), head_only, deadline)
        except Disconnected:
            if not (reused and connection.answered_nothing):
                raise
        connection, _ = await self._connection(loop, deadline, fresh=True)
        return await self._exchange(loop, connection, (head, body), head_only, deadline)

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: _Connection,
        request: tuple[bytes, bytes],
        head_only: bool,
        deadline: float | None,
    ) -> Reply:
        # A timer on the loop, not asyncio.timeout: this runs once per proxied request and the timer is cheaper.
        timer = None if deadline is None else loop.call_at(deadline, connection.time_out, self.answer_seconds or 0.0)
        done = False
        try:
            reply = await connection.send(*request, head_only)
            done = True
            return reply
        finally:  # a request cancelled or failed halfway leaves the connection in an unknown state: closed
            if timer is not None:
                timer.cancel()
            if done and not connection.closed and not self._closed and len(self._idle) < self.max_idle:
                connection.idle_since = loop.time()
                self._idle.append(connection)
            else:
                connection.close()

    async def _connection(
        self, loop: asyncio.AbstractEventLoop, deadline: float | None, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """An idle connection (most recently used first), else a new one."""
        now = loop.time()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                return connection, True
            connection.close()
        within = self.connect_seconds if deadline is None else max(0.0, min(self.connect_seconds, deadline - now))
        try:
            async with asyncio.timeout(within):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise Unreachable(f"no connection within {within:g}s") from None
        except OSError as exc:  # asyncio's own message names the address; the errno's does not
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise Unreachable(f"cannot connect: {reason}") from None
        return connection, False

    def close(self) -> None:
        """Close the idle connections; those carrying a request close when it ends."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
