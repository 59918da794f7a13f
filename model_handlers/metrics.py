"""Handler metrics, emitted through TorchServe's own metrics system (``context.metrics``).

Why through TorchServe: the worker writes each update as a ``[METRICS]`` log line, the Java frontend parses it
and serves it on the metrics port, so no second HTTP server runs in the pod. The frontend only exports metrics
declared under ``model_metrics`` in the metrics config (``model_handlers/metrics.yaml``, wired with
``metrics_config=`` and ``metrics_mode=prometheus`` in config.properties); undeclared ones are dropped.

What TorchServe 0.12 exports on ``:8082/metrics`` (checked against a running server; values are floats, the
frontend appends a ``Hostname`` label, histograms use the Prometheus client's default buckets 0.005 ... 10):

``esteira_request_duration_seconds_bucket{ModelName,Revision,Hostname,le}``, ``..._sum``, ``..._count``
    Histogram: seconds each handler call took (parse, the shared forward pass, formatting), which every
    request in that batch spent in the handler. One observation per batch, not per request: each observation
    is a ``[METRICS]`` line the frontend parses again, and a batch of 8 identical ones cost more than the
    forward pass. So quantiles weigh batches, alike for every revision; request counts are in
    ``esteira_requests_total``. Frontend queueing is not included; it is in ``ts_queue_latency_microseconds``.
``esteira_requests_total{ModelName,Revision,outcome,Hostname}``
    Counter: requests by ``outcome`` = ``ok`` | ``client_error`` (4xx) | ``server_error`` (5xx).
``esteira_batch_size_bucket{ModelName,Revision,Hostname,le}``, ``..._sum``, ``..._count``
    Histogram: requests TorchServe put into one handler call; values above 1 mean dynamic batching worked.
``esteira_predictions_total{ModelName,Revision,class,Hostname}``
    Counter: predicted (top-1) class per answered instance, to compare canary and stable distributions.

``ModelName`` and ``Revision`` come from :meth:`model_handlers.config.ModelConfig.identity` (the operator sets
``ESTEIRA_MODEL_NAME`` and ``ESTEIRA_REVISION``). A failure to record a metric is logged, never raised: metrics
must not fail inference.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from ts.metrics.metric_type_enum import MetricTypes

from model_handlers.protocol import Identity

logger = logging.getLogger(__name__)

REQUEST_DURATION = "esteira_request_duration_seconds"
REQUESTS_TOTAL = "esteira_requests_total"
BATCH_SIZE = "esteira_batch_size"
PREDICTIONS_TOTAL = "esteira_predictions_total"

# name -> (type, unit, dimension names in the order metrics.yaml declares them)
DEFINITIONS: dict[str, tuple[MetricTypes, str, tuple[str, ...]]] = {
    REQUEST_DURATION: (MetricTypes.HISTOGRAM, "s", ("ModelName", "Revision")),
    BATCH_SIZE: (MetricTypes.HISTOGRAM, "count", ("ModelName", "Revision")),
    REQUESTS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "outcome")),
    PREDICTIONS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "class")),
}
# Characters that would break the worker's "[METRICS]name.unit:value|#dim:value,dim:value|..." log line.
_UNSAFE = re.compile(r"[,:|#\s]")


class Outcome(StrEnum):
    OK = "ok"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"

    @classmethod
    def of(cls, status: int) -> Outcome:
        if status < 400:
            return cls.OK
        return cls.CLIENT_ERROR if status < 500 else cls.SERVER_ERROR


def label_value(value: str) -> str:
    """A dimension value that survives TorchServe's metric log line format."""
    return _UNSAFE.sub("_", value)[:100] or "_"


class HandlerMetrics:
    """Records one handler call's metrics on a TorchServe metrics cache (None: recording is skipped)."""

    def __init__(self, identity: Identity) -> None:
        self.base = (label_value(identity.name), label_value(identity.revision))
        self._warned = False

    def record_batch(
        self,
        cache: Any,
        *,
        seconds: float,
        statuses: Iterable[int],
        predicted: Iterable[str],
        batch_size: int,
    ) -> None:
        if cache is None:
            return
        try:
            self._update(cache, REQUEST_DURATION, seconds)
            self._update(cache, BATCH_SIZE, batch_size)
            for outcome, count in Counter(Outcome.of(status) for status in statuses).items():
                self._update(cache, REQUESTS_TOTAL, count, outcome.value)
            for label, count in Counter(predicted).items():
                self._update(cache, PREDICTIONS_TOTAL, count, label_value(label))
        except Exception:  # never let metrics break an answer
            if not self._warned:
                logger.exception("recording Esteira metrics failed; inference goes on")
                self._warned = True

    def _update(self, cache: Any, name: str, value: float, *extra: str) -> None:
        metric_type, unit, dimensions = DEFINITIONS[name]
        try:
            metric = cache.get_metric(name, metric_type)
        except Exception:  # not declared in the metrics config: declare it on the fly
            metric = cache.add_metric_to_cache(name, unit, list(dimensions), metric_type)
        metric.add_or_update(value, [*self.base, *extra])
