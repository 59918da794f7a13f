"""Input counting for drift and data quality, inside the model server, on the reference profile's fixed bins.

Why counters on fixed bins: they add up across batches, workers, replicas and time, so the window is a
Prometheus query (``increase(...[1h])``) and the server keeps no state but the profile. The operator and
``esteira up`` judge the counts with ``esteira.drift.evaluate``; the handler only bins and counts.

What is exported through TorchServe's metrics (declared in ``metrics.yaml``):

``esteira_drift_bin_total{ModelName,Revision,feature,bin}``
    Counter: instances whose feature fell in the bin (labels from ``esteira.drift.profile``).
``esteira_drift_reference{ModelName,Revision,feature,bin}``
    Gauge: the profile's count in that bin, so whoever reads the live counters has the reference too.
``esteira_drift_reference_predictions{ModelName,Revision,class}``
    Gauge: the profile's predicted-class counts (compare with ``esteira_predictions_total``).
``esteira_drift_instances_total{ModelName,Revision}``
    Counter: instances counted (the denominator of the violation rates).
``esteira_data_quality_violations_total{ModelName,Revision,feature,kind}``
    Counter: ``missing`` (NaN), ``out_of_range`` (outside the profile's min..max), ``unknown_category``.
    Requests with a missing feature or a value of the wrong type never reach the model: the protocol
    refuses them with a 400, counted as ``esteira_requests_total{outcome="client_error"}``.
``esteira_drift_capped_total{ModelName,Revision}``
    Counter: instances whose features beyond the series cap were not counted.

Bounded cardinality: at most ``SERIES_CAP`` (features x bins) bin series per revision and server, set by
``ESTEIRA_DRIFT_SERIES_CAP``; features are taken in profile order until the next one would pass the cap, the
rest are left out (logged once at load, and counted in ``esteira_drift_capped_total``). Bins per feature are
capped by the profile itself (32 numeric, 32 categories + one for the rest).

Image models are profiled on cheap per-image statistics of the decoded pixels in 0..1: ``brightness``
(mean) and ``contrast`` (standard deviation). A failure to count is logged, never raised. The counters are
summed in the worker and written at most once a second per series, like the handler's own counters
(:class:`model_handlers.metrics.MetricBuffer`): the same totals, for a handful of lines a second.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from ts.metrics.metric_type_enum import MetricTypes

from esteira.drift.profile import (
    MAX_BINS,
    PROFILE_FILE,
    CategoricalFeature,
    NumericFeature,
    ReferenceProfile,
)
from model_handlers.config import ModelConfig
from model_handlers.metrics import Definition, MetricBuffer, Tally, Update, label_value, write_metrics
from model_handlers.protocol import Identity

logger = logging.getLogger(__name__)

BINS_TOTAL = "esteira_drift_bin_total"
REFERENCE = "esteira_drift_reference"
REFERENCE_PREDICTIONS = "esteira_drift_reference_predictions"
INSTANCES_TOTAL = "esteira_drift_instances_total"
VIOLATIONS_TOTAL = "esteira_data_quality_violations_total"
CAPPED_TOTAL = "esteira_drift_capped_total"
SERIES_CAP = 4096
ARRAY_VALUES = 64  # values in a batch (instances x tracked features) above which counting uses arrays
ENV_SERIES_CAP = "ESTEIRA_DRIFT_SERIES_CAP"
IMAGE_FEATURES = ("brightness", "contrast")

DEFINITIONS: dict[str, Definition] = {
    BINS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "feature", "bin")),
    REFERENCE: (MetricTypes.GAUGE, "count", ("ModelName", "Revision", "feature", "bin")),
    REFERENCE_PREDICTIONS: (MetricTypes.GAUGE, "count", ("ModelName", "Revision", "class")),
    INSTANCES_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision")),
    VIOLATIONS_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision", "feature", "kind")),
    CAPPED_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision")),
}
Feature = NumericFeature | CategoricalFeature


def series_cap(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(ENV_SERIES_CAP, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else SERIES_CAP


def category_of(value: float) -> str:
    """How a number sent for a categorical feature is matched against the profile's category names."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class DriftCounter:
    """Bins rows of feature values and records the counts; one per loaded model."""

    def __init__(self, profile: ReferenceProfile, columns: Sequence[str], identity: Identity, cap: int) -> None:
        self.profile = profile
        self.base = (label_value(identity.name), label_value(identity.revision))
        index = {name: i for i, name in enumerate(columns)}
        self.tracked: list[tuple[int, Feature, tuple[str, ...]]] = []
        self.left_out: list[str] = []
        used = 0
        for feature in profile.features:
            if feature.name not in index:
                continue
            labels = tuple(label_value(label) for label in feature.labels)
            if used + len(labels) > cap or self.left_out:
                self.left_out.append(feature.name)
                continue
            used += len(labels)
            self.tracked.append((index[feature.name], feature, labels))
        self.series = used
        self.names = {feature.name: label_value(feature.name) for _, feature, _ in self.tracked}
        # Every tracked bin is a slot of one array, feature after feature in profile order: a batch adds its
        # counts to the slots (:class:`model_handlers.metrics.Tally`), and series are built only when written.
        offsets = list(accumulate((len(labels) for _, _, labels in self.tracked), initial=0))
        self.slots = [
            (column, feature, offset) for (column, feature, _), offset in zip(self.tracked, offsets, strict=False)
        ]
        self.slot_bins = [(feature.name, label) for _, feature, labels in self.tracked for label in labels]
        self.bin_tally = Tally(
            BINS_TOTAL,
            DEFINITIONS[BINS_TOTAL],
            [(*self.base, self.names[feature], label) for feature, label in self.slot_bins],
        )
        self.numeric = NumericBins.of(self.slots)
        self.categorical = [slot for slot in self.slots if isinstance(slot[1], CategoricalFeature)]
        self._warned = False

    @classmethod
    def load(cls, model_dir: str | Path, config: ModelConfig, identity: Identity) -> DriftCounter | None:
        """The counter for the profile beside the model; None (and a log line) without a usable profile."""
        path = Path(model_dir) / PROFILE_FILE
        if not path.is_file():
            logger.info("no %s beside the model: drift and data quality are not counted", PROFILE_FILE)
            return None
        try:
            profile = ReferenceProfile.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as error:
            logger.error("%s is unusable, drift is not counted: %s", PROFILE_FILE, error)
            return None
        if config.kind == "image":
            columns: Sequence[str] = IMAGE_FEATURES
        else:
            columns = config.feature_names or tuple(f"feature_{i}" for i in range(config.features))
        counter = cls(profile, columns, identity, series_cap())
        if counter.left_out:
            logger.warning(
                "drift series cap %d reached: %d feature(s) not counted, from %r",
                series_cap(),
                len(counter.left_out),
                counter.left_out[0],
            )
        return counter

    # -- values ---------------------------------------------------------------------------------------------

    def rows(self, batch: torch.Tensor, config: ModelConfig) -> torch.Tensor:
        """Feature values per instance, [instances, columns] on the CPU: the tabular row, or an image's
        statistics in 0..1 pixel units."""
        if config.kind != "image":
            flat = batch if batch.dim() == 2 else batch.reshape(batch.shape[0], -1)
            return flat.detach().cpu()
        pixels = batch.float()
        if config.std is not None:
            pixels = pixels * torch.tensor(config.std).view(1, -1, 1, 1)
        if config.mean is not None:
            pixels = pixels + torch.tensor(config.mean).view(1, -1, 1, 1)
        spread, level = torch.std_mean(pixels.reshape(pixels.shape[0], -1), dim=1, correction=0)
        return torch.stack([level, spread], dim=1).detach().cpu()

    def count(
        self, rows: torch.Tensor | Sequence[Sequence[float]]
    ) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """(bin counts, violation counts) of a batch, keyed by (feature, bin) and (feature, kind)."""
        slots, violations = self._count(torch.as_tensor(rows, dtype=torch.float64))
        counts = (
            slots.items() if isinstance(slots, Mapping) else ((i, slots[i]) for i in np.flatnonzero(slots).tolist())
        )
        return Counter({self.slot_bins[slot]: int(n) for slot, n in counts if n}), violations

    def _count(self, rows: torch.Tensor) -> tuple[Mapping[int, int] | np.ndarray, Counter[tuple[str, str]]]:
        """Counts per slot and violations of a batch ([instances, columns]). A few values take a step each in
        Python; more go through array operations, whose fixed cost (about 30 us) a Python step per value
        passes beyond ``ARRAY_VALUES`` values, and which are 10-30x faster for a wide model's batch."""
        violations: Counter[tuple[str, str]] = Counter()
        if rows.dim() != 2 or not len(rows):
            return {}, violations
        if rows.shape[0] * len(self.slots) <= ARRAY_VALUES or self.numeric is None:
            return self._count_values(rows.tolist(), self.slots, violations), violations
        values = rows.double().numpy()
        counts = self.numeric.count(values, violations, self.series)
        if self.categorical:
            for slot, n in self._count_values(values.tolist(), self.categorical, violations).items():
                counts[slot] += n
        return counts, violations

    @staticmethod
    def _count_values(
        rows: list[list[float]], slots: Sequence[tuple[int, Feature, int]], violations: Counter[tuple[str, str]]
    ) -> Counter[int]:
        counts: Counter[int] = Counter()
        for row in rows:
            for column, feature, offset in slots:
                value = row[column]
                if math.isnan(value):
                    violations[(feature.name, "missing")] += 1
                    continue
                if isinstance(feature, NumericFeature):
                    if value < feature.min or value > feature.max:
                        violations[(feature.name, "out_of_range")] += 1
                    counts[offset + feature.bin_of(value)] += 1
                    continue
                position = feature.bin_of(category_of(value))
                if position is None:
                    violations[(feature.name, "unknown_category")] += 1
                    position = len(feature.labels) - 1
                counts[offset + position] += 1
        return counts

    # -- recording ------------------------------------------------------------------------------------------

    def publish(self, cache: Any) -> None:
        """The reference gauges, and every bin counter at zero so `increase()` sees the first counts."""
        if cache is None:
            return
        updates: list[Update] = []
        for _, feature, labels in self.tracked:
            name = self.names[feature.name]
            for label, count in zip(labels, feature.counts, strict=True):
                updates.append(self._update(REFERENCE, count, name, label))
                updates.append(self._update(BINS_TOTAL, 0, name, label))
        predictions = self.profile.predictions
        if predictions is not None and predictions.labels is not None:
            for cls, count in zip(predictions.labels, predictions.counts, strict=True):
                updates.append(self._update(REFERENCE_PREDICTIONS, count, label_value(cls)))
        updates.append(self._update(INSTANCES_TOTAL, 0))
        try:
            write_metrics(cache, updates)
        except Exception:
            logger.exception("publishing the drift reference failed; inference goes on")

    def observe(self, cache: Any, batch: torch.Tensor, config: ModelConfig, buffer: MetricBuffer) -> None:
        """Count one batch of preprocessed inputs (the tensor that goes to the model) into ``buffer``, which
        write each series' sum at most once a second (:class:`model_handlers.metrics.MetricBuffer`)."""
        if cache is None or batch.shape[0] == 0:
            return
        try:
            slots, violations = self._count(self.rows(batch, config))
            buffer.add_counts(cache, self.bin_tally, slots)
            instances = int(batch.shape[0])
            updates = [self._update(INSTANCES_TOTAL, instances)]
            updates += [
                self._update(VIOLATIONS_TOTAL, n, self.names[feature], kind)
                for (feature, kind), n in violations.items()
            ]
            if self.left_out:
                updates.append(self._update(CAPPED_TOTAL, instances))
            buffer.add(cache, updates)
        except Exception:
            if not self._warned:
                logger.exception("counting drift failed; inference goes on")
                self._warned = True

    def _update(self, name: str, value: float, *extra: str) -> Update:
        return (name, DEFINITIONS[name], value, (*self.base, *extra))


@dataclass(frozen=True)
class NumericBins:
    """Every tracked numeric feature's edges in one array, so a batch is binned with a few array operations:
    the bin of a value is the number of its feature's edges below it (``bisect_left``), the edges padded with
    +inf to ``MAX_BINS - 1`` per feature."""

    columns: np.ndarray  # [features]: the value column of each
    offsets: np.ndarray  # [features]: the slot of each one's first bin
    edges: np.ndarray  # [features, MAX_BINS - 1]
    low: np.ndarray  # [features]: the profile's min and max
    high: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def of(cls, slots: Sequence[tuple[int, Feature, int]]) -> NumericBins | None:
        numeric = [
            (column, feature, offset) for column, feature, offset in slots if isinstance(feature, NumericFeature)
        ]
        if not numeric:
            return None
        edges = np.full((len(numeric), MAX_BINS - 1), np.inf)
        for row, (_, feature, _) in enumerate(numeric):
            edges[row, : len(feature.edges)] = feature.edges
        return cls(
            columns=np.array([column for column, _, _ in numeric], dtype=np.intp),
            offsets=np.array([offset for _, _, offset in numeric], dtype=np.intp),
            edges=edges,
            low=np.array([feature.min for _, feature, _ in numeric]),
            high=np.array([feature.max for _, feature, _ in numeric]),
            names=tuple(feature.name for _, feature, _ in numeric),
        )

    def count(self, values: np.ndarray, violations: Counter[tuple[str, str]], slots: int) -> np.ndarray:
        """A batch's counts per slot (``values``: [instances, columns]); its violations go to ``violations``."""
        x = values[:, self.columns]
        missing = np.isnan(x)
        positions = (x[:, :, None] > self.edges[None, :, :]).sum(axis=2)  # NaN is below nothing: masked next
        counts = np.bincount((positions + self.offsets)[~missing], minlength=slots).astype(np.float64)
        outside = ((x < self.low) | (x > self.high)).sum(axis=0)  # NaN is neither
        for kind, totals in (("missing", missing.sum(axis=0)), ("out_of_range", outside)):
            for feature in np.flatnonzero(totals).tolist():
                violations[(self.names[feature], kind)] += int(totals[feature])
        return counts
