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
    Counter: requests by ``outcome`` = ``ok`` | ``client_error`` (4xx) | ``server_error`` (5xx), each
    written at 0 when the model loads so ``increase()`` counts a new revision's first errors.
``esteira_batch_size_bucket{ModelName,Revision,Hostname,le}``, ``..._sum``, ``..._count``
    Histogram: requests TorchServe put into one handler call; values above 1 mean dynamic batching worked.
``esteira_predictions_total{ModelName,Revision,class,Hostname}``
    Counter: predicted (top-1) class per answered instance, to compare canary and stable distributions.

In a pod the front serves this exposition on the metrics port with series of its own added
(:mod:`esteira.packaging.front_metrics`): ``esteira_requests_total{answered_by="server"}``, the errors TorchServe
answered without the handler, and ``esteira_server_request_duration_seconds{ModelName,Revision,Hostname,le}``,
each request's time from its arrival to its answer, TorchServe's queue and batch delay included, which the
canary analysis' latency reads (esteira-kserve's inference routes observe the same family).

``ModelName`` and ``Revision`` come from :meth:`model_handlers.config.ModelConfig.identity` (the operator sets
``ESTEIRA_MODEL_NAME`` and ``ESTEIRA_REVISION``). A failure to record a metric is logged, never raised: metrics
must not fail inference.

Metrics are written at most every ``FLUSH_SECONDS`` (:class:`MetricBuffer`), all pending lines in one log
record: counters summed per series, so under load a series costs one ``[METRICS]`` line a second instead of
one per batch, with the same totals; histogram observations each as its own line (TorchServe's line format
cannot sum them), so every batch is still observed, only the logging call per batch is gone. Observations are
also written whenever ``OBSERVATIONS_PER_WRITE`` of them are held, so no write is big enough to fill the pipe
to the frontend and stall the worker (busy batch-1 workers write about every tenth of a second). A batch after a
quiet second writes at once; otherwise a background thread writes what is pending when the second is up, so
nothing waits for the next request. What a worker had not yet written when it is killed (at most a second of
metrics) is lost. A metrics cache that can run code when it is scraped offers ``on_collect``: esteira-kserve's
``prometheus_client`` registry (``model_handlers.inprocess``) flushes the buffer at the start of every scrape,
so what it exports is exact while batches still only add in memory.

Every counter is summed in a :class:`Tally`, a list of series by slot: a batch adds one mapping (or, for a
wide model's drift bins, one array) of counts, and series become updates only when written. Counts that cost
less to compute for many batches at once than for each (drift's bins: a fixed cost per pass) are deferred
(:meth:`MetricBuffer.defer`): the batch's values are held and counted, all together, just before the write.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np
from ts.metrics.caching_metric import CachingMetric
from ts.metrics.metric_type_enum import MetricTypes

from esteira.vocabulary import LATENCY_TOP_SECONDS, series_label
from model_handlers.protocol import Identity

logger = logging.getLogger(__name__)
_TS_METRICS_LOG = logging.getLogger(CachingMetric.__module__)  # where TorchServe's worker writes metric lines

REQUEST_DURATION = "esteira_request_duration_seconds"
REQUESTS_TOTAL = "esteira_requests_total"
BATCH_SIZE = "esteira_batch_size"
PREDICTIONS_TOTAL = "esteira_predictions_total"
# Each request's time in the model server, from its arrival to its answer (queueing, batching and the handler):
# observed by the server in front of the handler (the pod's front under TorchServe, esteira-kserve's inference
# routes), since TorchServe's queue is out of the handler's sight. The canary analysis' latency reads it.
SERVER_REQUEST_DURATION = "esteira_server_request_duration_seconds"
SERVER_REQUEST_DURATION_HELP = "Seconds from a request's arrival at the model server to its answer"
# Requests a model server held and did not run because their callers had closed the connection meanwhile (in
# esteira-kserve's batcher, in the pod's front before TorchServe): no answer could reach them. Exported with
# ``_total``, as a counter.
ABANDONED_REQUESTS = "esteira_abandoned_requests"
ABANDONED_REQUESTS_HELP = "Requests not run because their callers left while they waited"
# Prometheus' default buckets with three below 5 ms, where a small model answers.
SERVER_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    LATENCY_TOP_SECONDS,
)
FLUSH_SECONDS = 1.0
# Histogram lines held between writes, at most: each is a line TorchServe's frontend parses, and a second's worth
# of them written at once (2,300 lines at batch 1) filled the worker's stdout pipe and stalled its serving
# thread behind it: p99 at one caller 15-25 ms, against 4.5-6.3 ms written this many at a time.
OBSERVATIONS_PER_WRITE = 200
# Values held for a deferred count between writes, at most; past it they are counted at once (memory stays small
# whatever the rate: a quarter of a mebibyte of float32).
DEFERRED_VALUES = 65_536

# name -> (type, unit, dimension names in the order metrics.yaml declares them)
Definition = tuple[MetricTypes, str, tuple[str, ...]]
DEFINITIONS: dict[str, Definition] = {
    REQUEST_DURATION: (MetricTypes.HISTOGRAM, "s", ("ModelName", "Revision")),
    BATCH_SIZE: (MetricTypes.HISTOGRAM, "count", ("ModelName", "Revision")),
    REQUESTS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "outcome")),
    PREDICTIONS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "class")),
}


class Outcome(StrEnum):
    """A request's outcome by its status: below 400, 4xx, 5xx (in this order: ``HandlerMetrics`` slots 0-2)."""

    OK = "ok"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"


def outcome_slot(status: int) -> int:
    """The slot of a status's outcome in ``HandlerMetrics``' tally: Outcome's order."""
    return 0 if status < 400 else 1 if status < 500 else 2


Update = tuple[str, Definition, float, Sequence[str]]  # metric name, its definition, value, label values
Series = tuple[str, Definition, Sequence[str]]  # metric name, its definition, label values
Counts = Mapping[int, float] | np.ndarray  # a Tally's counts by series index
DeferredCount = Callable[[list[Any]], Counts]  # held items (each one batch's values) -> their counts, in one pass


def write_metrics(cache: Any, updates: Sequence[Update]) -> None:
    """Updates on a metrics cache, declaring a metric the config lacks. TorchServe's metrics are written as the
    lines its ``CachingMetric.emit_metrics`` writes, all of them in one log record: the frontend reads them
    line by line as ever, and the worker pays one logging call instead of one per line. An update the cache
    refuses is skipped and its error raised after the others are written."""
    direct = getattr(cache, "write_update", None)  # a registry in this process (esteira-kserve's): no lines or lookups
    lines = []
    stamp = ""  # hostname and time, for TorchServe's lines only
    failure: Exception | None = None
    for name, (metric_type, unit, dimensions), value, labels in updates:
        try:
            if direct is not None:
                direct(name, value, labels)
                continue
            try:
                metric = cache.get_metric(name, metric_type)
            except Exception:  # not declared in the metrics config: declare it on the fly
                metric = cache.add_metric_to_cache(name, unit, list(dimensions), metric_type)
            if isinstance(metric, CachingMetric):
                stamp = stamp or f"{socket.gethostname()},{int(time.time())}"
                lines.append(metric_line(metric, value, labels, stamp))
            else:
                metric.add_or_update(value, list(labels))
        except Exception as error:  # a metric the cache cannot take must not cost the others theirs
            failure = failure or error
    if lines:
        _TS_METRICS_LOG.info("\n".join(lines))
    if failure is not None:
        raise failure


def metric_line(metric: CachingMetric, value: float, labels: Sequence[str], stamp: str) -> str:
    """The ``[METRICS]`` line TorchServe 0.12's ``CachingMetric`` writes for an update without a request id;
    ``stamp`` is its ``hostname,epoch seconds`` tail."""
    dimensions = ",".join(f"{name}:{label}" for name, label in zip(metric.dimension_names, labels, strict=True))
    return (
        f"[METRICS]{metric.metric_name}.{metric.unit}:{value}|#{dimensions}|#type:{metric.metric_type.name}"
        f"|#hostname:{stamp}"
    )


class Tally:
    """Increments of a list of counter series, by slot: a batch adds its counts (one per slot, as an array, or as
    a mapping of the few slots it touched) and series become updates only when written. Drift's bins are up to
    thousands of series, many of which a wide model's batch touches; a handler's outcomes and classes a few.
    Arrays are summed as arrays, mappings in a dict: each the cheap way for its size."""

    def __init__(self, series: Sequence[Series] = ()) -> None:
        self.series = [(name, definition, tuple(labels)) for name, definition, labels in series]
        self._dense: np.ndarray | None = None
        self._sparse: dict[int, float] = {}

    def slot(self, series: Series) -> int:
        """A slot for one more series. Only mappings may count it: an array covers the slots there were when it
        was made."""
        name, definition, labels = series
        self.series.append((name, definition, tuple(labels)))
        return len(self.series) - 1

    def add(self, counts: Counts) -> None:
        if isinstance(counts, np.ndarray):
            if self._dense is None:
                self._dense = counts.astype(np.float64)  # a copy: the caller's array stays the caller's
            else:
                self._dense += counts
            return
        sparse = self._sparse
        for index, n in counts.items():
            sparse[index] = sparse.get(index, 0) + n

    def take(self) -> tuple[np.ndarray | None, dict[int, float]]:
        """What was added since the last take; a swap, so cheap under a lock."""
        taken = self._dense, self._sparse
        self._dense, self._sparse = None, {}
        return taken

    def updates(self, counts: Counts, more: Mapping[int, float] | None = None) -> list[Update]:
        """``counts`` and ``more`` added up, as one update per series with a nonzero count."""
        if isinstance(counts, np.ndarray):
            counts = {index: float(counts[index]) for index in np.flatnonzero(counts).tolist()}
        if more:
            counts = dict(counts)
            for index, n in more.items():
                counts[index] = counts.get(index, 0) + n
        series = self.series
        return [(*series[index][:2], _number(n), series[index][2]) for index, n in counts.items() if n]


class MetricBuffer:
    """Metric updates held for one write at most every ``interval`` (see the module docstring): counter
    increments summed per series in tallies, histogram observations kept one by one in order.

    ``add`` and ``flush_due`` run on the serving thread; one daemon thread, started with the first deferred
    write, writes what is pending once its interval is up. A cache that is read on demand has :meth:`flush`
    called before each read instead of waiting (``on_collect``).
    """

    def __init__(self, interval: float = FLUSH_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._observations: list[Update] = []
        self._tallies: dict[int, Tally] = {}  # those with pending counts, by identity
        self._deferred: dict[int, tuple[Tally, DeferredCount, list[Any]]] = {}  # held items, by tally identity
        self._deferred_values = 0
        self._cache: Any = None
        self._last_flush = -math.inf
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._warned = False

    def add(self, cache: Any, tally: Tally, counts: Counts, observations: Sequence[Update] = ()) -> None:
        """Add a batch's counts to ``tally``'s series, and keep its histogram observations, each to be written as
        its own line: at once when ``OBSERVATIONS_PER_WRITE`` are held (counters keep their interval: summed,
        they do not pile up)."""
        with self._lock:
            tally.add(counts)
            self._tallies[id(tally)] = tally
            self._cache = cache
            held = self._observations
            held += observations
            if len(held) < OBSERVATIONS_PER_WRITE:
                return
            self._observations = []
        self._write_now(cache, held)

    def defer(self, cache: Any, tally: Tally, item: Any, values: int, count: DeferredCount) -> None:
        """Hold ``item`` (one batch's ``values`` values) until the next write, when ``count`` turns every item held
        for ``tally`` into counts in one pass. The item must not change meanwhile (pass a copy)."""
        with self._lock:
            held = self._deferred.get(id(tally))
            if held is None:
                held = self._deferred[id(tally)] = (tally, count, [])
            held[2].append(item)
            self._cache = cache
            self._deferred_values += values
            if self._deferred_values < DEFERRED_VALUES:
                return
        self._count_deferred()

    def _count_deferred(self) -> None:
        """Turn every held item into counts in its tally (the counting outside the lock: the serving thread
        only waits for the swap)."""
        with self._lock:
            deferred, self._deferred, self._deferred_values = list(self._deferred.values()), {}, 0
        if not deferred:
            return
        counted = []
        for tally, count, items in deferred:
            try:
                counted.append((tally, count(items)))
            except Exception:  # never let metrics break an answer
                if not self._warned:
                    logger.exception("counting deferred Esteira metrics failed; inference goes on")
                    self._warned = True
        with self._lock:
            for tally, counts in counted:
                tally.add(counts)
                self._tallies[id(tally)] = tally

    def flush_due(self) -> None:
        """Write now if the last write is an interval old; else leave it to the flusher thread."""
        if not self._observations and not self._tallies and not self._deferred:
            return
        if self._clock() - self._last_flush >= self.interval:
            self.flush()
            return
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="esteira-metrics", daemon=True)
            self._flusher.start()
        self._wake.set()

    def flush(self) -> None:
        """Write everything pending now, in one log record."""
        self._count_deferred()
        with self._lock:
            observations, self._observations = self._observations, []
            tallied = [(tally, tally.take()) for tally in self._tallies.values()]
            self._tallies = {}
            cache = self._cache
            self._last_flush = self._clock()
        if not observations and not tallied:
            return
        counters: list[Update] = []
        for tally, (dense, sparse) in tallied:
            counters += tally.updates(sparse) if dense is None else tally.updates(dense, sparse)
        self._write_now(cache, observations + counters)

    def _write_now(self, cache: Any, updates: Iterable[Update]) -> None:
        try:
            write_metrics(cache, list(updates))
        except Exception:  # never let metrics break an answer
            if not self._warned:
                logger.exception("writing Esteira metrics failed; inference goes on")
                self._warned = True

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(max(0.0, self._last_flush + self.interval - self._clock()))
            self.flush()


def _number(value: float) -> float:
    """Whole counts as integers, so a line reads ``:3`` as it did when each batch wrote its own."""
    return int(value) if float(value).is_integer() else value


class HandlerMetrics:
    """Records one handler call's metrics on a TorchServe metrics cache (None: recording is skipped)."""

    def __init__(self, identity: Identity, buffer: MetricBuffer | None = None) -> None:
        self.base = (series_label(identity.name), series_label(identity.revision))
        self.buffer = buffer or MetricBuffer()
        # The requests counter's series in Outcome's order (slots 0, 1, 2), then each predicted class at first sight.
        self.tally = Tally([(REQUESTS_TOTAL, DEFINITIONS[REQUESTS_TOTAL], (*self.base, o.value)) for o in Outcome])
        self._class_slots: dict[str, int] = {}
        self._warned = False

    def publish(self, cache: Any, classes: Sequence[str] = ()) -> None:
        """Every outcome's request counter, and every class's prediction counter, at zero, written at load:
        ``increase()`` over a series that appears with its first count misses that count and every other until
        the series' second sample, so the dashboards, the alerts and any custom check written with it would miss
        a canary's first errors and first predictions. (The canary analysis' own window counts take a series born
        inside the window whole.)"""
        for label in classes:
            self._class_slot(label)
        if cache is None:
            return
        try:
            write_metrics(cache, [(name, definition, 0, labels) for name, definition, labels in self.tally.series])
        except Exception:  # never let metrics break loading
            logger.exception("publishing the request and prediction counters failed; inference goes on")

    def _class_slot(self, label: str) -> int:
        slot = self._class_slots.get(label)
        if slot is None:
            series = (PREDICTIONS_TOTAL, DEFINITIONS[PREDICTIONS_TOTAL], (*self.base, series_label(label)))
            slot = self._class_slots[label] = self.tally.slot(series)
        return slot

    def record_refused(self, cache: Any, status: int) -> None:
        """A request the server refused before any handler saw it (its model past its response timeout, a 503;
        a body over the limit, a 413), so the canary analysis and the alerts count what its callers got."""
        if cache is None:
            return
        try:
            self.buffer.add(cache, self.tally, {outcome_slot(status): 1}, ())
        except Exception:  # never let metrics break an answer
            logger.exception("recording a refused request failed")
        self.buffer.flush_due()

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
            counts: dict[int, float] = {}
            for status in statuses:
                outcome = outcome_slot(status)
                counts[outcome] = counts.get(outcome, 0) + 1
            classes = self._class_slots
            for label in predicted:
                slot = classes.get(label)
                if slot is None:
                    slot = self._class_slot(label)
                counts[slot] = counts.get(slot, 0) + 1
            self.buffer.add(
                cache,
                self.tally,
                counts,
                (
                    (REQUEST_DURATION, DEFINITIONS[REQUEST_DURATION], seconds, self.base),
                    (BATCH_SIZE, DEFINITIONS[BATCH_SIZE], batch_size, self.base),
                ),
            )
        except Exception:  # never let metrics break an answer
            if not self._warned:
                logger.exception("recording Esteira metrics failed; inference goes on")
                self._warned = True
        self.buffer.flush_due()
