"""Prometheus behind an authenticating proxy: the operator sends the credentials it is given and never lets
them reach status, Events or its log."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.prometheus_proxy import PrometheusProxy
from tests.e2e.test_rollouts import (
    GOOD,
    last_rollout,
    rollout_md,
    stable_traffic_covers_an_interval,
    telemetry,  # noqa: F401 (a fixture)
    wait_for_analyses,
)
from tests.emulator.cluster import KubeApi
from tests.support.cluster import Esteira, eventually
from tests.support.fake_kserve import FakeKServe
from tests.support.model_exporter import ModelExporter
from tests.support.operator_process import OperatorProcess
from tests.support.prometheus_server import PrometheusServer
from tests.support.traffic import TrafficMirror

pytestmark = pytest.mark.slow

TOKEN = "tok-5f1d0c9e"
PASSWORD = "hunter2-pw"


@pytest.fixture
def plain_operator(
    crds: KubeApi,
    kube_namespace: str,
    tmp_path: Path,
    fake_kserve: FakeKServe | None,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The operator with no Prometheus of its own: each ModelDeployment names one."""
    crds.require_emulator("rollouts driven by a local Prometheus")
    process = OperatorProcess(
        str(crds.kubeconfig), [kube_namespace], tmp_path / "operator.log", extra_args=["--rollout-tick-seconds", "0.5"]
    )
    with process:
        yield process
    request.node.add_report_section("teardown", "operator log", process.log()[-20000:])


def start_rollout_with(
    esteira: Esteira, namespace: str, prometheus: PrometheusServer, monitoring: dict[str, Any]
) -> None:
    first = rollout_md(namespace, "1.0.0")
    first["spec"]["monitoring"] = monitoring
    esteira.create_md(namespace, first)
    eventually(lambda: (esteira.condition(namespace, "iris", "Ready") or {}).get("status") == "True", timeout=30)
    eventually(lambda: stable_traffic_covers_an_interval(prometheus, namespace), timeout=30, what="stable scraped")
    esteira.patch_md(namespace, "iris", {"spec": {"model": rollout_md(namespace, "2.0.0")["spec"]["model"]}})


def leaked(secret: str, esteira: Esteira, namespace: str, operator: OperatorProcess) -> list[str]:
    md = esteira.get_md(namespace, "iris")
    places = {
        "status": str(md.get("status")),
        "events": str(esteira.events_for(namespace, "iris")),
        "operator log": operator.log(),
    }
    return [where for where, text in places.items() if secret in text]


def test_credentials_from_a_labelled_secret_are_sent(
    plain_operator: OperatorProcess,
    crds: KubeApi,
    esteira: Esteira,
    kube_namespace: str,
    telemetry: tuple[ModelExporter, PrometheusServer],  # noqa: F811
) -> None:
    exporter, prometheus = telemetry
    crds.core().create_namespaced_secret(
        kube_namespace,
        {
            "metadata": {"name": "prom-credentials", "labels": {"serving.esteira.io/prometheus-auth": "true"}},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        },
    )
    with (
        PrometheusProxy(prometheus.url, authorization=f"Bearer {TOKEN}") as proxy,
        TrafficMirror(esteira, kube_namespace, exporter, {1: GOOD, 2: GOOD}),
    ):
        monitoring = {"prometheusUrl": proxy.url, "prometheusAuth": {"secretRef": {"name": "prom-credentials"}}}
        start_rollout_with(esteira, kube_namespace, prometheus, monitoring)
        outcome = eventually(lambda: last_rollout(esteira, kube_namespace), timeout=60, what="rollout finished")
    assert outcome["outcome"] == "Promoted", outcome
    assert proxy.refused == 0 and proxy.seen and set(proxy.seen) == {f"Bearer {TOKEN}"}
    assert leaked(TOKEN, esteira, kube_namespace, plain_operator) == []


def test_credentials_in_the_url_never_reach_status_events_or_logs(
    plain_operator: OperatorProcess,
    esteira: Esteira,
    kube_namespace: str,
    telemetry: tuple[ModelExporter, PrometheusServer],  # noqa: F811
) -> None:
    exporter, prometheus = telemetry
    expected = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    with (
        PrometheusProxy(prometheus.url, authorization="Bearer something-else") as proxy,
        TrafficMirror(esteira, kube_namespace, exporter, {1: GOOD, 2: GOOD}),
    ):
        url = proxy.url.replace("http://", f"http://admin:{PASSWORD}@")
        start_rollout_with(esteira, kube_namespace, prometheus, {"prometheusUrl": url})
        wait_for_analyses(esteira, kube_namespace, 2, held="metrics unavailable")
    canary = esteira.get_md(kube_namespace, "iris")["status"]["canary"]
    assert canary["weight"] == 20, "no promotion without evidence"
    assert "http://***@127.0.0.1" in canary["pauseReason"] and "HTTP 401" in canary["pauseReason"]
    assert expected in proxy.seen, "the URL's credentials were sent, as basic auth"
    assert leaked(PASSWORD, esteira, kube_namespace, plain_operator) == []
    assert leaked(expected.split()[1], esteira, kube_namespace, plain_operator) == []
