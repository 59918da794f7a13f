"""The HTTP/1.1 server both client-facing listeners use: the model server's front in a pod and the local router of
``esteira up``. Requests are parsed by httptools (llhttp underneath) and answered whole.

Why not aiohttp's server: on the router's inference path its request, response and routing objects cost more CPU
than the model server behind it (py-spy under wrk); this server does only what those listeners need: whole
bodies both ways, keep-alive, pipelined requests answered in order, ``Expect: 100-continue``, ``HEAD`` on every
``GET`` route, and routes matched by pattern. Every error it answers itself is ``{"error": ...}``.

What a slow or abusive client may hold is bounded (:class:`ClientLimits`): a connection that has not finished a
request head within ``header_seconds`` is closed, a body that has not arrived within ``body_seconds`` is a 408,
an idle keep-alive connection is closed after ``idle_seconds``, a connection beyond ``max_connections`` gets a
503, and a URL over 8 KB, header lines over 64 KB or a malformed request is refused with a 4xx and one log
line. A body over ``max_body`` (or its route's cap) is a 413, answered while the rest of it is read and dropped. Each connection has one watchdog timer, armed once and checked twice per shortest deadline,
so no timer is set or cancelled per request.

A request whose answer is worth nothing once its caller has gone (``abandon`` says which: inference) has its
handler cancelled when the caller closes the connection: a proxy's request to the server behind it ends, its
connection closes, and a model server that watches its callers (esteira-kserve) leaves the request out instead
of running it for nobody. Any other request runs to its end. A client that half-closes its side after sending
(``shutdown(SHUT_WR)``) has left too: the end of what it sends is all a server sees of a caller that gave up, and
nginx takes it so by default (``proxy_ignore_client_abort off``).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools

logger = logging.getLogger(__name__)

MAX_URL = 8190  # bytes of a request target
MAX_HEAD = 65536  # bytes of a request's header lines
MAX_PIPELINED = 16  # requests read ahead on one connection before it stops reading
JSON = "application/json"


@dataclass(frozen=True)
class ClientLimits:
    """Per-connection deadlines (seconds) and the number of connections served at once."""

    header_seconds: float = 10.0
    body_seconds: float = 30.0
    idle_seconds: float = 15.0
    max_connections: int = 512


@dataclass(slots=True)
class Request:
    """One whole request; header names are lower case (a repeated header's values joined by ", ")."""

    method: str
    path: str  # percent-decoded
    query: str
    headers: dict[str, str]
    body: bytes
    target: str = ""  # the path and query as sent
    params: dict[str, str] = field(default_factory=dict)  # the route's matched parts
    caller: object = None  # the connection it came on: a caller's next request comes on the same one


@dataclass(slots=True)
class Response:
    """One whole answer; ``headers`` besides Content-Length, which is written from the body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


class HttpError(Exception):
    """Raised by a handler: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode(), {"Content-Type": JSON})


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


class Routes:
    """Handlers by method (``*``: any) and path pattern; ``{name}`` matches one path segment, ``{name:regex}``
    the regex. A path no route matches is a 404, a path matched for other methods only a 405 naming them. A
    route's ``max_body`` caps its request bodies below the server's (:meth:`body_limit`), checked before they
    are read."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._capped: list[tuple[int, str, int]] = []  # (route index, method, bytes)

    def add(self, method: str, pattern: str, handler: Handler, max_body: int | None = None) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)(?::([^{}]+))?\}", _group, pattern) + "$")
        index = next((i for i, (known, _) in enumerate(self._routes) if known.pattern == regex.pattern), None)
        if index is None:
            index = len(self._routes)
            self._routes.append((regex, {}))
        self._routes[index][1][method] = handler
        if max_body is not None:
            self._capped.append((index, method, max_body))

    def body_limit(self, method: str, path: str) -> int | None:
        """The body cap of the route that will take this request, if it has one. Only the capped routes are
        tried first, so a request for any other route pays one match per capped route."""
        for index, capped_method, limit in self._capped:
            if capped_method == method and self._routes[index][0].match(path):
                earlier = self._routes[:index]
                if not any(_takes(handlers, method) and regex.match(path) for regex, handlers in earlier):
                    return limit
        return None

    async def __call__(self, request: Request) -> Response:
        allowed: set[str] = set()
        method = "GET" if request.method == "HEAD" else request.method
        for regex, handlers in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            handler = handlers.get(method) or handlers.get("*")  # as _takes
            if handler is None:
                allowed.update(handlers)
                continue
            request.params = match.groupdict()
            try:
                return await handler(request)
            except HttpError as error:
                return error_response(error.status, error.message)
        if allowed:
            use = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
            return error_response(405, f"{request.method} is not allowed on {request.path}; use {use}")
        return error_response(404, f"no such endpoint: {request.method} {request.path}")


def _takes(handlers: Mapping[str, Handler], method: str) -> bool:
    """Whether a route's handlers answer ``method`` (``HEAD`` by its ``GET``)."""
    return ("GET" if method == "HEAD" else method) in handlers or "*" in handlers


def _group(match: re.Match[str]) -> str:
    return f"(?P<{match.group(1)}>{match.group(2) or '[^/]+'})"


class HttpServer:
    """Listens on one address and answers each request with ``handler``."""

    def __init__(
        self,
        handler: Handler,
        limits: ClientLimits | None = None,
        max_body: int = 32 * 1024 * 1024,
        body_limit: Callable[[str, str], int | None] | None = None,
        abandon: Callable[[Request], bool] | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits or ClientLimits()
        self.max_body = max_body
        self.body_limit = body_limit  # a smaller cap for some requests, by method and path (Routes.body_limit)
        self.abandon = abandon  # requests whose handler stops when their caller goes
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._all_closed = asyncio.Event()
        self._date = (0, "")

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)

    async def stop(self, within: float = 15.0) -> None:
        """Stop listening, let requests being answered finish (up to ``within`` seconds), then close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections):
            connection.finish()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), within)
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()

    def closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    def date(self) -> str:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


class _Refused(Exception):
    """Raised from a parser callback once the request has been refused: the parser stops there."""


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes come, answers them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # Whole requests, and whether to keep the connection; a refusal (a Response) ends them: it is written in
        # its turn and closes the connection.
        self.pending: deque[tuple[Request | Response, bool]] = deque()
        self.answering = False
        self.closing = False  # close once the requests read so far are answered
        self.paused = False
        self.task: asyncio.Task[None] | None = None  # the answer being made
        self.answered: Request | None = None  # the request it answers
        self.dropping = False  # a body over the limit was answered with a 413: the rest is read and dropped
        self.phase: str | None = None  # "head" or "body" while a request is being read
        self.phase_since = 0.0
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._watch: asyncio.TimerHandle | None = None
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._max_body = server.max_body
        self._target = self._path = ""

    # --- the connection ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's
        limits = self.server.limits
        if len(self.server.connections) >= limits.max_connections:
            logger.warning(
                "refused a connection: %d open, the limit is %d", len(self.server.connections), limits.max_connections
            )
            self._refuse(503, f"too many connections (limit {limits.max_connections}); retry later")
            return
        self.server.connections.add(self)
        self.server._all_closed.clear()
        self.idle_since = self._loop.time()
        self.phase, self.phase_since = "head", self.idle_since  # a client that connects owes a request head
        period = min(limits.header_seconds, limits.body_seconds, limits.idle_seconds) / 2
        self._watch = self._loop.call_later(period, self._check, period)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.pending.clear()
        abandon, task, answered = self.server.abandon, self.task, self.answered
        if abandon is not None and self.answering and task is not None and answered is not None and abandon(answered):
            task.cancel()
        if self._watch is not None:
            self._watch.cancel()
        self.server.closed(self)

    def data_received(self, data: bytes) -> None:
        if self.closing and not self.dropping:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported here")
        except httptools.HttpParserError as error:
            if not self.closing:  # not refused already by a callback
                reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
                logger.warning("refused a malformed request: %s", reason)
                self._refuse(400, f"malformed request: {reason}")

    def finish(self) -> None:
        """Close once the requests read so far are answered (now, when there are none)."""
        self.closing = True
        if not self.answering and not self.pending and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, status: int, message: str, close: bool = True) -> None:
        """Answer with an error that ends the connection (closed once written unless ``close`` is False, or a body
        is still being dropped); nothing read after it is answered. Behind answers owed to requests pipelined
        before it, it waits its turn: written at once, the caller of the first took it for that answer."""
        self.closing = True
        response = error_response(status, message)
        if self.answering:
            self.pending.append((response, False))
            return
        self._write_refusal(response, close)

    def _write_refusal(self, response: Response, close: bool = True) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(self._head(response, close=True) + response.body)
            if close and not self.dropping:
                transport.close()

    def _check(self, period: float) -> None:
        """The watchdog: a request head, a body or an idle keep-alive past its deadline ends the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        now, limits = self._loop.time(), self.server.limits
        if not self.answering:
            if self.phase == "head" and now - self.phase_since >= limits.header_seconds:
                logger.info("closed a connection whose request head took over %gs", limits.header_seconds)
                self.closing = True
                self.transport.close()
                return
            if self.phase == "body" and now - self.phase_since >= limits.body_seconds:
                if self.dropping:
                    self.transport.close()
                else:
                    self._refuse(408, f"the request body did not arrive within {limits.body_seconds:g}s")
                return
            if self.phase is None and not self.pending and now - self.idle_since >= limits.idle_seconds:
                self.closing = True
                self.transport.close()
                return
        self._watch = self._loop.call_later(period, self._check, period)

    # --- httptools' callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.phase, self.phase_since = "head", self._loop.time()
        self._url, self._headers, self._head_size, self._body, self._body_size = [], {}, 0, [], 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        if sum(map(len, self._url)) > MAX_URL:
            logger.warning("refused a malformed request: a URL over %d bytes", MAX_URL)
            self._refuse(400, f"the URL is over {MAX_URL} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            logger.warning("refused a request whose header lines are over %d bytes", MAX_HEAD)
            self._refuse(431, f"the request's header lines are over {MAX_HEAD} bytes")
            raise _Refused
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self.phase, self.phase_since = "body", self._loop.time()
        target = b"".join(self._url).decode("latin-1")
        path = target.partition("?")[0]
        self._target, self._path = target, urllib.parse.unquote(path) if "%" in path else path
        self._max_body = self.server.max_body
        if self.server.body_limit is not None:
            self._max_body = min(self._max_body, self.server.body_limit(self._method(), self._path) or self._max_body)
        expects = self._headers.get("expect", "").lower() == "100-continue"
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_body:
            message = f"the request body of {length} bytes exceeded the limit of {self._max_body}"
            if expects:  # the client waits for a word before it sends the body: none will come
                self._refuse(413, message)
                raise _Refused
            self._drop_body(message)
        elif expects and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.dropping:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._drop_body(f"the request body exceeded the limit of {self._max_body} bytes")
            return
        self._body.append(body)

    def _drop_body(self, message: str) -> None:
        """Answer 413 now, and read the rest of the body without keeping it: a client still sending would be
        reset by a close, before it reads the answer. The connection closes when the body ends, or at the
        body's deadline."""
        self._refuse(413, message, close=False)
        self.dropping, self._body = True, []

    def on_message_complete(self) -> None:
        if self.dropping:  # the body over the limit has ended: close, once its 413 has been written in its turn
            self.dropping = False
            if not self.answering and self.transport is not None:
                self.transport.close()
            raise _Refused
        self.phase = None
        target = self._target
        request = Request(
            self._method(),
            self._path,
            target.partition("?")[2],
            self._headers,
            b"".join(self._body),
            target,
            caller=self,
        )
        self.pending.append((request, self.parser.should_keep_alive()))
        if not self.answering:
            self._answer_next()
        elif len(self.pending) >= MAX_PIPELINED and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _method(self) -> str:
        return self.parser.get_method().decode("latin-1")

    # --- answering -----------------------------------------------------------------------------------------

    def _answer_next(self) -> None:
        request, keep = self.pending.popleft()
        if isinstance(request, Response):  # the refusal that ends the connection, in its turn
            self._write_refusal(request)
            return
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.answering, self.answered = True, request
        self.task = self._loop.create_task(self._answer(request, keep))  # held: the loop keeps tasks weakly

    async def _answer(self, request: Request, keep: bool) -> None:
        try:
            response = await self.server.handler(request)
            close = not keep or (self.closing and not self.pending)
            head = self._head(response, close)
        except Exception:
            logger.exception("answering %s %s failed", request.method, request.path)
            response, close = error_response(500, "internal error"), True
            head = self._head(response, close)
        self.answering = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(head if request.method == "HEAD" else head + response.body)
        if close:
            self.closing = True
            transport.close()
        elif self.pending:
            self._answer_next()
        else:
            self.idle_since = self._loop.time()
            if self.phase is not None:  # the next request began while this one was answered: its clock starts now
                self.phase_since = self.idle_since

    def _head(self, response: Response, close: bool) -> bytes:
        status = response.status
        lines = [f"HTTP/1.1 {status} {response.reason or _REASONS.get(status, 'Unknown')}"]
        for name, value in response.headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"response header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(response.body)}")
        lines.append(f"Date: {self.server.date()}")
        if close:
            lines.append("Connection: close")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1", "replace")
