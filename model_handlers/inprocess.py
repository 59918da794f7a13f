"""Esteira's handler without TorchServe: a packaged model loaded in this process and batches run through the
very same ``EsteiraHandler.handle`` TorchServe calls.

Why through ``handle`` and not around it: parsing, validation, per-request errors, metrics, drift counting and
inference logging all hang off that one method, so a second runtime that called the pieces itself would drift
from the first. Here the handler gets a real ``ts.context.Context`` (request headers in, statuses and headers
out), kept for the model's life with each batch's requests set on it, as TorchServe's worker does; metrics go
to ``prometheus_client`` instead of TorchServe's ``[METRICS]`` log lines (:class:`PrometheusMetrics`), with the
same names and labels.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import secrets
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.registry import Collector
from ts.context import Context
from ts.metrics.metric_type_enum import MetricTypes

from esteira.packaging.config import CONFIG_PATH, MODEL_STORE, RESPONSE_TIMEOUT_SECONDS, parse_properties
from esteira.packaging.log_flush import FLUSH_SECONDS
from model_handlers.base import EsteiraHandler, answer_from, processor_for
from model_handlers.config import load_config
from model_handlers.drift import DEFINITIONS as DRIFT_DEFINITIONS
from model_handlers.image import ImageClassifierHandler
from model_handlers.inference_log import DEFINITIONS as LOG_DEFINITIONS
from model_handlers.messages import Answer, RawRequest
from model_handlers.metrics import DEFINITIONS
from model_handlers.tabular import TabularHandler

logger = logging.getLogger(__name__)

HANDLERS: dict[str, type[EsteiraHandler]] = {"tabular": TabularHandler, "image": ImageClassifierHandler}
MANIFEST = "MAR-INF/MANIFEST.json"
SERVER_VERSION = "esteira-kserve"


@dataclass(frozen=True)
class PackagedModel:
    """What ``esteira package`` wrote: the model's URL name, its version, batching, the archive, and how long a
    batch may take (``responseTimeout``, as TorchServe reads it)."""

    name: str
    version: str
    batch_size: int
    archive: Path
    response_timeout: int = RESPONSE_TIMEOUT_SECONDS  # seconds


def packaged_model(model_dir: Path) -> PackagedModel:
    """The first model of ``config/config.properties``'s snapshot (the folder layout KServe mounts)."""
    properties = parse_properties((model_dir / CONFIG_PATH).read_text())
    models = json.loads(properties.get("model_snapshot") or "{}").get("models") or {}
    if not models:
        raise RuntimeError(f"{model_dir / CONFIG_PATH}: model_snapshot lists no models")
    name, versions = next(iter(models.items()))
    version, entry = next(iter(versions.items()))
    archive = model_dir / MODEL_STORE / str(entry.get("marName", f"{name}.mar"))
    timeout = str(entry.get("responseTimeout", properties.get("default_response_timeout", RESPONSE_TIMEOUT_SECONDS)))
    if not timeout.isdigit() or int(timeout) < 1:
        raise RuntimeError(f"{model_dir / CONFIG_PATH}: responseTimeout must be a positive integer, got {timeout!r}")
    return PackagedModel(str(name), str(version), int(entry.get("batchSize", 1)), archive, int(timeout))


def unpack(archive: Path, into: Path) -> Path:
    """The archive's files in a directory (an unpacked archive is used where it is)."""
    if archive.is_dir():
        return archive
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(into)
    return into


_CLASSES: dict[MetricTypes, Callable[..., Histogram | Counter | Gauge]] = {
    MetricTypes.HISTOGRAM: Histogram,
    MetricTypes.COUNTER: Counter,
    # The handler's gauges hold the reference profile's counts, the same in every worker of a multi-process
    # server (model_handlers.workers): a scrape that adds the workers up shows one worker's value.
    MetricTypes.GAUGE: functools.partial(Gauge, multiprocess_mode="max"),
}


class _Series:
    """One metric as the handler updates it: ``add_or_update(value, dimension values)``, TorchServe's meaning
    (a histogram observes, a counter adds, a gauge is set)."""

    def __init__(self, metric: Histogram | Counter | Gauge) -> None:
        self.metric = metric
        # label values -> the child's update method: ``labels()`` validates and locks on every call, and the
        # handler writes the same few series every batch
        self._updates: dict[tuple[str, ...], Callable[[float], None]] = {}

    def add_or_update(self, value: float, dimension_values: Sequence[str]) -> None:
        key = tuple(dimension_values)  # the same tuple when it is one
        update = self._updates.get(key)
        if update is None:
            series = self.metric.labels(*key)
            if isinstance(series, Histogram):
                update = series.observe
            elif isinstance(series, Gauge):
                update = series.set
            else:
                update = series.inc
            self._updates[key] = update
        update(value)


class _FlushFirst(Collector):
    """A collector that exports nothing and runs the flush hooks: registered first, it runs before the metrics
    are read (``CollectorRegistry.collect`` goes through collectors in the order they were registered)."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self.hooks = hooks

    def collect(self) -> Iterable[Metric]:
        for flush in self.hooks:
            flush()
        return []

    def describe(self) -> Iterable[Metric]:
        return []


class PrometheusMetrics:
    """TorchServe's metrics-cache interface over ``prometheus_client``, for every metric Esteira's handler records:
    its own, the drift and data-quality series (:mod:`model_handlers.drift`) and the inference log's dropped
    records (:mod:`model_handlers.inference_log`), as TorchServe exports them.
    The handler's buffer (:class:`model_handlers.metrics.MetricBuffer`) holds a batch's updates as sums in memory
    and is flushed at the start of every scrape (``on_collect``), so a scrape sees every batch that ended before
    it without each batch paying for the registry's updates."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._before_collect: list[Callable[[], None]] = []
        registry.register(self.flusher())  # before the metrics: a scrape runs it first
        self.series: dict[str, _Series] = {}
        for name, (metric_type, _, dimensions) in (DEFINITIONS | DRIFT_DEFINITIONS | LOG_DEFINITIONS).items():
            metric = _CLASSES[metric_type](name, f"Esteira {name}", list(dimensions), registry=registry)
            self.series[name] = _Series(metric)

    def flusher(self) -> Collector:
        """A collector that exports nothing and runs the flush hooks: registered first in a registry, it runs
        before that registry's metrics are read."""
        return _FlushFirst(self._before_collect)

    def on_collect(self, flush: Callable[[], None]) -> None:
        """Run ``flush`` at the start of every scrape of the registry."""
        self._before_collect.append(flush)

    def get_metric(self, name: str, metric_type: MetricTypes) -> _Series:
        return self.series[name]

    def write_update(self, name: str, value: float, labels: Sequence[str]) -> None:
        """TorchServe's ``add_or_update`` on metric ``name``, without the cache lookup: what
        :func:`model_handlers.metrics.write_metrics` calls for every update (a name TorchServe's caches lack)."""
        self.series[name].add_or_update(value, labels)


class InProcessHandler:
    """An initialized Esteira handler and what each batch's context needs."""

    def __init__(self, model_dir: Path, work: Path, metrics: PrometheusMetrics | None) -> None:
        self.packaged = packaged_model(model_dir)
        self.files = unpack(self.packaged.archive, work / self.packaged.name)
        self.manifest = json.loads((self.files / MANIFEST).read_text())
        self.metrics = metrics
        self.handler = HANDLERS[load_config(self.files).kind]()
        # An eager model's code (``esteira package --model-code``) is imported by its module's name, as in
        # TorchServe's worker, whose PYTHONPATH starts with the model's folder.
        if str(self.files) not in sys.path:
            sys.path.insert(0, str(self.files))
        # One context for the model's life, as TorchServe's worker keeps one (``ts.service.Service``) and
        # sets each batch's requests on it.
        self.context = Context(
            self.packaged.name,
            str(self.files),
            self.manifest,
            max(self.packaged.batch_size, 1),
            None,
            SERVER_VERSION,
            metrics=self.metrics,
            model_yaml_config={},
        )
        self.handler.initialize(self.context)
        # Request ids as long as a uuid4's hex: 64 random bits for this process, then a serial number (the
        # random number generator costs a system call per draw).
        self._id_prefix = secrets.token_hex(8)
        self._serial = itertools.count()

    def flush_log(self) -> None:
        """Send the inference records queued so far, for at most ``FLUSH_SECONDS`` (a process about to end)."""
        if self.handler.inference_log is not None:
            self.handler.inference_log.outbox.flush(FLUSH_SECONDS)

    def refused(self, status: int) -> None:
        """Count a request the server refused before the handler saw it, as the handler counts its errors."""
        if self.handler.recorder is not None:
            self.handler.recorder.record_refused(self.metrics, status)

    def run(self, requests: Sequence[RawRequest]) -> list[Answer]:
        """One call of ``handle`` for the whole batch; one answer per request, in order."""
        context = self.context
        processors = context.request_processor = [processor_for(request.headers) for request in requests]
        context.request_ids = {idx: f"{self._id_prefix}{next(self._serial):016x}" for idx in range(len(requests))}
        results = self.handler.handle([{"body": request.body} for request in requests], context)
        return [answer_from(processor, result) for processor, result in zip(processors, results, strict=True)]
