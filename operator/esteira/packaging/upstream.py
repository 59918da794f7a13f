"""A lean keep-alive HTTP/1.1 client for the one hop from a front to the model server behind it (``Upstream``, on
an event loop), and for the inference log's sender thread (``BlockingUpstream``).

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
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httptools

from esteira.vocabulary import MAX_UNIX_SOCKET_PATH

_NO_BODY_STATUSES = frozenset({204, 304})
_SWITCHING_PROTOCOLS = 101  # the one 1xx answer that is not followed by the answer: HTTP/1.1 ends there


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


UNIX_SCHEME = "unix:"  # ``unix:/PATH``: a server on this machine's Unix socket


def fits_unix_socket(path: Path) -> bool:
    """Whether ``path`` is short enough to be a Unix socket's address."""
    return len(os.fsencode(path)) <= MAX_UNIX_SOCKET_PATH


def request_head(method: str, target: str, host: str, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers; a name or value with CR or LF is refused (it would split the request)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class _Reading:
    """One answer being read: httptools calls the ``on_*`` methods as its bytes are fed; ``reply`` is set once
    it is whole. Both clients below read through it.

    An informational answer (``100 Continue``, ``103 Early Hints``) comes before the answer on the same connection
    and is skipped: taken for the answer, it was relayed to the caller as its answer while the real one, left on the
    connection, went to whichever request the connection carried next (RFC 9110, section 15.2)."""

    def __init__(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.reply: Reply | None = None
        self.reusable = False  # whether the connection may carry another request after this answer
        self.received = False  # whether any byte of it came
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._until_close = False
        self._interim = False  # the message being read is informational (1xx): not the answer

    def feed(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise Malformed(f"the answer is not HTTP/1.1: {exc}") from None

    def ended(self) -> None:
        """The connection closed cleanly: an answer delimited by its end is whole now."""
        if self._until_close and self.reply is None:
            self.on_message_complete()

    def on_status(self, reason: bytes) -> None:
        self._reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status // 100 == 1 and status != _SWITCHING_PROTOCOLS:
            self._interim = True  # no body follows; the answer is the next message
            return
        if self.head_only:  # llhttp cannot be told a HEAD answer has no body: end here, close after
            self.on_message_complete()
            return
        framed = "content-length" in self._headers or "chunked" in self._headers.get("transfer-encoding", "")
        self._until_close = not framed and status >= 200 and status not in _NO_BODY_STATUSES

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:  # what it said belongs to no answer: read the next message afresh
            self._interim, self._reason, self._headers, self._chunks = False, "", {}, []
            return
        if self.reply is None:  # llhttp knows keep-alive only until the message ends: asked here
            self.reusable = not (self.head_only or self._until_close or not self.parser.should_keep_alive())
            self.reply = Reply(self.parser.get_status_code(), self._reason, self._headers, b"".join(self._chunks))


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reading: _Reading | None = None
        self._answer: asyncio.Future[Reply] | None = None
        self._received = False

    # --- asyncio ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        reading = self._reading
        if reading is None:  # nothing was asked: a server speaking out of turn is not reused
            self.close()
            return
        self._received = True
        try:
            reading.feed(data)
        except Malformed as exc:
            self._fail(exc)
            self.close()
            return
        if reading.reply is not None:
            self._complete(reading, reading.reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reading = self._reading
        if reading is not None and exc is None:
            reading.ended()
            if reading.reply is not None:
                self._complete(reading, reading.reply)
        self._fail(Disconnected("the connection closed before a complete answer"))

    def _complete(self, reading: _Reading, reply: Reply) -> None:
        answer = self._answer
        if not reading.reusable:
            self.close()
        self._reading = self._answer = None
        if answer is not None and not answer.done():
            answer.set_result(reply)

    # --- the client's side -----------------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, head_only: bool) -> asyncio.Future[Reply]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._reading, self._received = _Reading(head_only), False
        self.transport.writelines((head, body) if body else (head,))
        return self._answer

    @property
    def answered_nothing(self) -> bool:
        return not self._received

    def time_out(self, seconds: float) -> None:
        self._fail(TimedOut(f"no complete answer within {seconds:g}s"))
        self.close()

    def _fail(self, error: UpstreamError) -> None:
        answer, self._answer, self._reading = self._answer, None, None
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Upstream:
    """Keep-alive connections to one ``http://HOST:PORT`` or ``unix:/PATH`` server, reused one request at a time.

    A Unix socket is for a server on the same machine: each message skips the TCP stack, which on loopback is most
    of a ``send``'s cost and of the receiver's wake-up (a round trip between two processes took 34 us against 52
    over loopback TCP on a 2-core virtual machine)."""

    def __init__(
        self,
        address: str,
        connect_seconds: float = 5.0,
        answer_seconds: float | None = 60.0,
        idle_seconds: float = 10.0,
        max_idle: int = 128,
    ) -> None:
        self.path = address[len(UNIX_SCHEME) :] if address.startswith(UNIX_SCHEME) else None
        if self.path is not None:
            if not self.path.startswith("/"):
                raise ValueError(f"{address!r} is not {UNIX_SCHEME}/PATH")
            self.host, self.port, self._authority = "localhost", 0, "localhost"
        else:
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
                if self.path is not None:
                    _, connection = await loop.create_unix_connection(_Connection, self.path)
                else:
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


def parse_url(url: str) -> tuple[bool, str, int, str]:
    """``http(s)://HOST[:PORT]/PATH?QUERY`` as (tls, host, port, target); ValueError naming the URL otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return tls, parts.hostname, parts.port or (443 if tls else 80), target


class BlockingUpstream:
    """The same client for one thread that may block (the inference log's sender): one keep-alive connection to
    an ``http(s)://`` origin, each request sent in one write and its answer read straight into the parser.

    Why not ``http.client``: it polls before every read, reads the status line and headers through a buffered
    file and parses them with the email package; in a model server each of those steps hands the GIL to and from
    the thread serving requests. A 52 KB post costs this client 235 us of CPU against 350, and a TorchServe worker
    logging every request as one-event posts serves about 10-30 % more with it.
    """

    def __init__(
        self, url: str, connect_seconds: float = 5.0, answer_seconds: float | None = 60.0, idle_seconds: float = 10.0
    ) -> None:
        self.tls, self.host, self.port, _ = parse_url(url)
        self._authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self.connect_seconds = connect_seconds
        self.answer_seconds = answer_seconds
        self.idle_seconds = idle_seconds
        self._socket: socket.socket | None = None
        self._idle_since = 0.0

    def request(self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """One request and its whole answer; UpstreamError when there is none (the message names no address)."""
        head = request_head(method, target, self._authority, headers or {}, len(body))
        reused = self._socket is not None and time.monotonic() - self._idle_since < self.idle_seconds
        if not reused:
            self.close()
        try:
            return self._exchange(head + body, method == "HEAD")
        except _NothingAnswered:
            if not reused:
                raise Disconnected("the connection closed before a complete answer") from None
        return self._exchange(head + body, method == "HEAD")  # the server closed it as idle just as we sent

    def _exchange(self, request: bytes, head_only: bool) -> Reply:
        connection = self._socket or self._connect()
        reading = _Reading(head_only)
        deadline = None if self.answer_seconds is None else time.monotonic() + self.answer_seconds
        try:
            self._time_limit(connection, self.answer_seconds)
            connection.sendall(request)
            while True:
                data = connection.recv(_READ_SIZE)
                if not data:
                    reading.ended()
                    if reading.reply is None:
                        self.close()
                        raise _NothingAnswered() if not reading.received else Disconnected(_CUT_SHORT)
                    break
                reading.feed(data)
                if reading.reply is not None:
                    break
                if deadline is not None:  # an answer in pieces: what is left of the deadline for the next one
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self._time_limit(connection, left)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's time limit ran out
            self.close()
            raise TimedOut(f"no complete answer within {self.answer_seconds:g}s") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            if not reading.received:
                raise _NothingAnswered() from exc
            raise Disconnected(_CUT_SHORT) from None
        except (UpstreamError, OSError):
            self.close()
            raise
        if reading.reusable:
            self._idle_since = time.monotonic()
        else:
            self.close()
        return reading.reply

    def _time_limit(self, connection: socket.socket, seconds: float | None) -> None:
        """Limit each send and receive to ``seconds``. On plain TCP the kernel keeps the limit and the socket
        stays blocking: one call per send or receive. Python's own timeouts poll before each call and, when a
        send fills the buffer, send in pieces: each a GIL hand-over the serving thread pays for."""
        if self.tls:
            connection.settimeout(seconds)
            return
        limit = _timeval(seconds)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)

    def _connect(self) -> socket.socket:
        try:
            connection = socket.create_connection((self.host, self.port), timeout=self.connect_seconds)
        except TimeoutError:
            raise Unreachable(f"no connection within {self.connect_seconds:g}s") from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise Unreachable(f"cannot connect: {reason}") from None
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            connection = ssl.create_default_context().wrap_socket(connection, server_hostname=self.host)
        else:
            connection.settimeout(None)  # blocking; _time_limit has the kernel keep the limits
        self._socket = connection
        return connection

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _timeval(seconds: float | None) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO and SO_SNDTIMEO; all zero means no limit, so a limit is 1 µs at least."""
    if seconds is None:
        return struct.pack("ll", 0, 0)
    micros = max(1, round(seconds * 1_000_000))
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


class _NothingAnswered(Exception):
    """The connection ended before a byte of the answer: a reused one may be sent the request again."""


_READ_SIZE = 65536
_CUT_SHORT = "the connection closed before a complete answer"
