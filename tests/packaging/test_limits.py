"""Slow and abusive clients against Esteira's HTTP server: deadlines, a cap, size limits, one log line each."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from esteira.local.server import free_port
from esteira.packaging.httpserver import ClientLimits, HttpServer, Request, Response, Routes, json_response
from tests.support.waiting import eventually

LIMITS = ClientLimits(header_seconds=0.6, body_seconds=0.6, idle_seconds=5.0, max_connections=4)


MAX_BODY = 4096


async def _echo(request: Request) -> Response:
    return json_response({"size": len(request.body)})


class Served:
    """A guarded echo server on a loopback port, in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.server: HttpServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        routes = Routes()
        routes.add("POST", "/echo", _echo)
        routes.add("GET", "/echo", _echo)
        self.server = HttpServer(routes, LIMITS, max_body=MAX_BODY)
        self.port = free_port()
        await self.server.start("127.0.0.1", self.port)

    def __enter__(self) -> Served:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def served() -> Iterator[Served]:
    with Served() as server:
        yield server


class Peer:
    """A raw client connection that collects what the server sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.settimeout(0.05)
        self.received = b""
        self.closed = False

    def send(self, data: bytes) -> Peer:
        self.sock.sendall(data)
        return self

    def _pull(self) -> None:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return
            except ConnectionResetError:
                chunk = b""
            self.received += chunk
            self.closed = not chunk

    def closed_after(self) -> bytes | None:
        """Everything the server sent, once it has closed the connection (b"closed" if nothing)."""
        self._pull()
        return (self.received or b"closed") if self.closed else None

    def answer(self) -> bytes | None:
        """A complete response head, once one has arrived."""
        self._pull()
        return self.received if b"\r\n\r\n" in self.received else None


def test_a_request_head_that_never_finishes_is_closed(served: Served) -> None:
    slow = Peer(served.port).send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    assert eventually(slow.closed_after, 10, "the slow connection closed by the server") == b"closed"
    answered = Peer(served.port).send(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b" 200 OK" in eventually(answered.closed_after, 10, "an ordinary request answered")


def test_a_body_that_never_arrives_is_a_408(served: Served) -> None:
    slow = Peer(served.port).send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    answer = eventually(slow.answer, 10, "the slow body answered")
    assert answer.split(b"\r\n")[0].endswith(b"408 Request Timeout"), answer[:200]


def test_connections_beyond_the_cap_get_a_503(served: Served) -> None:
    held = [Peer(served.port) for _ in range(LIMITS.max_connections)]
    for peer in held:  # each has begun a request, so all are open at once
        peer.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    answer = eventually(Peer(served.port).closed_after, 10, "the extra connection refused")
    assert answer.startswith(b"HTTP/1.1 503")
    assert "too many connections" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    for peer in held:
        peer.sock.close()


def test_a_url_over_8_kb_is_a_400_and_one_log_line(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    peer = Peer(served.port).send(b"GET /echo?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = eventually(peer.answer, 10, "the long URL answered")
    assert answer.split(b"\r\n")[0].endswith(b"400 Bad Request")
    records = eventually(
        lambda: [r for r in caplog.records if "malformed request" in r.getMessage()], 10, "the refusal logged"
    )
    assert len(records) == 1 and records[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's malformed request"


def test_the_front_answers_a_dead_torchserve_with_a_502_that_names_no_address() -> None:
    from pathlib import Path

    import aiohttp

    from esteira.packaging.front import TorchServeSurface, front_routes
    from esteira.packaging.surface import served_model
    from tests.support.prerequisites import require_file

    folder = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
    require_file(folder / "config" / "config.properties", "run `make models`")
    dead = free_port()
    nowhere = f"http://127.0.0.1:{dead}"
    surface = TorchServeSurface(served_model(folder), "1.0.0", nowhere, nowhere, nowhere)

    async def scenario() -> tuple[int, str]:
        server = HttpServer(front_routes(surface), LIMITS)
        port = free_port()
        await server.start("127.0.0.1", port)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{port}/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]}
                ) as answer,
            ):
                return answer.status, await answer.text()
        finally:
            await server.stop()
            surface.close()

    status, text = asyncio.run(scenario())
    assert status == 502 and "did not answer" in json.loads(text)["error"]
    assert str(dead) not in text and "127.0.0.1" not in text


def _status(answer: bytes) -> bytes:
    return answer.split(b"\r\n")[0]


def test_a_body_over_the_limit_is_a_413_whether_declared_or_chunked(served: Served) -> None:
    declared = Peer(served.port).send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    answer = eventually(declared.closed_after, 10, "the declared oversize body refused")
    assert _status(answer).endswith(b"413 Request Entity Too Large") and b"exceeded the limit of 4096" in answer
    chunk = b"a" * 1000
    chunked = Peer(served.port).send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        chunked.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    answer = eventually(chunked.closed_after, 10, "the chunked oversize body refused")
    assert _status(answer).endswith(b"413 Request Entity Too Large"), answer[:200]


def test_pipelined_requests_are_answered_in_order_and_a_chunked_body_whole(served: Served) -> None:
    peer = Peer(served.port).send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n2\r\n!!\r\n0\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = eventually(peer.closed_after, 10, "three answers, then the close asked for")
    bodies = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0]) for part in answer.split(b"HTTP/1.1 ")[1:]
    ]
    assert bodies == [{"size": 3}, {"size": 7}, {"size": 0}]
    assert answer.count(b"Connection: close") == 1


@pytest.mark.parametrize(
    ("second", "refusal"),
    [
        (b"GARBAGE\r\n\r\n", b"400 Bad Request"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), b"413 Request Entity"),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (MAX_BODY + 10, b"x" * (MAX_BODY + 10)),
            b"413 Request Entity",
        ),
    ],
    ids=["malformed", "declared too large", "sent too large"],
)
def test_a_pipelined_request_refused_is_answered_after_the_requests_before_it(
    served: Served, second: bytes, refusal: bytes
) -> None:
    """Written at once, the refusal reached the first request's caller as its answer, and the close that follows
    it lost the real one."""
    peer = Peer(served.port).send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + second)
    answer = eventually(peer.closed_after, 10, "both answered, then the connection closed")
    first, _, rest = answer.partition(b"HTTP/1.1 " + refusal)
    assert _status(first).endswith(b"200 OK") and first.endswith(b'{"size": 3}'), answer[:300]
    assert rest and b"Connection: close" in rest and b"Connection: close" not in first, answer[:300]


def test_expect_100_continue_head_and_wrong_methods(served: Served) -> None:
    peer = Peer(served.port).send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    assert eventually(peer.answer, 10, "the interim answer").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    peer.send(b"abcd")
    assert eventually(lambda: b'{"size": 4}' in (peer.answer() or b"") or None, 10, "the final answer")
    head = Peer(served.port).send(b"HEAD /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = eventually(head.closed_after, 10, "the HEAD answer")
    assert _status(answer).endswith(b"200 OK") and answer.endswith(b"\r\n\r\n")  # the head only
    wrong = Peer(served.port).send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    answer = eventually(wrong.closed_after, 10, "the wrong method answered")
    assert _status(answer).endswith(b"405 Method Not Allowed")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "PUT is not allowed on /echo; use GET, HEAD, POST"}


def test_stopping_lets_a_request_being_answered_finish() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(_: Request) -> Response:
        entered.set()
        await release.wait()
        return json_response({"done": True})

    async def scenario() -> tuple[bytes, bool]:
        routes = Routes()
        routes.add("GET", "/slow", slow)
        server = HttpServer(routes, LIMITS)
        port = free_port()
        await server.start("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await entered.wait()
        stopping = asyncio.create_task(server.stop(within=10))
        await asyncio.sleep(0)
        refused = False
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            refused = True  # no longer listening
        release.set()
        answer = await reader.read()  # to the close
        await stopping
        return answer, refused

    answer, refused = asyncio.run(scenario())
    assert _status(answer).endswith(b"200 OK") and answer.endswith(b'{"done": true}') and b"Connection: close" in answer
    assert refused


def test_a_routes_own_body_cap_is_checked_before_the_body_is_read() -> None:
    """A route with a smaller cap than the server's refuses a declared body over it at once, and only that route."""

    async def scenario() -> list[bytes]:
        routes = Routes()
        routes.add("POST", "/small", _echo, max_body=10)
        routes.add("POST", "/echo", _echo)
        server = HttpServer(routes, LIMITS, max_body=MAX_BODY, body_limit=routes.body_limit)
        port = free_port()
        await server.start("127.0.0.1", port)
        answers = []
        for path, size in (("/small", 11), ("/small", 10), ("/echo", 11)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode())  # the head only: a cap checked before the body needs no body to answer
            if path != "/small" or size <= 10:
                writer.write(b"a" * size)
            answers.append(await reader.read())
            writer.close()
        await server.stop()
        return answers

    refused, small, large = asyncio.run(scenario())
    assert _status(refused).endswith(b"413 Request Entity Too Large") and b"exceeded the limit of 10" in refused
    assert _status(small).endswith(b"200 OK") and small.endswith(b'{"size": 10}')
    assert _status(large).endswith(b"200 OK") and large.endswith(b'{"size": 11}')


def test_a_caller_that_leaves_stops_its_inference_but_lets_other_requests_finish() -> None:
    """A request whose answer is worth nothing once its caller has gone (the server's ``abandon``: inference) has
    its handler cancelled when the connection closes, so the hop behind it closes too and the model server can
    leave the request out; any other request runs to its end."""
    paths = ("/infer", "/other")
    entered, ended = {path: asyncio.Event() for path in paths}, {path: asyncio.Event() for path in paths}
    release = asyncio.Event()
    outcomes: dict[str, str] = {}

    async def held(request: Request) -> Response:
        entered[request.path].set()
        try:
            await release.wait()
            outcomes[request.path] = "finished"
        except asyncio.CancelledError:
            outcomes[request.path] = "cancelled"
            raise
        finally:
            ended[request.path].set()
        return json_response({})

    async def scenario() -> None:
        routes = Routes()
        for path in paths:
            routes.add("POST", path, held)
        server = HttpServer(routes, LIMITS, abandon=lambda request: request.path == "/infer")
        port = free_port()
        await server.start("127.0.0.1", port)
        for path in paths:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            await entered[path].wait()
            writer.close()
        await asyncio.wait_for(ended["/infer"].wait(), 5)
        assert outcomes == {"/infer": "cancelled"}  # the other is still held
        release.set()
        await asyncio.wait_for(ended["/other"].wait(), 5)
        await server.stop()

    asyncio.run(scenario())
    assert outcomes == {"/infer": "cancelled", "/other": "finished"}
