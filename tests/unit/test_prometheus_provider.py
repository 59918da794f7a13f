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


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"resultType": "scalar", "result": [1.7e9, "1"]}, "the answer is scalar, not an instant vector"),
        ({"resultType": "matrix", "result": [{"metric": {}, "values": [[1.7e9, "1"]]}]}, "the answer is matrix"),
        ({"resultType": "vector", "result": [{"metric": {}, "value": "1"}]}, "the answer is vector, not an"),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1.7e9, "many"]}]}, "not an instant vector"),
        (
            {
                "resultType": "vector",
                "result": [{"metric": {"pod": p}, "value": [1.7e9, v]} for p, v in (("a", "0.5"), ("b", "50"))],
            },
            "2 series where one was expected",
        ),
    ],
    ids=["scalar", "range", "no sample", "not a number", "several series"],
)
def test_a_check_answered_otherwise_than_one_value_is_no_evidence(data: dict[str, object], says: str) -> None:
    """A custom check's query may answer what a check cannot judge: a scalar or a range raised out of the
    analysis (and stopped the reconcile, commands included); of several series the first was judged alone."""

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        if request.query["query"].startswith("queue_depth"):
            return aiohttp.web.json_response({"status": "success", "data": data})
        return vector()

    async def run() -> Evidence:
        async with serving(answer) as url:
            client = PrometheusClient(url.format(""), timeout=10, attempts=3)
            return await PrometheusProvider(client).collect("team", "iris", analysed_spec(), STABLE, CANARY)

    with pytest.raises(MetricsUnavailable, match=says):
        asyncio.run(run())


def test_a_ca_certificate_that_cannot_be_read_is_refused_with_the_credentials() -> None:
    from esteira.evidence.prometheus import PrometheusAuth

    with pytest.raises(ValueError, match=r"'ca\.crt' is not a PEM CA certificate"):
        PrometheusAuth.from_mapping(
            {"token": "t", "ca.crt": "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----"}
        )


def test_the_accuracy_check_asks_prometheus_with_its_credentials() -> None:
    from esteira.evidence.prometheus import PrometheusAuth
    from esteira.evidence.quality import prometheus_tallies

    seen: list[str | None] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization"))
        return vector(3.0)

    async def run() -> None:
        async with serving(answer) as url:
            client = PrometheusClient(url.format(""), timeout=10, attempts=1, auth=PrometheusAuth(token="secret"))
            tally = await prometheus_tallies(client)("team", "iris", CANARY, 600)
            assert tally.labelled == 3

    asyncio.run(run())
    assert seen and set(seen) == {"Bearer secret"}


@pytest.mark.parametrize("answered", [float("inf"), float("-inf"), float("nan")], ids=["+Inf", "-Inf", "NaN"])
def test_a_custom_check_answered_with_no_finite_value_has_no_value(answered: float) -> None:
    """A ratio over an idle arm answers +Inf (x/0), which passed a `min` bound: it is no evidence either way."""

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return vector(answered) if request.query["query"].startswith("queue_depth") else vector()

    async def run() -> Evidence:
        async with serving(answer) as url:
            client = PrometheusClient(url.format(""), timeout=10, attempts=1)
            return await PrometheusProvider(client).collect("team", "iris", analysed_spec(), STABLE, CANARY)

    assert asyncio.run(run()).custom["queue-depth"] is None
