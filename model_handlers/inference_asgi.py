"""esteira-kserve's inference routes as a bare ASGI layer, outside KServe's FastAPI application.

Why outside: in KServe's application every request crosses its middleware (telemetry, body limit, KServe's
timing middleware, which probes CPU time twice per request, exception handling) and Starlette's router before a
route runs. Profiled at 32 concurrent callers, that stack cost more CPU than Esteira's whole handler. Inference
needs none of it: the body goes as it came to the adaptive batcher, the answer comes back with its status and
protocol headers. So v1 predict and v2 infer are matched here, ahead of the application; every other path
(health, metadata, readiness, metrics, KServe's own routes) passes through to KServe untouched. A request the
batcher refuses (halted: its model past its response timeout) is answered 503 with ``Retry-After``, and
``refused`` is told, so it counts as the server error it is. Each request that reaches the model is timed from
its arrival to its answer (``observe``: ``esteira_server_request_duration_seconds``), queueing included.

A request whose caller closes the connection while it waits is not run (the batcher leaves it out, see
:mod:`model_handlers.batcher`): the server's HTTP protocol puts ``CALLER_LEFT`` in the scope, which says when the
connection closed, and the request carries it. Such a request is timed up to when it was left out, ``abandoned`` is
told, and nothing is answered: nobody is there to read it. A caller that left before its body was read is
counted alike, and its request goes nowhere, rather than on with an empty body to be counted as the caller's
bad request. Where a proxy says how long the caller waits (``EXPECTED_TIMEOUT_HEADER``), a request its batch
would answer after that is refused at once, as a halted batcher's are (503 with ``Retry-After``, counted).

``esteira up``'s router joins callers' requests in one while the server is busy (:mod:`esteira.packaging.joiner`):
on the server's Unix socket, which only its user may reach, a joined request's entries go to the batcher as
requests of their own (each with its headers, its deadline, its answer, its timing and counts), and their answers
go back joined (:mod:`model_handlers.joined`). Each request costs the server's HTTP stack about 55 us of CPU, two
fifths of what the server spends a request at 32 callers (the ``esteira-kserve-stack`` row of
``benchmarks/README.md``); joined, eight cost it that once. A joined request on the
port is read as one request (its count dropped), and one joining more than a batch takes is refused whole.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from esteira.packaging.caller_queue import deadline
from esteira.packaging.surface import INFERENCE_PATH, RESPONSE_HEADERS
from esteira.vocabulary import RETRY_AFTER_SECONDS
from model_handlers.batcher import Abandoned, AdaptiveBatcher, Refused
from model_handlers.joined import (
    JOINED_CONTENT_TYPE,
    JOINED_HEADER,
    UNREADABLE,
    FramingError,
    joined_answers,
    joined_count,
    joined_requests,
)
from model_handlers.messages import Answer, RawRequest, never_left
from model_handlers.protocol import TooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PASSED = frozenset(key.lower() for key in RESPONSE_HEADERS)
_JSON = b"application/json"
CALLER_LEFT = "esteira.caller_left"  # in the scope where the server can tell: when the connection closed, or None


class InferenceRoutes:
    """Requests to the inference paths go to the batcher (a POST) or get a 405; everything else goes to ``inner``."""

    def __init__(
        self,
        inner: ASGIApp,
        batcher: AdaptiveBatcher[RawRequest, Answer],
        name: str,
        version: str,
        max_body: int,
        refused: Callable[[int], None] | None = None,
        observe: Callable[[float], None] | None = None,
        abandoned: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.batcher = batcher
        self.name = name
        self.version = version
        self.max_body = max_body
        self.refused = refused
        self.observe = observe
        self.abandoned = abandoned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = INFERENCE_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            await self.inner(scope, receive, send)
        elif scope["method"] != "POST":
            message = f"{scope['method']} is not allowed on {scope['path']}; use POST"
            await _respond(send, 405, _error(message), [(b"allow", b"POST")])
        else:
            await self._infer(matched, scope, receive, send)

    async def _infer(self, matched: re.Match[str], scope: Scope, receive: Receive, send: Send) -> None:
        name, version = matched["v1"] or matched["v2"], matched["version"]
        if name != self.name:
            await _respond(send, 404, _error(f"model {name!r} is not served here (only {self.name!r})"))
            return
        if version is not None and version != self.version:
            message = f"model {name!r} has no version {version!r} (serving: {self.version})"
            await _respond(send, 404, _error(message))
            return
        began = time.perf_counter()
        headers = request_headers(scope)
        joined = headers.pop(JOINED_HEADER, None)  # read on the router's socket only, dropped elsewhere
        if not over_unix_socket(scope):
            joined = None
        declared = headers.get("content-length", "")
        if headers.get("expect", "").lower() == "100-continue" and self._too_big(declared):
            # Refused before its body is asked for: reading it would send the 100 Continue that has the client
            # upload what is then thrown away.
            await self._too_large(send, declared, [(b"connection", b"close")])
            return
        body = await self._read_body(declared, receive)
        if body is None:  # the caller left before its body was read
            if self.abandoned is not None:
                self.abandoned()
            return
        if isinstance(body, int):
            await self._too_large(send, body)
            return
        left = scope.get(CALLER_LEFT) or never_left
        if joined is not None:
            await self._joined(joined, body, left, began, send)
            return
        answer = await self._answer(RawRequest(body, headers, left, deadline(began, headers)), name, began)
        if answer is not None:
            pairs = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in answer.headers.items()]
            await _respond(send, answer.status, answer.body, pairs)

    async def _too_large(self, send: Send, size: int | str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """A 413, counted as the handler counts its own (TorchServe's path answers and counts it alike)."""
        if self.refused is not None:
            self.refused(TooLarge.status)
        await _respond(send, TooLarge.status, _error(TooLarge(size, self.max_body).message), headers)

    async def _joined(
        self, count: str, body: bytes, left: Callable[[], float | None], began: float, send: Send
    ) -> None:
        """Requests joined in one by ``esteira up``'s router (:mod:`model_handlers.joined`): each goes to the
        batcher as a request of its own, and their answers go back joined; a body that does not hold what its
        count says, or joins more than a batch takes, is a 400 for all of them."""
        try:
            parts = joined_requests(body, joined_count({JOINED_HEADER: count}) or 0)
        except FramingError as error:
            await _respond(send, 400, _error(f"{UNREADABLE}: {error}"))
            return
        most = self.batcher.max_batch_size
        if len(parts) > most:
            message = f"a joined request carries {len(parts)} requests, more than a batch takes ({most})"
            await _respond(send, 400, _error(message))
            return
        requests = [RawRequest(part, headers, left, deadline(began, headers)) for headers, part in parts]
        answers = await asyncio.gather(*(self._answer(request, self.name, began) for request in requests))
        if any(answer is None for answer in answers):  # the caller left: nobody reads the rest either
            return
        framed = joined_answers(
            (answer.status, answer.headers, answer.body) for answer in answers if answer is not None
        )
        pairs = [(b"content-type", JOINED_CONTENT_TYPE.encode()), (JOINED_HEADER.encode(), str(len(answers)).encode())]
        await _respond(send, 200, framed, pairs)

    async def _answer(self, request: RawRequest, name: str, began: float) -> Answer | None:
        """The batcher's answer to one request with the headers to send (the protocol's only), its refusal as a 503,
        each counted; None when its caller left."""
        try:
            answer: Answer | Refused | Abandoned = await self.batcher.submit(request)
        except (Refused, Abandoned) as unanswered:
            answer = unanswered
        if self.observe is not None:
            self.observe(time.perf_counter() - began)
        if isinstance(answer, Abandoned):
            if self.abandoned is not None:
                self.abandoned()
            return None
        if isinstance(answer, Refused):
            if self.refused is not None:
                self.refused(503)
            message = f"model {name!r} {answer.reason}; retry later"
            retry = {"content-type": _JSON.decode(), "retry-after": str(RETRY_AFTER_SECONDS)}
            return Answer(503, _error(message), retry)
        passed = {name: str(value) for key, value in answer.headers.items() if (name := key.lower()) in _PASSED}
        return Answer(answer.status, answer.body, passed)

    def _too_big(self, declared: str) -> bool:
        """Whether a declared ``Content-Length`` is over the limit."""
        return declared.isascii() and declared.isdigit() and int(declared) > self.max_body

    async def _read_body(self, declared: str, receive: Receive) -> bytes | int | None:
        """The whole body, or its size when it is over the limit (read and dropped: a client still sending
        would otherwise see a reset instead of the 413), or None when the caller left first."""
        too_big = self._too_big(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if not too_big and size <= self.max_body:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if too_big:
            return int(declared)
        if size > self.max_body:
            return size
        return b"".join(chunks)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    pairs = headers or []
    if not any(key == b"content-type" for key, _ in pairs):
        pairs = [(b"content-type", _JSON), *pairs]
    pairs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": body})


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers with lower-case names (the last of repeated ones)."""
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}


def over_unix_socket(scope: Mapping[str, Any]) -> bool:
    """Whether the request came on the server's Unix socket (ASGI's ``server`` is ``[path, None]`` there), which
    only the server's user may connect to: ``esteira up``'s router. Only there are joined requests read; a
    caller's ``JOINED_HEADER`` on the port is dropped."""
    server = scope.get("server")
    return server is not None and len(server) == 2 and server[1] is None
