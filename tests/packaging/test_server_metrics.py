"""What the model server itself does reaches the canary analysis, read by its own queries from a real Prometheus
scraping the pod's metrics port: the 503s a real TorchServe with no worker left answers behind the pod's front,
which the handler never sees, count as the revision's requests and server errors; and the latency is each
request's time in the server, its wait for the batch before its own included, in either runtime."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from esteira.rollout.queries import MetricNames, Scope, arm_queries
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.model_server import ModelServerProcess
from tests.support.pod_process import PodProcess
from tests.support.prerequisites import require_file
from tests.support.prometheus_server import PrometheusServer
from tests.support.torchserve import require_torchserve
from tests.support.waiting import Timeout, eventually

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
REVISION = 7
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def predict(url: str, path: str = "/v1/models/iris:predict") -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"{url}{path}", data=BODY, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def scale_workers(server: ModelServerProcess, workers: int) -> None:
    """TorchServe's management API, as an operator's `kubectl exec` or a crashing model would leave it."""
    target = f"{server.management_url}/models/iris?min_worker={workers}&max_worker={workers}&synchronous=true"
    with urllib.request.urlopen(urllib.request.Request(target, method="PUT"), timeout=60) as answer:
        assert answer.status == 200


def count(prometheus: PrometheusServer, query: str) -> float | None:
    result = prometheus.query(query)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchserve_s_own_refusals_count_as_the_revision_s_server_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_torchserve()
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    monkeypatch.setenv("ESTEIRA_REVISION", str(REVISION))  # as the operator sets it on the revision's pods
    queries = arm_queries(MetricNames(), Scope("models", "iris", "iris"), REVISION, "10m")
    with ModelServerProcess(IRIS, tmp_path / "pod", "1.0.0") as server:
        metrics_port = server.metrics_url.removeprefix("http://").removesuffix("/metrics")
        (tmp_path / "prometheus").mkdir()
        prometheus = PrometheusServer(tmp_path / "prometheus", [metrics_port], labels={"namespace": "models"})
        prometheus.start()
        try:
            for _ in range(5):
                assert predict(server.url)[0] == 200
            # The worker writes its counts up to a second late and a stopped worker's last second is lost.
            eventually(lambda: count(prometheus, queries.requests) == 5, timeout=30, what="the handler's 5 answers")
            scale_workers(server, 0)
            for path in ("/v1/models/iris:predict", "/v2/models/iris/infer", "/v1/models/iris:predict"):
                status, body = predict(server.url, path)
                assert status == 503 and "no worker" in str(body["error"]), (status, body)

            seen: list[tuple[float | None, float | None]] = []

            def counted() -> bool:
                seen.append((count(prometheus, queries.requests), count(prometheus, queries.errors)))
                return seen[-1] == (8, 3)

            try:
                eventually(counted, timeout=30, what="8 requests and 3 server errors of the revision")
            except Timeout:
                pytest.fail(f"(requests, server errors) last read {seen[-1]}; up: {prometheus.query('up')}")
            by_origin = prometheus.query(
                f'sum by (answered_by, outcome) (esteira_requests_total{{Revision="{REVISION}"}})'
            )
            origins = {
                (r["metric"].get("answered_by", "handler"), r["metric"]["outcome"]): r["value"][1] for r in by_origin
            }
            assert origins == {
                ("handler", "ok"): "5",
                ("handler", "client_error"): "0",
                ("handler", "server_error"): "0",
                ("server", "client_error"): "0",
                ("server", "server_error"): "3",
            }
            scale_workers(server, 1)
            assert predict(server.url)[0] == 200
            eventually(lambda: count(prometheus, queries.requests) == 9, timeout=30, what="the 9th request counted")
            assert count(prometheus, queries.errors) == 3
            assert count(prometheus, "sum(ts_inference_requests_total)") == 9  # TorchServe's own metrics still served
        finally:
            prometheus.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("runtime", ["esteira-torchserve", "esteira-kserve"])
def test_the_analysis_latency_is_each_request_s_time_in_the_server(
    runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    monkeypatch.setenv("ESTEIRA_REVISION", str(REVISION))
    queries = arm_queries(MetricNames(), Scope("models", "iris", "iris"), REVISION, "10m")
    server: PodProcess
    if runtime == "esteira-torchserve":
        require_torchserve()
        server = ModelServerProcess(IRIS, tmp_path / "pod", "1.0.0")
        target = server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    else:
        server = KServeRuntimeProcess(IRIS, tmp_path / "pod", "1.0.0")
        target = server.url.removeprefix("http://")  # esteira-kserve's /metrics is on its own port too
    selector = f'{{Revision="{REVISION}"}}'
    with server:
        (tmp_path / "prometheus").mkdir()
        prometheus = PrometheusServer(tmp_path / "prometheus", [target], labels={"namespace": "models"})
        prometheus.start()
        try:
            timed = f"sum(esteira_server_request_duration_seconds_count{selector})"
            eventually(lambda: count(prometheus, timed) == 0, timeout=30, what="the histogram scraped before traffic")
            # Both count the requests they drop because their callers left (under TorchServe, the pod's front).
            assert count(prometheus, f"sum(esteira_abandoned_requests_total{selector})") == 0
            # Two rounds a scrape apart, so a rate has samples to tell apart even for a series the first one creates.
            for sent in (10, 20):
                # Ten at once: those that come while the first runs wait for it in the server, out of the handler's
                # sight (in the pod's front under TorchServe, in the batcher under esteira-kserve).
                with ThreadPoolExecutor(10) as pool:
                    assert [answer[0] for answer in pool.map(lambda _: predict(server.url), range(10))] == [200] * 10
                eventually(
                    lambda sent=sent: count(prometheus, queries.requests) == sent and count(prometheus, timed) == sent,
                    timeout=30,
                    what=f"{sent} requests counted and timed",
                )
            p95 = count(prometheus, queries.latency_p95)
            handler = count(
                prometheus,
                f"histogram_quantile(0.95, sum by (le) (rate(esteira_request_duration_seconds_bucket{selector}[10m])))",
            )
        finally:
            prometheus.stop()
    assert p95 is not None and p95 > 0, (p95, handler)
    if runtime == "esteira-torchserve":
        # The wait before the batch a request ran in, and TorchServe's own time, are the server's, not the
        # handler's: the handler's histogram (in the message) puts the p95 lower.
        assert handler is not None and p95 > handler, (p95, handler)
