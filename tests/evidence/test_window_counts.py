"""The analysis queries count a window's requests, predictions and labels exactly, on a real Prometheus.

Samples are loaded at chosen timestamps, half a second off the evaluation's whole seconds as a scrape would
fall, so `increase()` would extrapolate (here by half again) where the queries must return the counts the
series really grew by: a chi-square test on extrapolated counts finds chance differences significant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from esteira.rollout.quality_queries import QualityNames, quality_queries
from esteira.rollout.queries import MetricNames, Scope, arm_queries
from tests.support.prometheus_server import PrometheusServer, with_samples

WINDOW_S = 3
# The evaluation time, whole seconds; samples at T - 5.5, T - 4.5, ..., T - 0.5 (None: no sample yet).
T = int(time.time()) - 120
OFFSETS = (5.5, 4.5, 3.5, 2.5, 1.5, 0.5)
SERVED = 'namespace="models",ModelName="iris",Revision="2"'
SCOPE = Scope("models", "iris", "iris")
LABELLED = 'deployment_namespace="models",deployment="iris",revision="2"'
# (metric, labels, samples, what the window's count must be)
SERIES: list[tuple[str, str, tuple[float | None, ...], float]] = [
    # Grew 24 - 15 since its last sample at least a window old (T - 3.5).
    ("esteira_predictions_total", f'{SERVED},class="setosa"', (10, 12, 15, 17, 20, 24), 9),
    # Born inside the window at 0, as the handlers publish every class when the model loads.
    ("esteira_predictions_total", f'{SERVED},class="versicolor"', (None, None, None, None, 0, 3), 3),
    # Went down: the process restarted and counted again from zero, so the window holds at least 4.
    ("esteira_predictions_total", f'{SERVED},class="virginica"', (30, 32, 35, 38, 1, 4), 4),
    # Restarted too, and counted past its value a window ago: its newest value whole, as the one above (taken as
    # grown by 40 - 35, its errors and requests were counted apart, one whole and one grown).
    ("esteira_predictions_total", f'{SERVED},class="climbed"', (30, 32, 35, 38, 1, 40), 40),
    ("esteira_requests_total", f'{SERVED},outcome="ok"', (100, 110, 120, 130, 140, 152), 32),
    ("esteira_requests_total", f'{SERVED},outcome="server_error"', (0, 0, 0, 1, 1, 2), 2),
    # Scraped by the chart's PodMonitor, which adds the ModelDeployment: counted with the series without it.
    ("esteira_requests_total", f'{SERVED},modeldeployment="iris",outcome="ok"', (0, 1, 2, 3, 4, 5), 3),
    # Another ModelDeployment of the namespace serving a model named iris, its revision 2 too: none of its counts.
    ("esteira_requests_total", f'{SERVED},modeldeployment="iris-b",outcome="ok"', (0, 100, 200, 300, 400, 500), 0),
    ("esteira_requests_total", f'{SERVED},modeldeployment="iris-b",outcome="server_error"', (0, 9, 18, 27, 36, 45), 0),
    # Another revision's series: none of revision 2's counts.
    (
        "esteira_requests_total",
        'namespace="models",ModelName="iris",Revision="1",outcome="ok"',
        (0, 9, 18, 27, 36, 45),
        0,
    ),
    ("esteira_labelled_predictions_total", LABELLED, (50, 52, 54, 58, 60, 61), 7),
    ("esteira_correct_predictions_total", LABELLED, (45, 47, 48, 52, 54, 54), 6),
]


# A pod that stopped inside a 10-minute window: (seconds before T, value), and the count it served in the window.
STOPPED = 'namespace="models",ModelName="iris",Revision="3",outcome="ok"'
STOPPED_SAMPLES = ((690, 5), (630, 8), (570, 20), (510, 30), (450, 41), (390, 50))
STOPPED_COUNT = 50 - 8


def openmetrics() -> str:
    """Every sample, each series' together in time order and each family's series together (promtool's order)."""
    samples = [
        (metric, labels, ago, value)
        for metric, labels, values, _ in SERIES
        for ago, value in zip(OFFSETS, values, strict=True)
        if value is not None
    ]
    samples += [("esteira_requests_total", STOPPED, ago, value) for ago, value in STOPPED_SAMPLES]
    samples.sort(key=lambda sample: (sample[0], sample[1], -sample[2]))
    return "\n".join([*(f"{m}{{{labels}}} {value:g} {T - ago}" for m, labels, ago, value in samples), "# EOF", ""])


def expected(metric: str, labels_with: str = "") -> float:
    return sum(count for name, labels, _, count in SERIES if name == metric and labels_with in labels)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = with_samples(tmp_path_factory.mktemp("window-counts"), openmetrics())
    try:
        yield server
    finally:
        server.stop()


def scalar(prometheus: PrometheusServer, promql: str) -> float:
    result = prometheus.query(promql, at=T)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def class_counts(prometheus: PrometheusServer, promql: str) -> dict[str, float]:
    return {s["metric"]["class"]: float(s["value"][1]) for s in prometheus.query(promql, at=T)}


def test_increase_would_extrapolate_these_samples(prometheus: PrometheusServer) -> None:
    """The premise: over these samples `increase()` scales a grown series' count up (7 in the window's 2 s
    of samples, taken as 10.5 over 3 s)."""
    extrapolated = class_counts(prometheus, f"sum by (class) (increase(esteira_predictions_total{{{SERVED}}}[3s]))")
    assert extrapolated["setosa"] == 10.5


def test_class_counts_are_exact_for_grown_born_and_reset_series(prometheus: PrometheusServer) -> None:
    queries = arm_queries(MetricNames(), SCOPE, 2, f"{WINDOW_S}s")
    expected = {"setosa": 9, "versicolor": 3, "virginica": 4, "climbed": 40}
    assert class_counts(prometheus, queries.class_counts) == expected
    assert scalar(prometheus, queries.drift.predictions.replace("sum by (class)", "sum")) == 56


def test_requests_and_server_errors_are_exact(prometheus: PrometheusServer) -> None:
    queries = arm_queries(MetricNames(), SCOPE, 2, f"{WINDOW_S}s")
    assert scalar(prometheus, queries.requests) == expected("esteira_requests_total", SERVED) == 37
    assert scalar(prometheus, queries.errors) == expected("esteira_requests_total", "server_error") == 2


def test_labelled_and_correct_are_exact(prometheus: PrometheusServer) -> None:
    queries = quality_queries(QualityNames(), "models", "iris", 2, WINDOW_S)
    assert scalar(prometheus, queries.labelled) == expected("esteira_labelled_predictions_total") == 7
    assert scalar(prometheus, queries.correct) == expected("esteira_correct_predictions_total") == 6


def test_a_pod_that_stopped_inside_the_window_still_counts(prometheus: PrometheusServer) -> None:
    """Its last sample is past an instant query's five-minute lookback, as a gone pod's (or a series marked
    stale) is: the window still holds what it served."""
    queries = arm_queries(MetricNames(), SCOPE, 3, "10m")
    assert scalar(prometheus, queries.requests) == STOPPED_COUNT
