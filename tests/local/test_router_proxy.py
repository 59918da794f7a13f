"""The local router as a proxy: what a backend answers reaches the caller whole (sized or chunked), errors become
``{"error": ...}``, and one keep-alive connection to the backend carries request after request, errors included."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
import uvloop
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from esteira.local.router import Router
from esteira.local.server import free_port
from esteira.local.split import Split
from esteira.packaging.joiner import Joining
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER, REQUEST_ID_HEADER, REVISION_HEADER
from model_handlers.joined import JOINED_HEADER, answer_entry, frame, unframe
from model_handlers.protocol import BINARY_HEADER
from tests.support.stand_ins import held_until_cancelled
from tests.support.waiting import eventually

PREDICT = "/v1/models/iris:predict"
LABELS = 'ModelName="iris",Revision="1",Hostname="here"'
TORCHSERVE_METRICS = f"""# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{{model_name="iris",model_version="default",hostname="here"}} 4.0
# HELP esteira_requests_total Requests by outcome
# TYPE esteira_requests_total counter
esteira_requests_total{{{LABELS},outcome="ok"}} 2.0
"""


class Backend:
    """A model server stand-in: answers by the request's ``answer`` field and notes each caller's port."""

    def __init__(self) -> None:
        self.client_ports: list[int] = []
        self.request_ids: list[str | None] = []
        self.expected_timeouts: list[str | None] = []  # how long the router said it waits, as Envoy says it
        self.held = asyncio.Event()  # a "held" request has arrived
        self.release = asyncio.Event()  # ... and may be answered
        self.closed = asyncio.Event()  # the connection a "watched" request came on was closed
        self.joined: list[int] = []  # each request's count of requests joined in it (0: not joined)
        self.address = ""  # where it listens, http://HOST:PORT
        self.scrapes: list[str] = []  # each scrape's query string

    async def metrics(self, request: web.Request) -> web.Response:
        """TorchServe's metrics port: its own series and the handler's."""
        self.scrapes.append(request.query_string)
        return web.Response(text=TORCHSERVE_METRICS, content_type="text/plain")

    async def predict(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else -1)
        self.request_ids.append(request.headers.get(REQUEST_ID_HEADER))
        self.expected_timeouts.append(request.headers.get(EXPECTED_TIMEOUT_HEADER))
        if JOINED_HEADER in request.headers:  # as Esteira's handler answers requests joined in one
            self.joined.append(int(request.headers[JOINED_HEADER]))
            entries = unframe(await request.read(), int(request.headers[JOINED_HEADER]))
            answers = [json.loads(entry.body)["answer"] for entry in entries]
            framed = frame(
                answer_entry(200, {"content-type": "application/json"}, json.dumps({"predictions": [answer]}).encode())
                for answer in answers
            )
            return web.Response(body=framed, headers={JOINED_HEADER: str(len(answers))})
        self.joined.append(0)
        kind = (await request.json())["answer"]
        if kind == "held":
            self.held.set()
            await self.release.wait()
        if kind == "watched":  # held until the connection it came on closes
            await held_until_cancelled(self.held, self.closed)
        if kind == "error":
            return web.json_response({"code": 500, "type": "InternalServerException", "message": "boom"}, status=500)
        if kind == "refused":  # esteira-kserve's refusal of a request it cannot answer in time
            return web.json_response({"error": "too late"}, status=503, headers={"Retry-After": "1"})
        if kind == "chunked":
            response = web.StreamResponse(headers={"Content-Type": "application/json", BINARY_HEADER: "7"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in (b'{"predictions": ', b'["a", ', b'"b"]}'):
                await response.write(piece)
            await response.write_eof()
            return response
        return web.json_response({"predictions": ["sized"]})


@asynccontextmanager
async def proxied(at_once: int | None = None, joining: Joining | None = None) -> AsyncIterator[tuple[Router, Backend]]:
    backend = Backend()
    app = web.Application()
    app.router.add_post(PREDICT, backend.predict)
    app.router.add_get("/metrics", backend.metrics)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    backend.address = f"http://127.0.0.1:{port}"
    router = Router("iris", free_port())
    router.set_backend(1, f"http://127.0.0.1:{port}", at_once, joining)
    router.set_split(Split(1), False)
    await router.start()
    try:
        yield router, backend
    finally:
        await router.stop()
        await runner.cleanup()


async def _ask(
    session: aiohttp.ClientSession, router: Router, kind: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{router.port}{PREDICT}"
    headers = {REQUEST_ID_HEADER: f"id-{kind}", **(headers or {})}
    async with session.post(url, json={"answer": kind}, headers=headers) as answer:
        return answer.status, dict(answer.headers), await answer.read()


def test_answers_reach_the_caller_whole_and_one_backend_connection_carries_them_all() -> None:
    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            status, headers, body = await _ask(session, router, "chunked")
            assert status == 200 and json.loads(body) == {"predictions": ["a", "b"]}
            assert headers["Content-Length"] == str(len(body)) and headers[BINARY_HEADER] == "7"
            assert headers["Content-Type"] == "application/json" and headers[REVISION_HEADER] == "1"
            status, _, body = await _ask(session, router, "error")
            assert (status, json.loads(body)) == (500, {"error": "boom"})
            status, _, body = await _ask(session, router, "sized")
            assert (status, json.loads(body)) == (200, {"predictions": ["sized"]})
            assert len(backend.client_ports) == 3 and len(set(backend.client_ports)) == 1, backend.client_ports
            assert backend.request_ids == ["id-chunked", "id-error", "id-sized"]
            counts = router.arm(1).outcomes
            assert (counts["ok"], counts["server_error"]) == (2, 1)

    uvloop.run(scenario())


def test_a_request_without_an_id_gets_one_that_its_server_and_its_caller_both_see() -> None:
    """The caller labels a request by its id; one the server made up for itself never reached the caller."""

    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{router.port}{PREDICT}"
            given = []
            for _ in range(2):
                async with session.post(url, json={"answer": "sized"}) as answer:
                    assert answer.status == 200
                    given.append(answer.headers[REQUEST_ID_HEADER])
            assert backend.request_ids == given and given[0] != given[1] and all(len(g) == 32 for g in given)
            _, headers, _ = await _ask(session, router, "sized")
            said = {name.lower(): value for name, value in headers.items()}
            assert said[REQUEST_ID_HEADER] == "id-sized" and backend.request_ids[-1] == "id-sized"

    asyncio.run(scenario())


def test_concurrent_requests_each_get_their_own_answer() -> None:
    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            kinds = ["chunked", "sized", "error"] * 20
            answers = await asyncio.gather(*(_ask(session, router, kind) for kind in kinds))
            expected = {"chunked": (200, b'{"predictions": ["a", "b"]}'), "error": (500, b'{"error": "boom"}')}
            for kind, (status, _, body) in zip(kinds, answers, strict=True):
                want = expected.get(kind, (200, b'{"predictions": ["sized"]}'))
                assert (status, json.loads(body)) == (want[0], json.loads(want[1])), kind
            opened = set(backend.client_ports)
            for _ in range(5):
                await _ask(session, router, "sized")
            assert set(backend.client_ports[len(kinds) :]) <= opened  # kept connections, not new ones

    asyncio.run(scenario())


def test_a_drain_ends_when_the_last_request_in_flight_is_answered() -> None:
    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            await asyncio.wait_for(router.drained(1), 1)  # nothing in flight: at once
            asked = asyncio.create_task(_ask(session, router, "held"))
            await asyncio.wait_for(backend.held.wait(), 10)
            drain = asyncio.create_task(router.drained(1))
            await asyncio.sleep(0)
            assert not drain.done(), "its request is still being answered"
            backend.release.set()
            await asyncio.wait_for(drain, 10)
            status, _, _ = await asked
            assert status == 200 and router.in_flight[1] == 0

    asyncio.run(scenario())


def test_a_caller_that_leaves_ends_its_request_to_the_model_server_and_the_next_caller_is_served() -> None:
    """The router closes its connection to the model server when the caller of a request in flight goes (a model
    server that watches its callers then leaves the request out), counts the request's wait as a 499, a client
    error (so a revision its callers leave still shows its latency), and serves on."""

    async def scenario() -> None:
        async with proxied() as (router, backend):
            _, writer = await asyncio.open_connection("127.0.0.1", router.port)
            body = json.dumps({"answer": "watched"}).encode()
            head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await asyncio.wait_for(backend.held.wait(), 10)
            assert router.in_flight[1] == 1
            writer.close()
            await asyncio.wait_for(backend.closed.wait(), 10)
            arm = router.arm(1)
            assert router.in_flight[1] == 0
            assert arm.outcomes["client_error"] == 1 and sum(arm.buckets) == 1  # its wait is counted, as a 499
            async with aiohttp.ClientSession() as session:
                status, _, body = await _ask(session, router, "sized")
            assert (status, json.loads(body)) == (200, {"predictions": ["sized"]})

    asyncio.run(scenario())


def test_with_a_timeout_the_router_says_it_and_answers_a_504_past_it_and_the_revision_serves_on() -> None:
    """The spec's timeoutSeconds: the model server is told what is left of it as Envoy tells it, a request past it
    is the revision's 504 (a server error, not retried elsewhere: it may have run), its connection to the model
    server closes, and the revision is still chosen for the next request. A deadline a proxy in front says is
    passed on the same way, the earlier of the two where both are set."""

    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            router.set_timeout(1)
            status, _, body = await _ask(session, router, "watched")
            assert status == 504 and "did not answer within timeoutSeconds" in json.loads(body)["error"]
            await asyncio.wait_for(backend.closed.wait(), 10)
            status, _, _ = await _ask(session, router, "sized")
            assert status == 200 and all(900 < int(said or 0) <= 1000 for said in backend.expected_timeouts)
            assert len(backend.expected_timeouts) == 2
            assert router.arm(1).outcomes["server_error"] == 1 and router.backends[1] is not None
            await _ask(session, router, "sized", {EXPECTED_TIMEOUT_HEADER: "5000"})  # the timeout is earlier
            assert 900 < int(backend.expected_timeouts[-1] or 0) <= 1000
            router.set_timeout(None)
            await _ask(session, router, "sized", {EXPECTED_TIMEOUT_HEADER: "250"})  # the proxy's alone
            assert 150 < int(backend.expected_timeouts[-1] or 0) <= 250
            await _ask(session, router, "sized", {EXPECTED_TIMEOUT_HEADER: "soon"})  # says nothing
            await _ask(session, router, "sized")
            assert backend.expected_timeouts[-2:] == [None, None]

    asyncio.run(scenario())


def test_a_model_server_s_refusal_reaches_the_caller_with_its_retry_after() -> None:
    async def scenario() -> None:
        async with proxied() as (router, _), aiohttp.ClientSession() as session:
            status, headers, body = await _ask(session, router, "refused")
            assert (status, headers["Retry-After"], json.loads(body)) == (503, "1", {"error": "too late"})

    asyncio.run(scenario())


def test_before_torchserve_the_router_holds_requests_past_two_batches_and_drops_one_whose_caller_leaves() -> None:
    """One request at the revision at once, the spec's timeout giving each a deadline (so the limit holds):
    while the first is held, a second waits in the router and its caller leaves; it never reaches the model
    server, counts as a 499 and as abandoned on /metrics; the first is answered, and a third goes through. A
    fourth whose caller leaves once it has reached the model server is a 499, not abandoned: it was sent."""

    async def scenario() -> None:
        async with proxied(at_once=1) as (router, backend), aiohttp.ClientSession() as session:
            router.set_timeout(60)
            held = asyncio.create_task(_ask(session, router, "held"))
            await asyncio.wait_for(backend.held.wait(), 10)
            url = f"http://127.0.0.1:{router.port}{PREDICT}"
            leaving = aiohttp.ClientTimeout(total=0.2)
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(url, json={"answer": "sized"}, timeout=leaving) as answer:
                    await answer.read()
            await asyncio.get_running_loop().run_in_executor(
                None, eventually, lambda: router.arm(1).outcomes["client_error"] == 1, 10, "the 499 counted"
            )
            backend.release.set()
            assert (await held)[0] == 200
            assert (await _ask(session, router, "sized"))[0] == 200
            assert len(backend.client_ports) == 2  # the one whose caller left never reached it
            _, writer = await asyncio.open_connection("127.0.0.1", router.port)
            body = json.dumps({"answer": "watched"}).encode()
            head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            backend.held.clear()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await asyncio.wait_for(backend.held.wait(), 10)
            writer.close()
            await asyncio.wait_for(backend.closed.wait(), 10)
            assert router.arm(1).outcomes["client_error"] == 2  # both departures are 499s; one was abandoned
            async with session.get(f"http://127.0.0.1:{router.port}/metrics") as answer:
                exposition = await answer.text()
            assert 'esteira_abandoned_requests_total{ModelName="iris",Revision="1"} 1' in exposition.splitlines()

    asyncio.run(scenario())


def test_before_torchserve_a_deadline_said_by_a_proxy_in_front_holds_requests_and_refuses_one_past_it() -> None:
    """No spec timeout: the first request's proxy says it waits a minute (so the limit holds) and the model
    server is told what is left of it; a second, whose proxy says 1 ms, waits in the router behind it and, once
    the first is answered, could not be answered in time: the router's 503 with Retry-After, and it never
    reaches the model server."""

    async def scenario() -> None:
        async with proxied(at_once=1) as (router, backend), aiohttp.ClientSession() as session:
            held = asyncio.ensure_future(_ask(session, router, "held", {EXPECTED_TIMEOUT_HEADER: "60000"}))
            await asyncio.wait_for(backend.held.wait(), 10)
            hurried = asyncio.ensure_future(_ask(session, router, "sized", {EXPECTED_TIMEOUT_HEADER: "1"}))
            both_in = functools.partial(eventually, lambda: router.in_flight.get(1) == 2, 10, "the second held")
            await asyncio.get_running_loop().run_in_executor(None, both_in)
            backend.release.set()
            assert (await held)[0] == 200
            status, headers, body = await asyncio.wait_for(hurried, 10)
            assert (status, headers["Retry-After"]) == (503, "1"), body
            assert "deadline" in json.loads(body)["error"]
            assert len(backend.client_ports) == 1  # the refused one never reached it
            assert 59_000 < int(backend.expected_timeouts[0] or 0) <= 60_000

    asyncio.run(scenario())


def test_before_a_torchserve_it_registered_unbatched_the_router_joins_requests_that_come_while_it_is_busy() -> None:
    """One request at the revision at once: while the first is held, four more wait in the router and one of
    their callers leaves; once the first is answered, the three left go as one request, each caller gets its own
    answer, and the one whose caller left is counted as abandoned and never sent."""

    async def scenario() -> None:
        joining = Joining(most=8, at_once=1, max_body=1 << 20)
        async with proxied(joining=joining) as (router, backend), aiohttp.ClientSession() as session:
            held = asyncio.create_task(_ask(session, router, "held"))
            await asyncio.wait_for(backend.held.wait(), 10)
            waiting = [asyncio.create_task(_ask(session, router, kind)) for kind in ("one", "two", "three")]
            url = f"http://127.0.0.1:{router.port}{PREDICT}"
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(url, json={"answer": "left"}, timeout=aiohttp.ClientTimeout(total=0.2)):
                    pass
            backend.release.set()
            assert (await held)[0] == 200
            answers = await asyncio.gather(*waiting)
            assert [(status, json.loads(body)) for status, _, body in answers] == [
                (200, {"predictions": [kind]}) for kind in ("one", "two", "three")
            ]
            assert all(headers[REVISION_HEADER] == "1" for _, headers, _ in answers)
            assert backend.joined == [0, 3]
            assert router.arm(1).outcomes["ok"] == 4
            async with session.get(f"http://127.0.0.1:{router.port}/metrics") as answer:
                exposition = await answer.text()
            assert 'esteira_abandoned_requests_total{ModelName="iris",Revision="1"} 1' in exposition.splitlines()

    asyncio.run(scenario())


def test_the_router_tells_the_joiner_which_connection_each_request_came_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The joiner knows a caller coming straight back by its connection: requests on one keep-alive connection
    carry the same caller, another connection's another, and none is unknown."""

    async def scenario() -> None:
        joining = Joining(most=8, at_once=8, max_body=1 << 20)
        async with proxied(joining=joining) as (router, _):
            joiner = router._joiners[1]
            callers: list[object] = []
            post = joiner.post

            async def recording(
                target: str, body: bytes, headers: dict[str, str], caller: object = None, due: float | None = None
            ) -> object:
                callers.append(caller)
                return await post(target, body, headers, caller, due)

            monkeypatch.setattr(joiner, "post", recording)
            async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
                for session in (first, first, second):
                    assert (await _ask(session, router, "sized"))[0] == 200
            assert None not in callers and callers[0] is callers[1] and callers[2] is not callers[0]

    asyncio.run(scenario())


def test_before_torchserve_the_router_counts_what_the_pod_s_front_counts_and_serves_it_with_its_metrics() -> None:
    """A pod's metrics port, served by the router for a TorchServe revision: TorchServe's series with each
    request's time in the server and the errors TorchServe answered itself (its ``{"code", "type", "message"}``
    body; the handler's ``{"error"}`` is the handler's to count), a request it left unanswered among them; a
    scrape's ``name[]`` filter reaches TorchServe and the added families alike; a revision the router stands in
    for no front of has none."""
    model = {"ModelName": "iris", "Revision": "1", "Hostname": "here"}
    by_server = {**model, "answered_by": "server"}

    async def scrape(session: aiohttp.ClientSession, url: str, query: str = "") -> dict[tuple[str, str], float]:
        async with session.get(url + query) as answer:
            assert answer.status == 200
            text = await answer.text()
        return {
            (sample.name, json.dumps(sample.labels, sort_keys=True)): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def key(name: str, labels: dict[str, str]) -> tuple[str, str]:
        return name, json.dumps(labels, sort_keys=True)

    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            router.stand_in_front(1, LABELS, lambda: backend.address)
            assert [(await _ask(session, router, kind))[0] for kind in ("sized", "error", "refused")] == [200, 500, 503]
            scraped = f"http://127.0.0.1:{router.port}/servers/1/metrics"
            seen = await scrape(session, scraped)
            torchserve = {"model_name": "iris", "model_version": "default", "hostname": "here"}
            assert seen[key("ts_inference_requests_total", torchserve)] == 4
            assert seen[key("esteira_requests_total", {**model, "outcome": "ok"})] == 2
            assert seen[key("esteira_requests_total", {**by_server, "outcome": "server_error"})] == 1
            assert seen[key("esteira_requests_total", {**by_server, "outcome": "client_error"})] == 0
            assert seen[key("esteira_server_request_duration_seconds_count", model)] == 3
            router.retry_seconds = 0.0  # its server gone: the request is the front's 502 and is not tried again
            router.set_backend(1, f"http://127.0.0.1:{free_port()}")
            assert (await _ask(session, router, "sized"))[0] == 502
            filtered = await scrape(session, scraped, "?name[]=esteira_server_request_duration_seconds")
            assert backend.scrapes[-1] == "name[]=esteira_server_request_duration_seconds"
            assert filtered[key("esteira_server_request_duration_seconds_count", model)] == 4
            assert not [labels for _, labels in filtered if "answered_by" in labels]  # not asked for: not added
            seen = await scrape(session, scraped)
            assert seen[key("esteira_requests_total", {**by_server, "outcome": "server_error"})] == 2
            async with session.get(f"http://127.0.0.1:{router.port}/servers/2/metrics") as answer:
                assert answer.status == 404 and "revision 2" in (await answer.json())["error"]

    asyncio.run(scenario())


def test_a_torchserve_revision_that_never_answers_is_counted_as_its_server_s_error_and_a_gone_one_has_no_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the spec's timeout the router gives up on a silent server as gone (its 502): in a pod, TorchServe's
    own response timeout answers it, counted as the server's error, so here too; a revision whose server is gone
    has its counts gone with it, as a pod's."""
    monkeypatch.setattr("esteira.local.router.ANSWER_SECONDS", 0.5)

    async def scenario() -> None:
        async with proxied() as (router, backend), aiohttp.ClientSession() as session:
            router.retry_seconds = 0.0
            router.stand_in_front(1, LABELS, lambda: backend.address)
            assert (await _ask(session, router, "watched"))[0] == 502
            scraped = f"http://127.0.0.1:{router.port}/servers/1/metrics"
            async with session.get(scraped) as answer:
                lines = (await answer.text()).splitlines()
            assert f'esteira_requests_total{{{LABELS},answered_by="server",outcome="server_error"}} 1.0' in lines
            router.forget_front(1)
            async with session.get(scraped) as answer:
                assert answer.status == 404

    asyncio.run(scenario())
