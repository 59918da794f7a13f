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
(:class:`model_handlers.metrics.MetricBuffer`): the same totals, for a handful of lines a second. The serving
thread does not even bin them: it holds each batch's values, and all those held are binned in one pass just
before the write (one pass costs about what one batch's did).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

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
    category_of,
)
from esteira.vocabulary import series_label
from model_handlers.config import ModelConfig
from model_handlers.metrics import (
    Counts,
    Definition,
    MetricBuffer,
    Series,
    Tally,
    Update,
    write_metrics,
)
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


class Slot(NamedTuple):
    """Where one tracked feature is read and counted: its value column, its first bin's slot, and the slots of
    its two violation kinds (``other``: out of range for a numeric feature, an unknown category else)."""

    column: int
    feature: Feature
    offset: int
    missing: int
    other: int


def columns_of(config: ModelConfig) -> tuple[str, ...]:
    """The names drift is counted under: a tabular model's inputs, an image's two statistics."""
    if config.kind == "image":
        return IMAGE_FEATURES
    return config.feature_names or tuple(f"feature_{i}" for i in range(config.features))


def profile_problems(profile: ReferenceProfile, config: ModelConfig) -> list[str]:
    """What in ``profile`` the model server could never count for this model: a feature that is none of its
    inputs (it is left out without a word), a category that is no number (an input arrives as a number, and a
    categorical one is named by it), a predicted class the model does not have."""
    columns = columns_of(config)
    problems = []
    for feature in profile.features:
        if feature.name not in columns:
            shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
            problems.append(f"feature {feature.name!r} is none of the model's inputs ({shown})")
        elif isinstance(feature, CategoricalFeature):
            words = [c for c in feature.categories if not _is_number(c)]
            if words:
                problems.append(
                    f"feature {feature.name!r}: category {words[0]!r} is no number; the model takes numbers, so "
                    "profile the encoded column it is given"
                )
    predictions = profile.predictions
    if predictions is not None and predictions.labels is not None and config.labels is not None:
        unknown = [label for label in predictions.labels if label not in config.labels]
        if unknown:
            problems.append(
                f"predictions: class {unknown[0]!r} is none of the model's labels ({', '.join(config.labels)})"
            )
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def served_category(value: float) -> str:
    """The category a fractional code that came through a float32 tensor stands for where the profile named it by
    its decimal (`esteira profile` names a CSV's 1.1 "1.1", and float32's 1.1 reads 1.100000023841858): its
    shortest float32 decimal."""
    return category_of(float(str(np.float32(value))))


def series_cap(env: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get(ENV_SERIES_CAP, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else SERIES_CAP


class DriftCounter:
    """Bins rows of feature values and records the counts; one per loaded model."""

    def __init__(self, profile: ReferenceProfile, columns: Sequence[str], identity: Identity, cap: int) -> None:
        self.profile = profile
        self.base = (series_label(identity.name), series_label(identity.revision))
        index = {name: i for i, name in enumerate(columns)}
        self.tracked: list[tuple[int, Feature, tuple[str, ...]]] = []
        self.left_out: list[str] = []
        used = 0
        for feature in profile.features:
            if feature.name not in index:
                continue
            labels = tuple(series_label(label) for label in feature.labels)
            if used + len(labels) > cap or self.left_out:
                self.left_out.append(feature.name)
                continue
            used += len(labels)
            self.tracked.append((index[feature.name], feature, labels))
        self.series = used
        self.names = {feature.name: series_label(feature.name) for _, feature, _ in self.tracked}
        # Every series this counter writes is a slot of one array (:class:`model_handlers.metrics.Tally`): the
        # bins, feature after feature in profile order, then the instances, then two violation kinds per feature
        # (missing, and out of range or an unknown category), then the capped instances. A batch adds its counts
        # to the slots; series are built only when written.
        offsets = list(accumulate((len(labels) for _, _, labels in self.tracked), initial=0))
        self.slot_bins = [(feature.name, label) for _, feature, labels in self.tracked for label in labels]
        series = [self._series(BINS_TOTAL, self.names[feature], label) for feature, label in self.slot_bins]
        self.instances_slot = len(series)
        series.append(self._series(INSTANCES_TOTAL))
        self.slot_violations: dict[int, tuple[str, str]] = {}
        self.slots: list[Slot] = []
        for (column, feature, _), offset in zip(self.tracked, offsets, strict=False):
            violation_slots = []
            for kind in ("missing", "out_of_range" if isinstance(feature, NumericFeature) else "unknown_category"):
                violation_slots.append(len(series))
                self.slot_violations[len(series)] = (feature.name, kind)
                series.append(self._series(VIOLATIONS_TOTAL, self.names[feature.name], kind))
            self.slots.append(Slot(column, feature, offset, *violation_slots))
        self.capped_slot = len(series) if self.left_out else None
        if self.left_out:
            series.append(self._series(CAPPED_TOTAL))
        self.tally = Tally(series)
        self.numeric = NumericBins.of(self.slots)
        self.categorical = [slot for slot in self.slots if isinstance(slot.feature, CategoricalFeature)]
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
        counter = cls(profile, columns_of(config), identity, series_cap())
        if counter.left_out:
            logger.warning(
                "drift series cap %d reached: %d feature(s) not counted, from %r",
                series_cap(),
                len(counter.left_out),
                counter.left_out[0],
            )
        return counter

    # -- values ---------------------------------------------------------------------------------------------

    def rows(self, batch: torch.Tensor, config: ModelConfig) -> np.ndarray:
        """Feature values per instance, [instances, columns] in float64: the tabular row, or the statistics of an
        image's decoded pixels (0-255, before scaling) in 0..1 units. Never a view of ``batch``: rows are counted
        after the forward pass, and a model may write into its input. A tabular row is copied in NumPy: for a
        request's few values, torch's copy (``to``, ``clone``) costs several times NumPy's, which the serving
        thread pays for every batch."""
        if config.kind != "image":
            flat = batch if batch.dim() == 2 else batch.reshape(batch.shape[0], -1)
            return flat.detach().cpu().numpy().astype(np.float64)
        pixels = batch.detach().cpu().reshape(batch.shape[0], -1).to(torch.float64)
        spread, level = torch.std_mean(pixels, dim=1, correction=0)
        return torch.stack([level, spread], dim=1).numpy() / 255.0

    def count(
        self, rows: torch.Tensor | np.ndarray | Sequence[Sequence[float]]
    ) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """(bin counts, violation counts) of a batch, keyed by (feature, bin) and (feature, kind)."""
        counts = self._count(torch.as_tensor(rows, dtype=torch.float64).numpy())
        pairs = (
            counts.items() if isinstance(counts, Mapping) else ((i, counts[i]) for i in np.flatnonzero(counts).tolist())
        )
        bins: Counter[tuple[str, str]] = Counter()
        violations: Counter[tuple[str, str]] = Counter()
        for slot, n in pairs:
            if slot < self.instances_slot:
                bins[self.slot_bins[slot]] += int(n)
            elif slot in self.slot_violations:
                violations[self.slot_violations[slot]] += int(n)
        return bins, violations

    def _count(self, rows: np.ndarray) -> dict[int, float] | np.ndarray:
        """Bin and violation counts of a batch ([instances, columns]) by slot. A few values take a step each in
        Python; more go through array operations, whose fixed cost (about 30 us) a Python step per value
        passes beyond ``ARRAY_VALUES`` values, and which are 10-30x faster for a wide model's batch."""
        if rows.ndim != 2 or not len(rows):
            return {}
        if rows.shape[0] * len(self.slots) <= ARRAY_VALUES or self.numeric is None:
            return self._count_values(rows.tolist(), self.slots, {})
        counts = self.numeric.count(rows, len(self.tally.series))
        if self.categorical:
            for slot, n in self._count_values(rows.tolist(), self.categorical, {}).items():
                counts[slot] += n
        return counts

    @staticmethod
    def _count_values(rows: list[list[float]], slots: Sequence[Slot], counts: dict[int, float]) -> dict[int, float]:
        """Add each value's bin and violations to ``counts``, a step per value."""
        for row in rows:
            for column, feature, offset, missing, other in slots:
                value = row[column]
                if value != value:  # NaN
                    counts[missing] = counts.get(missing, 0) + 1
                    continue
                if isinstance(feature, NumericFeature):
                    if value < feature.min or value > feature.max:
                        counts[other] = counts.get(other, 0) + 1
                    slot = offset + feature.bin_of(value)
                else:
                    position = feature.bin_of(category_of(value))
                    if position is None and not float(value).is_integer():
                        position = feature.bin_of(served_category(value))
                    if position is None:
                        counts[other] = counts.get(other, 0) + 1
                        position = len(feature.labels) - 1
                    slot = offset + position
                counts[slot] = counts.get(slot, 0) + 1
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
                updates.append(self._update(REFERENCE_PREDICTIONS, count, series_label(cls)))
        updates.append(self._update(INSTANCES_TOTAL, 0))
        try:
            write_metrics(cache, updates)
        except Exception:
            logger.exception("publishing the drift reference failed; inference goes on")

    def snapshot(self, batch: torch.Tensor, config: ModelConfig) -> np.ndarray | torch.Tensor | None:
        """The batch's values to count, taken before the forward pass (a model may write into its input): a
        tabular model's rows, copied; an image model's decoded pixels as they are (nothing writes to them)."""
        if batch.shape[0] == 0:
            return None
        try:
            return batch if config.kind == "image" else self.rows(batch, config)
        except Exception:
            self._warn()
            return None

    def observe(
        self,
        cache: Any,
        values: np.ndarray | torch.Tensor,
        keep: Sequence[int] | None,
        config: ModelConfig,
        buffer: MetricBuffer,
    ) -> None:
        """Hold a :meth:`snapshot`'s instances at positions ``keep`` (None: all), those of the requests that were
        answered, in ``buffer``, which counts every batch held in one pass before it writes, at most once a second
        (:meth:`MetricBuffer.defer`): a pass costs about the same for one batch as for a second's worth, so the
        serving thread only copies."""
        if cache is None:
            return
        try:
            if keep is not None:
                values = values[list(keep)]
            if values.shape[0] == 0:
                return
            if isinstance(values, torch.Tensor):  # an image model's pixels, see `_count_images`
                buffer.defer(cache, self.tally, values, values.numel(), lambda held: self._count_images(held, config))
                return
            buffer.defer(cache, self.tally, values, values.size, self._count_held)
        except Exception:
            self._warn()

    def _warn(self) -> None:
        if not self._warned:
            logger.exception("counting drift failed; inference goes on")
            self._warned = True

    def _count_images(self, held: list[torch.Tensor], config: ModelConfig) -> Counts:
        """The counts of every held batch of decoded images, their statistics taken in one pass. A lone image's
        statistics on the serving thread, a few small torch operations, took 28 us of a 280 us request there
        (10 us in a tight loop: they ran with cold caches); held, they cost the serving thread an append, and a
        second's images about as much as one. The buffer counts at most ``DEFERRED_VALUES`` pixels at once, so
        large images are counted every few requests and never pile up."""
        return self._count_held([self.rows(held[0] if len(held) == 1 else torch.cat(held), config)])

    def _count_held(self, held: list[np.ndarray]) -> Counts:
        """The counts of every held batch's rows, instances and capped instances with them."""
        rows = held[0] if len(held) == 1 else np.concatenate(held)
        counts = self._count(rows)
        instances = int(rows.shape[0])
        for slot in (self.instances_slot, self.capped_slot):
            if slot is not None:  # slots no value is counted in: set, not added to
                counts[slot] = instances
        return counts

    def _update(self, name: str, value: float, *extra: str) -> Update:
        return (name, DEFINITIONS[name], value, (*self.base, *extra))

    def _series(self, name: str, *extra: str) -> Series:
        return (name, DEFINITIONS[name], (*self.base, *extra))


@dataclass(frozen=True)
class NumericBins:
    """Every tracked numeric feature's edges in one array, so a batch is binned with a few array operations:
    the bin of a value is the number of its feature's edges below it (``bisect_left``), the edges padded with
    +inf to ``MAX_BINS - 1`` per feature."""

    columns: np.ndarray  # [features]: the value column of each
    offsets: np.ndarray  # [features]: the slot of each one's first bin
    missing: np.ndarray  # [features]: the slot of each one's missing values
    outside: np.ndarray  # [features]: the slot of each one's values out of range
    edges: np.ndarray  # [features, MAX_BINS - 1]
    low: np.ndarray  # [features]: the profile's min and max
    high: np.ndarray

    @classmethod
    def of(cls, slots: Sequence[Slot]) -> NumericBins | None:
        numeric = [(slot, slot.feature) for slot in slots if isinstance(slot.feature, NumericFeature)]
        if not numeric:
            return None
        edges = np.full((len(numeric), MAX_BINS - 1), np.inf)
        for row, (_, feature) in enumerate(numeric):
            edges[row, : len(feature.edges)] = feature.edges

        def column(values: list[Any], dtype: Any = np.intp) -> np.ndarray:
            return np.array(values, dtype=dtype)

        return cls(
            columns=column([slot.column for slot, _ in numeric]),
            offsets=column([slot.offset for slot, _ in numeric]),
            missing=column([slot.missing for slot, _ in numeric]),
            outside=column([slot.other for slot, _ in numeric]),
            edges=edges,
            low=column([feature.min for _, feature in numeric], np.float64),
            high=column([feature.max for _, feature in numeric], np.float64),
        )

    def count(self, values: np.ndarray, slots: int) -> np.ndarray:
        """A batch's bin and violation counts in an array of ``slots`` (``values``: [instances, columns])."""
        x = values[:, self.columns]
        missing = np.isnan(x)
        positions = (x[:, :, None] > self.edges[None, :, :]).sum(axis=2)  # NaN is below nothing: masked next
        counts = np.bincount((positions + self.offsets)[~missing], minlength=slots).astype(np.float64)
        counts[self.missing] += missing.sum(axis=0)  # one slot per feature: no index repeats
        counts[self.outside] += ((x < self.low) | (x > self.high)).sum(axis=0)  # NaN is neither
        return counts
