"""esteira-kserve's metrics: Esteira's handler on a ``prometheus_client`` registry writes every batch as it ends."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from ts.context import Context, RequestProcessor

from model_handlers.inprocess import PrometheusMetrics
from model_handlers.metrics import DEFINITIONS, REQUEST_DURATION, REQUESTS_TOTAL, write_metrics
from model_handlers.tabular import TabularHandler
from tests.handlers.conftest import ModelDir, json_headers

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def context(model_dir: ModelDir, metrics: PrometheusMetrics, requests: int) -> Context:
    built = Context(
        model_dir.name, str(model_dir.path), model_dir.manifest, 8, None, "test", metrics=metrics, model_yaml_config={}
    )
    built.request_processor = [RequestProcessor(headers) for headers in json_headers(requests)]
    built.request_ids = {idx: f"req-{idx}" for idx in range(requests)}
    return built


def serving(model_dir: ModelDir) -> tuple[TabularHandler, PrometheusMetrics, CollectorRegistry]:
    """A tabular handler loaded with esteira-kserve's metrics on a registry of its own."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    handler = TabularHandler()
    handler.initialize(context(model_dir, metrics, 1))
    return handler, metrics, registry


def test_every_batch_is_counted_as_soon_as_it_is_answered(model_dirs: dict[str, ModelDir]) -> None:
    model_dir = model_dirs["tabular"]
    handler, metrics, registry = serving(model_dir)
    body = {"body": json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()}  # as esteira-kserve hands it over
    for batch in (1, 2, 3):  # three batches well within a second: none of them may wait for a later write
        handler.handle([body] * batch, context(model_dir, metrics, batch))
    labels = {"ModelName": handler.identity.name, "Revision": handler.identity.revision, "outcome": "ok"}
    assert registry.get_sample_value(REQUESTS_TOTAL, labels) == 6


def test_each_series_keeps_its_own_count(model_dirs: dict[str, ModelDir]) -> None:
    """Series of one metric with different label values are updated apart, batch after batch."""
    model_dir = model_dirs["tabular"]
    handler, metrics, registry = serving(model_dir)
    good = {"body": json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]}).encode()}
    bad = {"body": json.dumps({"instances": [[0.1, 0.2]]}).encode()}
    for _ in range(2):
        handler.handle([good, bad, bad], context(model_dir, metrics, 3))
    base = {"ModelName": handler.identity.name, "Revision": handler.identity.revision}
    assert registry.get_sample_value(REQUESTS_TOTAL, {**base, "outcome": "ok"}) == 2
    assert registry.get_sample_value(REQUESTS_TOTAL, {**base, "outcome": "client_error"}) == 4
    assert registry.get_sample_value(f"{REQUEST_DURATION}_count", base) == 2


def test_a_metric_the_registry_lacks_costs_no_other_metric_its_update() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    definition = DEFINITIONS[REQUESTS_TOTAL]
    labels = ("m", "r", "ok")
    updates = [(REQUESTS_TOTAL, 1.0), ("unknown", 2.0), (REQUESTS_TOTAL, 3.0)]
    with pytest.raises(KeyError, match="unknown"):
        write_metrics(metrics, [(name, definition, value, labels) for name, value in updates])
    assert registry.get_sample_value(REQUESTS_TOTAL, {"ModelName": "m", "Revision": "r", "outcome": "ok"}) == 4


def test_every_outcome_is_published_at_zero_before_the_first_request(model_dirs: dict[str, ModelDir]) -> None:
    """A counter series born with the first server error hides that error from ``increase()``: each outcome
    exists at 0 from load, so a canary failing from its first request fails its first analysis."""
    handler, _, registry = serving(model_dirs["tabular"])
    base = {"ModelName": handler.identity.name, "Revision": handler.identity.revision}
    for outcome in ("ok", "client_error", "server_error"):
        assert registry.get_sample_value(REQUESTS_TOTAL, {**base, "outcome": outcome}) == 0


def test_a_request_refused_before_the_handler_counts_as_a_server_error_of_the_revision(
    model_dirs: dict[str, ModelDir],
) -> None:
    """The canary analysis reads errors from this counter: a request the server refused is one."""
    model_dir = model_dirs["tabular"]
    handler, metrics, registry = serving(model_dir)
    assert handler.recorder is not None
    for _ in range(3):
        handler.recorder.record_refused(metrics, 503)
    base = {"ModelName": handler.identity.name, "Revision": handler.identity.revision}
    assert registry.get_sample_value(REQUESTS_TOTAL, {**base, "outcome": "server_error"}) == 3
    assert registry.get_sample_value(REQUESTS_TOTAL, {**base, "outcome": "ok"}) == 0
    assert registry.get_sample_value(f"{REQUEST_DURATION}_count", base) in (None, 0)  # no batch ran
