"""The model server's front before a TorchServe stand-in: inference and TorchServe's own paths go through the
upstream client whole (chunked answers too), TorchServe's errors become ``{"error": ...}`` on a connection that
is kept, and readiness follows the management API's workers."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web

from esteira.local.server import free_port
from esteira.packaging.front import FrontThread, TorchServeSurface, front_routes
from esteira.packaging.httpserver import HttpServer
from esteira.packaging.surface import served_model
from tests.support.prerequisites import require_file

MODEL_DIR = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"


class TorchServeStandIn:
    """Inference and management endpoints; ``workers`` is what the management API reports."""

    def __init__(self) -> None:
        self.workers = "READY"
        self.client_ports: list[int] = []

    async def predict(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else -1)
        if (await request.json()).get("fail"):
            return web.json_response(
                {"code": 503, "type": "ServiceUnavailableException", "message": "busy"}, status=503
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"predictions": ')
        await response.write(b'["setosa"]}')
        await response.write_eof()
        return response

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy", "query": request.query_string})

    async def describe(self, _: web.Request) -> web.Response:
        return web.json_response([{"modelName": "iris", "workers": [{"status": self.workers}]}])


@asynccontextmanager
async def front() -> AsyncIterator[tuple[str, TorchServeStandIn]]:
    stand_in = TorchServeStandIn()
    backend = web.Application()
    backend.router.add_post("/v1/models/iris:predict", stand_in.predict)
    backend.router.add_route("*", "/ping", stand_in.ping)
    backend.router.add_get("/models/iris", stand_in.describe)
    backend_runner = web.AppRunner(backend, access_log=None)
    await backend_runner.setup()
    port = free_port()
    await web.TCPSite(backend_runner, "127.0.0.1", port).start()
    address = f"http://127.0.0.1:{port}"
    surface = TorchServeSurface(served_model(MODEL_DIR), "1.0.0", address, address)
    server = HttpServer(front_routes(surface))
    front_port = free_port()
    await server.start("127.0.0.1", front_port)
    try:
        yield f"http://127.0.0.1:{front_port}", stand_in
    finally:
        await server.stop()
        surface.close()
        await backend_runner.cleanup()


def test_the_front_relays_inference_and_torchserve_paths_whole_on_kept_connections() -> None:
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")

    async def scenario() -> None:
        async with front() as (url, stand_in), aiohttp.ClientSession() as session:
            for body, status, expected in (
                ({"instances": [[1, 2, 3, 4]]}, 200, {"predictions": ["setosa"]}),
                ({"fail": True}, 503, {"error": "busy"}),
                ({"instances": [[1, 2, 3, 4]]}, 200, {"predictions": ["setosa"]}),
            ):
                async with session.post(f"{url}/v1/models/iris:predict", json=body) as answer:
                    assert (answer.status, await answer.json()) == (status, expected)
            assert len(stand_in.client_ports) == 3 and len(set(stand_in.client_ports)) == 1, stand_in.client_ports
            async with session.get(f"{url}/ping?probe=1") as answer:
                assert (answer.status, await answer.json()) == (200, {"status": "Healthy", "query": "probe=1"})
            async with session.head(f"{url}/ping") as answer:
                assert answer.status == 200 and await answer.read() == b""
            async with session.get(f"{url}/v2/models/iris/ready") as answer:
                assert (answer.status, await answer.json()) == (200, {"name": "iris", "ready": True})
            stand_in.workers = "UNLOADING"
            async with session.get(f"{url}/v2/models/iris/ready") as answer:
                assert answer.status == 503 and "no ready worker" in json.loads(await answer.read())["error"]

    uvloop.run(scenario())


def test_the_front_thread_answers_then_stops_and_frees_its_port() -> None:
    """The entrypoint's front runs on its own loop in a thread: it answers there, and `stop` ends the thread,
    closes the listening socket and the connections to TorchServe."""
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")
    dead = f"http://127.0.0.1:{free_port()}"
    surface = TorchServeSurface(served_model(MODEL_DIR), "1.0.0", dead, dead)
    port = free_port()
    front = FrontThread(surface, "127.0.0.1", port).start()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models") as answer:
        assert json.loads(answer.read()) == {"models": ["iris"]}
    front.stop()
    assert not front._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert surface.inference._closed and surface.management._closed
