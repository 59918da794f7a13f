"""Judging one window of traffic against the reference: per feature a distance and a test, then a verdict.

A feature drifts when its distance passes the threshold AND a chi-square test on the binned counts says a
difference that large is unlikely to be chance (p below `significance`). The distance alone false-alarms on
small windows (two samples of one distribution always differ a little); the test alone fires on trivial
shifts once windows are large. Below `min_sample` instances a feature says NoData instead of guessing.

Defaults follow Evidently's choice for large samples (normed Wasserstein for numeric features, Jensen-Shannon
for categorical ones, both at 0.1; PSI at 0.1 on request) with the test in place of its small-sample K-S and
chi-square, which ignore the reference's own sampling error. The Jensen-Shannon distance is taken in base 2 (0 to
1), where Evidently's is in natural log: the same shift scores 1.2 times Evidently's, so 0.1 here is Evidently's
0.083.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from esteira.drift import stats
from esteira.drift.profile import INF_BIN, OTHER_BIN

Method = Literal["Auto", "PSI", "JensenShannon", "Wasserstein"]
Measure = Literal["PSI", "JensenShannon", "Wasserstein"]
FeatureVerdictValue = Literal["Drift", "NoDrift", "NoData"]
DatasetVerdict = Literal["Drifted", "Stable", "NoData"]
DEFAULT_THRESHOLDS: dict[Measure, float] = {"PSI": 0.1, "JensenShannon": 0.1, "Wasserstein": 0.1}
DEFAULT_SIGNIFICANCE = 0.01
DEFAULT_MIN_SAMPLE = 100
DEFAULT_DATASET_SHARE = 0.5
MIN_SPREAD = 0.001  # the least reference standard deviation a Wasserstein score is normed by (Evidently's floor)
PREDICTIONS = "(predictions)"


@dataclass(frozen=True)
class FeatureRule:
    method: Method | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftPolicy:
    """How a window is judged; `features` overrides method or threshold per feature name."""

    method: Method = "Auto"
    threshold: float | None = None
    features: Mapping[str, FeatureRule] = field(default_factory=dict)
    min_sample: int = DEFAULT_MIN_SAMPLE
    dataset_share: float = DEFAULT_DATASET_SHARE
    significance: float = DEFAULT_SIGNIFICANCE

    def rule(self, name: str, numeric: bool) -> tuple[Measure, float]:
        override = self.features.get(name, FeatureRule())
        method = override.method or self.method
        measure: Measure
        if method == "Auto" or (method == "Wasserstein" and not numeric):
            measure = "Wasserstein" if numeric else "JensenShannon"
        else:
            measure = method
        threshold = override.threshold if override.threshold is not None else self.threshold
        return measure, DEFAULT_THRESHOLDS[measure] if threshold is None else threshold


@dataclass(frozen=True)
class DriftWindow:
    """What the counters say about one revision over one window, by feature and bin label.

    `reference` holds the profile's counts (exported by the model server beside its live counters),
    `current` the window's; `violations` counts data-quality problems by (feature, kind).
    """

    reference: Mapping[str, Mapping[str, float]]
    current: Mapping[str, Mapping[str, float]]
    instances: float = 0.0
    violations: Mapping[tuple[str, str], float] = field(default_factory=dict)
    reference_predictions: Mapping[str, float] = field(default_factory=dict)
    predictions: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureVerdict:
    name: str
    method: Measure
    threshold: float
    sample_size: int
    verdict: FeatureVerdictValue
    score: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class DriftReport:
    verdict: DatasetVerdict
    drifted_share: float | None
    sample_size: int
    features: tuple[FeatureVerdict, ...]  # most drifted first
    prediction: FeatureVerdict | None = None
    quality: Mapping[tuple[str, str], float] = field(default_factory=dict)  # violation rate by (feature, kind)

    @property
    def drifted(self) -> tuple[FeatureVerdict, ...]:
        return tuple(f for f in self.features if f.verdict == "Drift")


def _position(label: str) -> float | None:
    if label == INF_BIN:
        return float("inf")
    try:
        return float(label)
    except ValueError:
        return None


def _numeric_order(labels: set[str]) -> list[str] | None:
    """Numeric bins sorted by upper edge, or None when the labels are categories."""
    if OTHER_BIN in labels or any(_position(label) is None for label in labels):
        return None
    return sorted(labels, key=lambda label: _position(label) or 0.0)


def bin_positions(ordered: list[str]) -> list[float]:
    """Where each bin's mass sits: the middle of its edges; open tails one neighbouring width outside."""
    edges = [_position(label) or 0.0 for label in ordered[:-1]]
    if not edges:
        return [0.0]
    if len(edges) == 1:
        return [edges[0] - 0.5, edges[0] + 0.5]
    inner = [(a + b) / 2 for a, b in pairwise(edges)]
    return [edges[0] - (edges[1] - edges[0]) / 2, *inner, edges[-1] + (edges[-1] - edges[-2]) / 2]


def score(measure: Measure, reference: list[float], current: list[float], positions: list[float] | None) -> float:
    if measure == "PSI":
        return stats.population_stability_index(reference, current)
    if measure == "JensenShannon" or positions is None:
        return stats.jensen_shannon_distance(reference, current)
    # A reference whose mass sits in one bin has no spread: the floor (Evidently's) keeps the score finite,
    # where an infinite one went into status.
    spread = max(stats.binned_std(reference, positions), MIN_SPREAD)
    return stats.wasserstein_on_bins(reference, current, positions) / spread


def judge(
    name: str,
    reference: Mapping[str, float],
    current: Mapping[str, float],
    policy: DriftPolicy,
    categorical: bool = False,
) -> FeatureVerdict:
    """One feature's verdict from its binned reference and window counts.

    `categorical` skips guessing from the labels: classes named "0", "1", … look like numeric bins, but moving
    predictions from one class to its neighbour is as much a change as to any other class.
    """
    labels = set(reference) | set(current)
    ordered = None if categorical else _numeric_order(labels)
    numeric = ordered is not None
    ordered = ordered if ordered is not None else sorted(labels)
    measure, threshold = policy.rule(name, numeric)
    ref = [reference.get(label, 0.0) for label in ordered]
    cur = [current.get(label, 0.0) for label in ordered]
    sample = int(sum(max(0.0, c) for c in cur))
    if sample < max(1, policy.min_sample) or sum(ref) <= 0:
        return FeatureVerdict(name, measure, threshold, sample, "NoData")
    value = score(measure, ref, cur, bin_positions(ordered) if numeric else None)
    _, _, p_value = stats.homogeneity_test(ref, cur)
    drift = value > threshold and p_value < policy.significance
    return FeatureVerdict(
        name, measure, threshold, sample, "Drift" if drift else "NoDrift", round(value, 6), round(p_value, 6)
    )


def _rank(verdict: FeatureVerdict) -> tuple[int, float]:
    order = {"Drift": 0, "NoDrift": 1, "NoData": 2}[verdict.verdict]
    return order, -((verdict.score or 0.0) / verdict.threshold if verdict.threshold > 0 else 0.0)


def evaluate(window: DriftWindow, policy: DriftPolicy) -> DriftReport:
    """The window's per-feature verdicts, the dataset verdict and data-quality rates."""
    features = sorted(
        (judge(name, window.reference[name], window.current.get(name, {}), policy) for name in window.reference),
        key=_rank,
    )
    judged = [f for f in features if f.verdict != "NoData"]
    share = sum(f.verdict == "Drift" for f in judged) / len(judged) if judged else None
    verdict: DatasetVerdict = "NoData"
    if share is not None:
        verdict = "Drifted" if share >= policy.dataset_share else "Stable"
    prediction = None
    if window.reference_predictions:
        prediction = judge(PREDICTIONS, window.reference_predictions, window.predictions, policy, categorical=True)
    instances = window.instances
    # Rates on fewer instances than a verdict needs say nothing either: one bad value in three requests read as a
    # 33 % incident, and started the revision's one data-quality retraining run.
    enough = instances >= max(1, policy.min_sample)
    quality = {key: round(count / instances, 6) for key, count in window.violations.items() if enough}
    return DriftReport(verdict, share, int(instances), tuple(features), prediction, quality)
