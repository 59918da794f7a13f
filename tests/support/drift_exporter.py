"""Plays the model server's drift counters for one revision (as model_handlers/drift.py exports them): the
reference profile's bin counts as gauges, and each generated instance counted into its bin, from a normal
distribution whose mean a test moves to make inputs drift. The bins come from the core's own profile code."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge

from esteira.drift.profile import NumericFeature, numeric_feature

LABELS = ["namespace", "ModelName", "Revision"]


class DriftPlayer:
    """Adds `esteira_drift_*` series for `revision` to a registry and counts `rate` instances/s into them."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: tuple[str, str, str],
        features: tuple[str, ...] = ("sepal_length", "petal_length"),
        rate: float = 50.0,
        seed: int = 3,
    ) -> None:
        self.labels, self.rate, self.shift = labels, rate, 0.0
        self._random = random.Random(seed)
        reference = [self._random.gauss(0.0, 1.0) for _ in range(2000)]
        self.features: dict[str, NumericFeature] = {
            name: numeric_feature(name, reference, rows=len(reference)) for name in features
        }
        self.bins = Counter("esteira_drift_bin", "", [*LABELS, "feature", "bin"], registry=registry)
        self.instances = Counter("esteira_drift_instances", "", LABELS, registry=registry)
        reference_gauge = Gauge("esteira_drift_reference", "", [*LABELS, "feature", "bin"], registry=registry)
        for name, feature in self.features.items():
            for label, count in zip(feature.labels, feature.counts, strict=True):
                reference_gauge.labels(*labels, name, label).set(count)
                self.bins.labels(*labels, name, label)  # at zero, so increase() sees the first counts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._generate, daemon=True)

    def _generate(self, tick: float = 0.1) -> None:
        while not self._stop.wait(tick):
            for _ in range(round(self.rate * tick)):
                self.instances.labels(*self.labels).inc()
                for name, feature in self.features.items():
                    value = self._random.gauss(self.shift, 1.0)
                    self.bins.labels(*self.labels, name, feature.labels[feature.bin_of(value)]).inc()

    def start(self) -> DriftPlayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
