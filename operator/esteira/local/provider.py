"""Evidence without a Prometheus server: the router's own per-arm counters and the classes TorchServe counted.

Both are cumulative, so each analysis takes the exact growth since the previous one (or since the step began,
see `mark`), as the operator's queries count a window (`rollout.queries.window_count`): classes counted by a
server process launched since the last reading count whole, as does a counter that went down (the router's
own, which a restart of `esteira up` resets). The p95 comes from the interval's histogram buckets,
interpolated like `histogram_quantile`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from esteira.api.spec import ModelDeploymentSpec
from esteira.local.stats import BUCKETS, Counters
from esteira.rollout.evidence import ArmSample, Evidence, MetricsUnavailable

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')

Reader = Callable[[int], Awaitable[Counters]]


def increase(previous: float, current: float) -> float:
    """A counter's growth; a drop means the process restarted and counted again from zero."""
    return current if current < previous else current - previous


def _increases(previous: Mapping[str, float], current: Mapping[str, float]) -> dict[str, float]:
    return {key: increase(previous.get(key, 0.0), value) for key, value in current.items()}


def quantile(q: float, buckets: tuple[float, ...], bounds: tuple[float, ...] = BUCKETS) -> float | None:
    """`histogram_quantile` over non-cumulative bucket counts (the last one is +Inf); None without data."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    for index, count in enumerate(buckets):
        if running + count >= rank and count > 0:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - running) / count
        running += count
    return bounds[-1]


def interval_sample(previous: Counters | None, current: Counters) -> ArmSample:
    """One arm's ArmSample for the interval between two cumulative readings (None: since the start)."""
    before = previous or Counters()
    outcomes = _increases(before.outcomes, current.outcomes)
    # A server restarted since: its classes count from zero, and may have climbed past their old values.
    classes = current.classes if before.launch != current.launch else _increases(before.classes, current.classes)
    buckets = tuple(increase(a, b) for a, b in zip(before.buckets, current.buckets, strict=True))
    if sum(outcomes.values()) < sum(buckets):  # a reset inside the interval: count from zero
        buckets = current.buckets
    return ArmSample(
        requests=sum(outcomes.values()),
        errors=outcomes.get("server_error", 0.0),
        latency_p95=quantile(0.95, buckets),
        class_counts={k: v for k, v in classes.items() if v > 0},
    )


def class_counts(exposition: str, revision: int, metric: str = "esteira_predictions_total") -> dict[str, float]:
    """Predicted-class totals for one revision from TorchServe's Prometheus text."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != metric:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        if labels.get("Revision") != str(revision):
            continue
        key = labels.get("class", "")
        out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


@dataclass
class LocalMetricProvider:
    """Same `collect` shape as PrometheusProvider; `read` gives an arm's cumulative counters now."""

    read: Reader

    def __post_init__(self) -> None:
        self.baseline: dict[int, Counters] = {}
        self.unmarked: set[int] = set()  # revisions whose step began without a reading: their interval is unknown

    async def _read(self, revision: int) -> Counters:
        try:
            return await self.read(revision)
        except MetricsUnavailable:
            raise
        except Exception as exc:
            raise MetricsUnavailable(f"revision {revision}: {type(exc).__name__}: {exc}") from exc

    async def _read_all(self, revisions: tuple[int, ...]) -> dict[int, Counters]:
        """Every arm's counters, or MetricsUnavailable and no reading: an interval begins for both arms or for
        neither. A canary's reading taken while the stable's failed had moved the canary's interval on alone, and
        the errors in it were never judged."""
        return {revision: await self._read(revision) for revision in revisions}

    async def mark(self, *revisions: int) -> None:
        """Start a new interval now (a step began): earlier traffic is not judged at the new weight. Where the
        counters cannot be read now, the next analysis starts the interval instead of judging one: from the
        last reading, it judged the new step on the old one's traffic."""
        try:
            readings = await self._read_all(revisions)
        except MetricsUnavailable:
            self.unmarked.update(revisions)
            raise
        self.baseline.update(readings)
        self.unmarked.difference_update(revisions)

    async def collect(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, stable_revision: int, canary_revision: int
    ) -> Evidence:
        del namespace, name, spec  # one local deployment; the interval is the time since the last reading
        readings = await self._read_all((canary_revision, stable_revision))
        if self.unmarked & {canary_revision, stable_revision}:
            self.baseline.update(readings)
            self.unmarked.difference_update((canary_revision, stable_revision))
            raise MetricsUnavailable("the step began while the model servers' counters could not be read: counting now")
        samples = {revision: interval_sample(self.baseline.get(revision), now) for revision, now in readings.items()}
        self.baseline.update(readings)
        return Evidence(canary=samples[canary_revision], stable=samples[stable_revision])
