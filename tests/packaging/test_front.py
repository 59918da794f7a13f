"""The model server's front before a TorchServe stand-in: inference and TorchServe's own paths go through the
upstream client whole (chunked answers too), TorchServe's errors become ``{"error": ...}`` on a connection that
is kept, readiness follows the management API's workers, and the errors TorchServe answers itself are counted
among TorchServe's metrics."""

from __future__ import annotations

import asyncio
import functools
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
from prometheus_client.parser import text_string_to_metric_families

from esteira.local.server import free_port
from esteira.packaging.admission import Admission
from esteira.packaging.front import FrontThread, TorchServeSurface, front_server, metrics_routes
from esteira.packaging.httpserver import HttpServer, Request
from esteira.packaging.surface import served_model
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER
from model_handlers.joined import JOINED_HEADER
from tests.support.prerequisites import require_file
from tests.support.stand_ins import held_until_cancelled
from tests.support.waiting import eventually

MODEL_DIR = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"


class TorchServeStandIn:
    """Inference and management endpoints; ``workers`` is what the management API reports."""

    def __init__(self) -> None:
        self.workers = "READY"
        self.client_ports: list[int] = []
        self.joined_headers: list[str | None] = []  # what each inference request said it joins
        self.expects: list[str | None] = []  # what each asked for before sending its body
        self.parameter_headers: list[tuple[str | None, str | None]] = []  # headers named as TorchServe's parameters
        self.held, self.closed = asyncio.Event(), asyncio.Event()  # a "watch" request came; its connection closed

    async def predict(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else -1)
        self.joined_headers.append(request.headers.get(JOINED_HEADER))
        self.expects.append(request.headers.get("Expect"))
        self.parameter_headers.append((request.headers.get("Body"), request.headers.get("Data")))
        fail = (await request.json()).get("fail")
        if fail == "watch":  # held until the connection it came on closes
            await held_until_cancelled(self.held, self.closed)
        if fail == "handler":  # the handler's own error, which it counts itself
            return web.json_response({"error": "the model failed"}, status=500)
        if fail:  # TorchServe's own, which the handler never sees
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

    async def metrics(self, request: web.Request) -> web.Response:
        """TorchServe's exposition as its frontend writes it, the handler's series among others; ``name[]``
        filters by family, as TorchServe's does."""
        families = {
            "ts_inference_requests_total": [
                "# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count",
                "# TYPE ts_inference_requests_total counter",
                'ts_inference_requests_total{model_name="iris",model_version="default",hostname="vm",} 7.0',
            ],
            "esteira_requests_total": [
                "# HELP esteira_requests_total Torchserve prometheus counter metric with unit: count",
                "# TYPE esteira_requests_total counter",
                'esteira_requests_total{ModelName="iris",Revision="unknown",outcome="ok",Hostname="vm",} 2.0',
                'esteira_requests_total{ModelName="iris",Revision="unknown",outcome="server_error",Hostname="vm",} 1.0',
            ],
        }
        names = request.query.getall("name[]", list(families))
        lines = [line for name in names for line in families.get(name, [])]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@asynccontextmanager
async def front(admission: Admission | None = None) -> AsyncIterator[tuple[str, TorchServeStandIn, str]]:
    """The front's inference URL, the stand-in behind it, and the front's metrics URL."""
    stand_in = TorchServeStandIn()
    backend = web.Application()
    backend.router.add_post("/v1/models/iris:predict", stand_in.predict)
    backend.router.add_post("/predictions/{model}", stand_in.predict)
    backend.router.add_post("/predictions/{model}/{version}", stand_in.predict)
    backend.router.add_route("*", "/ping", stand_in.ping)
    backend.router.add_get("/models/iris", stand_in.describe)
    backend.router.add_get("/metrics", stand_in.metrics)
    backend_runner = web.AppRunner(backend, access_log=None, handler_cancellation=True)
    await backend_runner.setup()
    port = free_port()
    await web.TCPSite(backend_runner, "127.0.0.1", port).start()
    address = f"http://127.0.0.1:{port}"
    surface = TorchServeSurface(served_model(MODEL_DIR), "1.0.0", address, address, address, admission)
    server, scrapes = front_server(surface), HttpServer(metrics_routes(surface))
    front_port, metrics_port = free_port(), free_port()
    await server.start("127.0.0.1", front_port)
    await scrapes.start("127.0.0.1", metrics_port)
    try:
        yield f"http://127.0.0.1:{front_port}", stand_in, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        await server.stop()
        await scrapes.stop()
        surface.close()
        await backend_runner.cleanup()


def test_the_front_relays_inference_and_torchserve_paths_whole_on_kept_connections() -> None:
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")

    async def scenario() -> None:
        async with front() as (url, stand_in, _), aiohttp.ClientSession() as session:
            for body, status, expected in (
                ({"instances": [[1, 2, 3, 4]]}, 200, {"predictions": ["setosa"]}),
                ({"fail": True}, 503, {"error": "busy"}),
                ({"instances": [[1, 2, 3, 4]]}, 200, {"predictions": ["setosa"]}),
            ):
                async with session.post(f"{url}/v1/models/iris:predict", json=body) as answer:
                    assert (answer.status, await answer.json()) == (status, expected)
            assert len(stand_in.client_ports) == 3 and len(set(stand_in.client_ports)) == 1, stand_in.client_ports
            # Only the front joins requests: a caller's say-so does not reach TorchServe's own path either.
            async with session.post(
                f"{url}/predictions/iris",
                json={"instances": [[1, 2, 3, 4]]},
                headers={JOINED_HEADER: "2", "Body": "x", "Data": "y"},
            ) as answer:
                assert answer.status == 200
            assert stand_in.joined_headers == [None] * 4
            assert stand_in.parameter_headers == [(None, None)] * 4, "they would replace the request's parameters"
            # A caller's Expect: 100-continue is for its hop: TorchServe would answer it with a 100 first.
            for _ in range(2):
                async with session.post(
                    f"{url}/predictions/iris", json={"instances": [[1, 2, 3, 4]]}, expect100=True
                ) as answer:
                    assert (answer.status, await answer.json()) == (200, {"predictions": ["setosa"]})
            assert stand_in.expects == [None] * 6
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


def requests_by_origin(exposition: str) -> dict[tuple[str, str], float]:
    """``esteira_requests_total`` by (who answered, outcome), parsed as Prometheus parses a scrape."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "esteira_requests_total":
                labels = sample.labels
                assert (labels["ModelName"], labels["Revision"]) == ("iris", "unknown"), labels
                key = (labels.get("answered_by", "handler"), labels["outcome"])
                assert key not in counts, f"two series for {key}"
                counts[key] = sample.value
    return counts


def test_errors_torchserve_answers_itself_are_counted_beside_the_handler_s_series() -> None:
    """The handler's own error is its to count; TorchServe's is the front's, in the same family, on the scrape
    that carries TorchServe's metrics, with every request's duration; a scrape for other families gets none of
    it."""
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")

    async def scenario() -> None:
        async with front() as (url, _, metrics), aiohttp.ClientSession() as session:
            async with session.get(metrics) as answer:
                assert answer.status == 200 and answer.content_type == "text/plain"
                before = requests_by_origin(await answer.text())
            assert before == {
                ("handler", "ok"): 2,
                ("handler", "server_error"): 1,
                ("server", "client_error"): 0,
                ("server", "server_error"): 0,
            }
            for fail, status in (("torchserve", 503), ("handler", 500), ("torchserve", 503), (None, 200)):
                async with session.post(f"{url}/v1/models/iris:predict", json={"fail": fail}) as answer:
                    assert answer.status == status and (status == 200 or "error" in await answer.json())
            async with session.post(f"{url}/v2/models/iris/infer", json={"fail": "torchserve"}) as answer:
                assert answer.status == 404  # the stand-in has no v2 route: its aiohttp 404 is not the handler's
            # TorchServe's own inference path runs the handler too: any version of this model, not another model.
            for path, fail, status in (
                ("/predictions/iris", "torchserve", 503),
                ("/predictions/iris/1.0.0", "handler", 500),
                ("/predictions/iris", None, 200),
                ("/predictions/other", "torchserve", 503),
                ("/predictions/iris-2", "torchserve", 503),
            ):
                async with session.post(f"{url}{path}", json={"fail": fail}) as answer:
                    assert answer.status == status, path
            async with session.get(metrics) as answer:
                exposition = await answer.text()
            assert requests_by_origin(exposition) == before | {
                ("server", "server_error"): 3,
                ("server", "client_error"): 1,
            }
            timed = [
                sample.value
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
                if sample.name == "esteira_server_request_duration_seconds_count"
            ]
            assert timed == [8]  # every inference request to this model, whoever answered it
            async with session.get(metrics, params={"name[]": "ts_inference_requests_total"}) as answer:
                filtered = await answer.text()
            assert "ts_inference_requests_total{" in filtered and "esteira_requests_total" not in filtered

    uvloop.run(scenario())


def test_a_caller_that_leaves_ends_its_request_to_torchserve_and_is_timed_not_counted_as_an_error() -> None:
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")

    async def scenario() -> None:
        async with front() as (url, stand_in, metrics), aiohttp.ClientSession() as session:
            port = int(url.rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            body = json.dumps({"fail": "watch"}).encode()
            head = "POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await asyncio.wait_for(stand_in.held.wait(), 10)
            writer.close()
            await asyncio.wait_for(stand_in.closed.wait(), 10)
            async with session.get(metrics) as answer:
                exposition = await answer.text()
            assert requests_by_origin(exposition)[("server", "server_error")] == 0
            timed = [
                sample.value
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
                if sample.name == "esteira_server_request_duration_seconds_count"
            ]
            assert timed == [1]

    uvloop.run(scenario())


def test_past_its_admission_the_front_holds_requests_drops_those_whose_callers_leave_and_refuses_late_ones() -> None:
    """One request at TorchServe at once, its caller's proxy saying it waits a minute: while it is held, a second
    waits in the front and its caller leaves (it never reaches TorchServe), a third says its proxy waits 1 ms; once the first's caller leaves too, the
    third's deadline has passed and it gets the front's 503 with Retry-After, counted as the server's error, and
    a fourth goes through."""
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")
    admission = Admission(1)

    async def post(session: aiohttp.ClientSession, url: str, body: object, **options: object) -> aiohttp.ClientResponse:
        async with session.post(f"{url}/v1/models/iris:predict", json=body, **options) as answer:  # type: ignore[arg-type]
            await answer.read()
            return answer

    async def scenario() -> None:
        async with front(admission) as (url, stand_in, metrics), aiohttp.ClientSession() as session:
            patient = {EXPECTED_TIMEOUT_HEADER: "60000"}  # a deadline said: the limit holds
            held = asyncio.ensure_future(post(session, url, {"fail": "watch"}, headers=patient))
            await asyncio.wait_for(stand_in.held.wait(), 10)
            with pytest.raises(asyncio.TimeoutError):
                await post(session, url, {"instances": [[1, 2, 3, 4]]}, timeout=aiohttp.ClientTimeout(total=0.2))
            hurried = asyncio.ensure_future(
                post(session, url, {"instances": [[1, 2, 3, 4]]}, headers={EXPECTED_TIMEOUT_HEADER: "1"})
            )
            both_waiting = functools.partial(
                eventually, lambda: admission.abandoned == 1 and admission.waiting == 2, 10, "both waiting"
            )
            await asyncio.get_running_loop().run_in_executor(None, both_waiting)
            held.cancel()
            await asyncio.wait_for(stand_in.closed.wait(), 10)
            refused = await asyncio.wait_for(hurried, 10)
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            assert (await post(session, url, {"instances": [[1, 2, 3, 4]]})).status == 200
            assert len(stand_in.client_ports) == 2  # the held request and the last: neither waiter reached it
            assert admission.late == 1 and admission.through == 0
            async with session.get(metrics) as answer:
                exposition = await answer.text()
            assert requests_by_origin(exposition)[("server", "server_error")] == 1
            dropped = [
                (sample.labels["ModelName"], sample.value)
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
                if sample.name == "esteira_abandoned_requests_total"
            ]
            assert dropped == [("iris", 1.0)]

    uvloop.run(scenario())


def test_torchserve_not_answering_is_a_502_the_front_counts() -> None:
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")
    dead = f"http://127.0.0.1:{free_port()}"
    surface = TorchServeSurface(served_model(MODEL_DIR), "1.0.0", dead, dead, dead)

    async def scenario() -> None:
        request = Request("POST", "/v1/models/iris:predict", "", {}, b"{}", params={"model": "iris"})
        answer = await surface.infer(request, "v1", None)
        assert answer.status == 502 and "did not answer" in json.loads(answer.body)["error"]
        scrape = await surface.scrape(Request("GET", "/metrics", "", {}, b"", target="/metrics"))
        assert scrape.status == 502 and "metrics did not answer" in json.loads(scrape.body)["error"]
        assert any(line.endswith(" 1.0") and 'outcome="server_error"' in line for line in surface.answers.samples())
        surface.close()

    uvloop.run(scenario())


def test_the_front_thread_answers_then_stops_and_frees_its_port() -> None:
    """The entrypoint's front runs on its own loop in a thread: it answers there, and `stop` ends the thread,
    closes the listening socket and the connections to TorchServe."""
    require_file(MODEL_DIR / "config" / "config.properties", "run `make models`")
    dead = f"http://127.0.0.1:{free_port()}"
    surface = TorchServeSurface(served_model(MODEL_DIR), "1.0.0", dead, dead, dead)
    port = free_port()
    front = FrontThread(surface, "127.0.0.1", port).start()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models") as answer:
        assert json.loads(answer.read()) == {"models": ["iris"]}
    front.stop()
    assert not front._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert surface.inference._closed and surface.management._closed
