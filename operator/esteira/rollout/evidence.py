"""What the metric providers measured for each arm over the last interval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from esteira.drift.evaluate import DriftWindow
from esteira.quality.scores import Tally


@dataclass(frozen=True)
class ArmSample:
    """One arm's traffic over an analysis interval. Counts are increases over the interval."""

    requests: float
    errors: float = 0.0
    latency_p95: float | None = None
    class_counts: Mapping[str, float] = field(default_factory=dict)
    drift: DriftWindow | None = None  # input bins over the interval; None: not gathered
    quality: Tally | None = None  # labelled predictions joined over interval + labelDelay; None: not gathered

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True)
class Evidence:
    """Both arms' samples and the custom queries' values (None where a query returned nothing)."""

    canary: ArmSample
    stable: ArmSample | None = None
    custom: Mapping[str, float | None] = field(default_factory=dict)


class MetricsUnavailable(Exception):
    """The metrics backend could not answer; the engine pauses rather than judge on nothing."""
