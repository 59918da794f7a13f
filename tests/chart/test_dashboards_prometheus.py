"""Every dashboard panel's query runs on a real Prometheus holding the series Esteira exports, and returns data.

The series (the operator's, the handlers', dcgm-exporter's, with the labels each scrape gives them) are written
as OpenMetrics for the last 40 minutes, turned into TSDB blocks with `promtool tsdb create-blocks-from
openmetrics`, and served by a real `prometheus`. A query that does not parse, reads a misspelt metric or label,
or joins on labels that do not match returns an error or nothing, and fails here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.chart.test_monitoring import dashboard_queries
from tests.support.prometheus_server import PrometheusServer, with_samples

STEP_S = 15
SPAN_S = 40 * 60
# A counter rising by `rate` per second, or a gauge holding `value`: f(seconds since the start).
Shape = Callable[[int], float]
OPERATOR = 'job="esteira-metrics",namespace="esteira-system"'
DEPLOYMENT = f'{OPERATOR},exported_namespace="models",deployment="iris"'
MODEL = 'namespace="models",ModelName="iris",Hostname="iris-predictor-0"'
GPU = 'namespace="models",pod="iris-predictor-00001-deployment-7f9c",container="kserve-container",gpu="0"'
# A Standard-mode canary's (or a GatewayAPI revision's) predictor pod: KServe names it <name>-rev-<n>-predictor-...
CANARY_GPU = 'namespace="models",pod="iris-rev-2-predictor-6c8d9f-x2x4q",container="kserve-container",gpu="0"'


def counter(rate: float) -> Shape:
    return lambda t: rate * t


def gauge(value: float) -> Shape:
    return lambda _t: value


def series() -> Iterator[tuple[str, str, Shape]]:
    """(metric, labels, shape) for every metric family a panel reads."""
    yield "esteira_operator_managed_deployments", OPERATOR, gauge(2)
    for outcome in ("Promoted", "RolledBack"):
        yield "esteira_operator_rollouts_total", f'{OPERATOR},outcome="{outcome}"', counter(0.001)
    yield "esteira_operator_api_retries_total", OPERATOR, counter(0.01)
    for verb in ("get", "list", "patch"):
        yield "esteira_operator_api_calls_total", f'{OPERATOR},verb="{verb}"', counter(2)
    for source, rate in (("watch", 16.0), ("api", 0.5), ("stale", 0.01)):
        yield "esteira_operator_reconcile_reads_total", f'{OPERATOR},source="{source}"', counter(rate)
    yield "esteira_operator_drift_evaluation_errors_total", OPERATOR, counter(0.002)
    for result in ("unchanged", "updated", "error"):
        yield "esteira_operator_reconciles_total", f'{OPERATOR},result="{result}"', counter(0.5)
    for le, share in (("0.01", 0.3), ("0.1", 0.8), ("1", 1.0), ("+Inf", 1.0)):
        yield "esteira_operator_reconcile_duration_seconds_bucket", f'{OPERATOR},le="{le}"', counter(share)
    yield "esteira_operator_deployment_ready", DEPLOYMENT, gauge(1)
    yield "esteira_operator_data_drifted", DEPLOYMENT, gauge(1)
    yield "esteira_operator_canary_weight", DEPLOYMENT, gauge(20)
    yield "esteira_operator_canary_held", f'{DEPLOYMENT},hold="InputsDrifting"', gauge(1)
    for feature, score in (("sepal_length", 0.31), ("petal_width", 0.04)):
        yield "esteira_operator_drift_score", f'{DEPLOYMENT},feature="{feature}"', gauge(score)
    for revision in ("1", "2"):
        labels = f'{MODEL},Revision="{revision}"'
        for outcome, rate in (("ok", 9.0), ("client_error", 0.5), ("server_error", 0.1)):
            yield "esteira_requests_total", f'{labels},outcome="{outcome}"', counter(rate)
        for le, share in (("0.05", 3.0), ("0.1", 8.0), ("0.5", 9.5), ("+Inf", 9.6)):
            yield "esteira_server_request_duration_seconds_bucket", f'{labels},le="{le}"', counter(share)
        for name in ("setosa", "versicolor"):
            yield "esteira_predictions_total", f'{labels},class="{name}"', counter(4.0)
        yield "esteira_batch_size_sum", labels, counter(20.0)
        yield "esteira_batch_size_count", labels, counter(4.0)
        yield "esteira_drift_instances_total", labels, counter(9.6)
        yield "esteira_abandoned_requests_total", labels, counter(0.05)
        yield "esteira_drift_capped_total", labels, counter(0.0)
        for feature, kind in (("sepal_length", "missing"), ("petal_width", "out_of_range")):
            yield "esteira_data_quality_violations_total", f'{labels},feature="{feature}",kind="{kind}"', counter(0.2)
    for pod in (GPU, CANARY_GPU):
        yield "DCGM_FI_DEV_GPU_UTIL", pod, gauge(63)
        yield "DCGM_FI_DEV_FB_USED", pod, gauge(9000)
        yield "DCGM_FI_DEV_FB_FREE", pod, gauge(72000)


def openmetrics(end: int) -> str:
    """The series as OpenMetrics text, sample by sample, each family's samples together (promtool needs that)."""
    lines: list[str] = []
    start = end - SPAN_S
    for metric, labels, shape in sorted(series(), key=lambda entry: entry[0]):
        for t in range(0, SPAN_S + 1, STEP_S):
            lines.append(f"{metric}{{{labels}}} {shape(t):g} {start + t}")
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = with_samples(tmp_path_factory.mktemp("dashboards"), openmetrics(int(time.time()) - 5))
    try:
        yield server
    finally:
        server.stop()


def test_the_series_were_loaded(prometheus: PrometheusServer) -> None:
    loaded = prometheus.query('count({__name__=~"esteira_.+|DCGM_.+"})')
    assert loaded and float(loaded[0]["value"][1]) == sum(1 for _ in series())


@pytest.mark.parametrize(("panel", "expr"), sorted(dashboard_queries().items()))
def test_every_panel_query_returns_data(prometheus: PrometheusServer, panel: str, expr: str) -> None:
    result = prometheus.query(expr)
    assert result, f"{panel}: no data for {expr}"
    assert all(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in result), f"{panel}: {result}"


def test_the_gpu_panels_show_every_revision_s_pods(prometheus: PrometheusServer) -> None:
    """They read the stable predictor's pods only (`<name>-predictor.*`): a canary's, and every revision's under
    the GatewayAPI router, showed no GPU at all."""
    selected = dashboard_queries({"$deployment": "iris", "$namespace": "models"})  # one deployment chosen
    panels = {panel: expr for panel, expr in selected.items() if "DCGM_" in expr}
    assert panels
    for panel, expr in panels.items():
        pods = {sample["metric"].get("pod") for sample in prometheus.query(expr)}
        assert pods == {"iris-predictor-00001-deployment-7f9c", "iris-rev-2-predictor-6c8d9f-x2x4q"}, panel
