"""The operator's decisions reach the collector's audit trail, and a collector that is down never holds a reconcile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
