"""Slow and abusive clients against a server that listens through GuardedRunner: deadlines, a cap, one log line."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from esteira.local.server import free_port
from esteira.packaging.limits import ClientLimits, GuardedRunner, read_body
from tests.support.waiting import eventually

LIMITS = ClientLimits(header_seconds=0.6, body_seconds=0.6, idle_seconds=5.0, max_connections=4)


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"size": len(await read_body(request, LIMITS))})


class Served:
    """A guarded echo server on a loopback port, in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.runner: GuardedRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/echo", _echo)
        app.router.add_get("/echo", _echo)
        self.runner = GuardedRunner(app, LIMITS, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> Served:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
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

    from esteira.packaging.front import TorchServeSurface, front_app
    from esteira.packaging.surface import served_model
    from tests.support.prerequisites import require_file

    folder = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
    require_file(folder / "config" / "config.properties", "run `make models`")
    dead = free_port()
    surface = TorchServeSurface(served_model(folder), "1.0.0", f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{dead}")

    async def scenario() -> tuple[int, str]:
        runner = GuardedRunner(front_app(surface), LIMITS, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{port}/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]}
                ) as answer,
            ):
                return answer.status, await answer.text()
        finally:
            await runner.cleanup()

    status, text = asyncio.run(scenario())
    assert status == 502 and "did not answer" in json.loads(text)["error"]
    assert str(dead) not in text and "127.0.0.1" not in text
