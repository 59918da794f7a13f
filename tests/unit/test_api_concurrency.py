"""The operator's Kubernetes calls run in a pool of their own, as wide as ``--api-concurrency`` says, and are
counted by verb."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY

from esteira.controller.config import DEFAULT_API_CONCURRENCY, parse_args
from esteira.controller.kube import KubeAPI


class Gate:
    """A blocking stand-in for the client's call: counts callers inside, and holds them until opened."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.opened = threading.Event()
        self._lock = threading.Lock()
        self.arrived = threading.Condition(self._lock)

    def __call__(self, *_: Any, **__: Any) -> dict[str, Any]:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.arrived.notify_all()
        self.opened.wait(10)
        with self._lock:
            self.inside -= 1
        return {}

    def wait_inside(self, count: int) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: self.inside >= count, timeout=10)


async def run_calls(api: KubeAPI, gate: Gate, calls: int, concurrency: int) -> None:
    tasks = [asyncio.create_task(api._call(gate)) for _ in range(calls)]
    inside = await asyncio.to_thread(gate.wait_inside, concurrency)
    assert inside, f"only {gate.inside} calls ran at once, expected {concurrency}"
    # The rest wait their turn in the pool's queue, with every thread of the pool busy.
    assert api._executor._work_queue.qsize() == calls - concurrency
    gate.opened.set()
    await asyncio.gather(*tasks)


@pytest.mark.parametrize("concurrency", [3, 12])
def test_as_many_calls_run_at_once_as_asked_and_no_more(concurrency: int) -> None:
    gate = Gate()
    api = KubeAPI(concurrency=concurrency)
    asyncio.run(run_calls(api, gate, 2 * concurrency, concurrency))
    assert gate.most == concurrency


def test_the_client_pools_as_many_connections_as_calls_run_at_once() -> None:
    api = KubeAPI(concurrency=17)
    assert api._api.api_client.configuration.connection_pool_maxsize == 17


def test_the_flag_and_its_default() -> None:
    assert parse_args(["-A"]).api_concurrency == DEFAULT_API_CONCURRENCY
    assert parse_args(["-A", "--api-concurrency", "8"]).api_concurrency == 8


def test_a_pool_of_none_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["-A", "--api-concurrency", "0"])
    assert "--api-concurrency must be at least 1, got 0" in capsys.readouterr().err


def test_the_ingress_domain_flag_its_default_and_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["-A"]).ingress_domain == "example.com"  # KServe's stock ingress domain
    assert parse_args(["-A", "--ingress-domain", "models.example.org"]).ingress_domain == "models.example.org"
    with pytest.raises(SystemExit):
        parse_args(["-A", "--ingress-domain", "https://example.com"])
    assert "--ingress-domain must be a DNS name" in capsys.readouterr().err


def test_calls_are_counted_by_their_verb() -> None:
    def list_namespaced_custom_object(**_: Any) -> dict[str, Any]:
        return {}

    def read_namespaced_secret(**_: Any) -> dict[str, Any]:
        return {}

    def patch_namespaced_custom_object_status(**_: Any) -> dict[str, Any]:
        return {}

    def count(verb: str) -> float:
        return REGISTRY.get_sample_value("esteira_operator_api_calls_total", {"verb": verb}) or 0.0

    before = {verb: count(verb) for verb in ("list", "get", "patch", "create")}
    api = KubeAPI(concurrency=2)

    async def calls() -> None:
        for fn in (list_namespaced_custom_object, list_namespaced_custom_object, read_namespaced_secret):
            await api._call(fn)
        await api._call(patch_namespaced_custom_object_status)

    asyncio.run(calls())
    made = {verb: count(verb) - before[verb] for verb in before}
    assert made == {"list": 2, "get": 1, "patch": 1, "create": 0}
