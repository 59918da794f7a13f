"""Drift evidence for `esteira up`: the stable server's drift counters, read from TorchServe's metrics text.

The counters are cumulative, so the window is the difference between the newest reading and the last one
taken at least a window ago (none yet: since the server started, as the operator's window counts take a
series born inside the window, `rollout.queries.window_count`). The operator's core function judges the
result (`esteira.state.monitoring`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from esteira.drift.evaluate import DriftWindow
from esteira.local.provider import increase
from esteira.rollout.queries import MetricNames

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
Key = tuple[str, ...]
NAMES = MetricNames()


@dataclass(frozen=True)
class DriftTotals:
    """One revision's drift series at one moment: counters (cumulative) and the profile's reference gauges."""

    bins: Mapping[Key, float] = field(default_factory=dict)
    reference: Mapping[Key, float] = field(default_factory=dict)
    instances: float = 0.0
    violations: Mapping[Key, float] = field(default_factory=dict)
    predictions: Mapping[Key, float] = field(default_factory=dict)
    reference_predictions: Mapping[Key, float] = field(default_factory=dict)
    launch: int = 0  # the model server process that counted them (its launch number)


def drift_totals(exposition: str, revision: int, names: MetricNames = NAMES, launch: int = 0) -> DriftTotals:
    """Sum each drift series over TorchServe's extra labels (Hostname, ...) for one revision."""
    wanted: dict[str, tuple[str, ...]] = {
        names.drift_bins: (names.feature_label, names.bin_label),
        names.drift_reference: (names.feature_label, names.bin_label),
        names.drift_instances: (),
        names.quality_violations: (names.feature_label, names.kind_label),
        names.predictions: (names.class_label,),
        names.drift_reference_predictions: (names.class_label,),
    }
    sums: dict[str, dict[Key, float]] = {name: {} for name in wanted}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in wanted:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        if labels.get(names.revision_label) != str(revision):
            continue
        key = tuple(labels.get(label, "") for label in wanted[match.group(1)])
        table = sums[match.group(1)]
        gauge = match.group(1) in (names.drift_reference, names.drift_reference_predictions)
        value = float(match.group(3))
        table[key] = max(table.get(key, 0.0), value) if gauge else table.get(key, 0.0) + value
    return DriftTotals(
        bins=sums[names.drift_bins],
        reference=sums[names.drift_reference],
        instances=sum(sums[names.drift_instances].values()),
        violations=sums[names.quality_violations],
        predictions=sums[names.predictions],
        reference_predictions=sums[names.drift_reference_predictions],
        launch=launch,
    )


def _nested(values: Mapping[Key, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (feature, label), value in values.items():
        out.setdefault(feature, {})[label] = value
    return out


def _grown(before: Mapping[Key, float], after: Mapping[Key, float]) -> dict[Key, float]:
    return {key: increase(before.get(key, 0.0), value) for key, value in after.items()}


def window_between(before: DriftTotals | None, after: DriftTotals) -> DriftWindow:
    """The window from two readings of one revision (None: since the server started). A server launched again
    between them counts from zero, some series perhaps past their old values: the newest reading counts whole."""
    start = before if before is not None and before.launch == after.launch else DriftTotals(launch=after.launch)
    return DriftWindow(
        reference=_nested(after.reference),
        current=_nested(_grown(start.bins, after.bins)),
        instances=increase(start.instances, after.instances),
        violations={(f, k): v for (f, k), v in _grown(start.violations, after.violations).items()},
        reference_predictions={c: v for (c,), v in after.reference_predictions.items()},
        predictions={c: v for (c,), v in _grown(start.predictions, after.predictions).items()},
    )


@dataclass
class DriftReadings:
    """Readings of the stable revision's drift series, kept for one window; a new stable revision starts over."""

    revision: int | None = None
    readings: list[tuple[datetime, DriftTotals]] = field(default_factory=list)

    def window(self, revision: int, now: datetime, totals: DriftTotals, span: timedelta) -> DriftWindow:
        """Record this reading and answer the window ending now."""
        if revision != self.revision:
            self.revision, self.readings = revision, []
        older = [reading for reading in self.readings if reading[0] <= now - span]
        start = older[-1][1] if older else None
        self.readings = [*older[-1:], *(r for r in self.readings if r[0] > now - span), (now, totals)]
        return window_between(start, totals)
