"""The Prometheus provider: each arm's samples come from its own revision's queries, custom checks keep their
names, and the queries of both arms are in flight together rather than one arm after the other."""

from __future__ import annotations

import asyncio

import aiohttp.web
import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.evidence.prometheus import PrometheusClient, PrometheusProvider
from esteira.rollout.evidence import Evidence, MetricsUnavailable
from esteira.rollout.queries import MetricNames
from tests.support.prometheus_stub import serving, vector
from tests.support.specs import spec

STABLE, CANARY = 1, 2
REQUESTS = {STABLE: 200.0, CANARY: 100.0}
CUSTOM = {"gpu-util": 0.5, "queue-depth": 3.0}  # check name -> the value its query answers


def analysed_spec() -> ModelDeploymentSpec:
    checks = [{"name": name, "query": f'{metric(name)}{{app="{{{{name}}}}"}}', "max": 10} for name in CUSTOM]
    return ModelDeploymentSpec.parse(spec(rollout={"analysis": {"custom": checks}}))


def metric(check: str) -> str:
    return check.replace("-", "_")


def revision_of(query: str) -> int | None:
    label = MetricNames().revision_label
    return next((r for r in REQUESTS if f'{label}="{r}"' in query), None)


async def collect(both_arms_at_once: bool = True) -> Evidence:
    """Collect against a Prometheus stand-in whose canary queries answer only once a stable one has arrived
    (or at once, when ``both_arms_at_once`` is False)."""
    stable_asked = asyncio.Event()

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        query = request.query["query"]
        revision = revision_of(query)
        if revision == STABLE:
            stable_asked.set()
        elif revision == CANARY and both_arms_at_once:
            try:
                await asyncio.wait_for(stable_asked.wait(), timeout=5)
            except TimeoutError:
                return aiohttp.web.json_response({"status": "error", "error": "stable never asked"}, status=503)
        if (
            revision is not None
            and query.startswith("sum(")
            and f"{MetricNames().requests}{{" in query
            and "outcome" not in query
        ):
            return vector(REQUESTS[revision])
        for name, value in CUSTOM.items():
            if query.startswith(metric(name)):
                return vector(value)
        return vector()

    async with serving(answer) as url:
        client = PrometheusClient(url.format(""), timeout=10, attempts=1)
        return await PrometheusProvider(client).collect("team", "iris", analysed_spec(), STABLE, CANARY)


def test_each_arm_reads_its_own_revision_and_checks_keep_their_names() -> None:
    evidence = asyncio.run(collect(both_arms_at_once=False))
    assert evidence.canary.requests == REQUESTS[CANARY]
    assert evidence.stable is not None and evidence.stable.requests == REQUESTS[STABLE]
    assert dict(evidence.custom) == CUSTOM


def test_both_arms_are_queried_at_once() -> None:
    evidence = asyncio.run(collect())
    assert evidence.canary.requests == REQUESTS[CANARY]


def test_a_failing_query_leaves_no_evidence() -> None:
    async def refuse(request: aiohttp.web.Request) -> aiohttp.web.Response:
        if request.query["query"].startswith("queue_depth"):
            return aiohttp.web.json_response({"status": "error", "error": "overloaded"}, status=503)
        return vector()

    async def run() -> Evidence:
        async with serving(refuse) as url:
            client = PrometheusClient(url.format(""), timeout=10, attempts=1)
            return await PrometheusProvider(client).collect("team", "iris", analysed_spec(), STABLE, CANARY)

    with pytest.raises(MetricsUnavailable, match=r"overloaded.*queue_depth"):
        asyncio.run(run())
