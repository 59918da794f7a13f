"""The operator's decisions reach the collector's audit trail, and a collector that is down never holds a reconcile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from esteira.collector.app import Collector, CollectorConfig
from esteira.controller.collector_link import CollectorLink
from esteira.vocabulary import Decision
from tests.collector.conftest import TOKEN
from tests.support.net import free_port


async def _audit(link: CollectorLink, collector: Collector) -> list[str]:
    return [e["reason"] for e in collector.store.audit("models", "iris", 100)]


async def test_decisions_land_in_the_audit_trail_even_after_an_outage(tmp_path: Path) -> None:
    port = free_port()
    link = CollectorLink(f"http://127.0.0.1:{port}", TOKEN)
    started = time.perf_counter()
    link.record("models", "iris", [Decision("RevisionCreated", "revision 2"), Decision("RolledBack", "accuracy", True)])
    assert time.perf_counter() - started < 0.05  # the collector is not even running: the reconcile goes on
    collector = Collector(CollectorConfig(f"sqlite:///{tmp_path / 'c.db'}", token=TOKEN))
    server = TestServer(collector.app(), port=port)
    await server.start_server()
    try:
        link.record("models", "iris", [Decision("Promoted", "revision 3")])  # wakes the sender
        deadline = time.monotonic() + 20
        while await _audit(link, collector) != ["RevisionCreated", "RolledBack", "Promoted"]:
            assert time.monotonic() < deadline, await _audit(link, collector)
            await asyncio.sleep(0.1)
        entry = collector.store.audit("models", "iris", 10)[1]
        assert entry["warning"] is True and entry["actor"] == "esteira-operator"
    finally:
        await link.close()
        await server.close()


async def test_a_post_whose_answer_is_lost_is_not_stored_twice(tmp_path: Path) -> None:
    """The collector commits the batch but the answer never arrives (here a 503 after the commit, as a proxy
    timing out would give): the link sends the batch again, and each decision is in the trail once."""
    collector = Collector(CollectorConfig(f"sqlite:///{tmp_path / 'c.db'}", token=TOKEN))
    lost: list[int] = []

    @web.middleware
    async def lose_the_first_answer(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST" and not lost:
            lost.append(response.status)
            return web.json_response({"error": "upstream timed out"}, status=503)
        return response

    app = collector.app()
    app.middlewares.append(lose_the_first_answer)
    server = TestServer(app, port=free_port())
    await server.start_server()
    link = CollectorLink(str(server.make_url("")), TOKEN)
    try:
        link.record("models", "iris", [Decision("RevisionCreated", "revision 2"), Decision("Promoted", "revision 2")])
        deadline = time.monotonic() + 20
        while link._waiting:  # the batch leaves the queue once a post of it is answered
            assert time.monotonic() < deadline, "the link never heard back"
            await asyncio.sleep(0.05)
        assert lost == [200]  # the first post was stored, its answer lost
        assert await _audit(link, collector) == ["RevisionCreated", "Promoted"]
    finally:
        await link.close()
        await server.close()


async def test_a_batch_recorded_while_the_sender_closes_its_session_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender, its queue empty, was still closing its session: a batch recorded then started no new sender
    and waited for the next decision, or was lost with the operator."""
    import aiohttp

    from esteira.vocabulary import COLLECTOR_AUDIT_PATH

    got: list[object] = []

    async def audit(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.json_response({}, status=201)

    app = web.Application()
    app.router.add_post(COLLECTOR_AUDIT_PATH, audit)
    async with TestServer(app) as server:
        link = CollectorLink(str(server.make_url("")).rstrip("/"))
        closing = aiohttp.ClientSession.__aexit__

        async def record_while_closing(session: aiohttp.ClientSession, *exc: object) -> None:
            if len(got) == 1:  # the first batch posted, the queue empty: a decision comes now
                link.record("ns", "iris", [Decision("Second", "two")])
            await closing(session, *exc)  # type: ignore[arg-type]

        monkeypatch.setattr(aiohttp.ClientSession, "__aexit__", record_while_closing)
        link.record("ns", "iris", [Decision("First", "one")])
        sender = link._sender
        assert sender is not None
        await asyncio.wait_for(sender, 10)
        assert len(got) == 2 and not link._waiting
