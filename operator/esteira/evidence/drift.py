"""A revision's drift window from Prometheus: binned inputs, their reference, violations and predictions."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

import aiohttp

from esteira.drift.evaluate import DriftWindow
from esteira.rollout.queries import DriftQueries, MetricNames


class Querier(Protocol):
    """What this needs of a Prometheus client: one instant query."""

    async def query(self, session: aiohttp.ClientSession, promql: str) -> list[dict[str, Any]]: ...


def _values(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for series in result:
        value = float(series["value"][1])
        if not math.isnan(value):
            key = tuple(series["metric"].get(label, "") for label in labels)
            out[key] = out.get(key, 0.0) + value
    return out


def _nested(values: dict[tuple[str, ...], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (feature, label), value in values.items():
        out.setdefault(feature, {})[label] = value
    return out


async def drift_window(
    client: Querier, session: aiohttp.ClientSession, queries: DriftQueries, names: MetricNames
) -> DriftWindow:
    """Every query at once; MetricsUnavailable from any of them means no window (never a partial one)."""
    bins, reference, instances, violations, predictions, reference_predictions = await asyncio.gather(
        client.query(session, queries.bins),
        client.query(session, queries.reference),
        client.query(session, queries.instances),
        client.query(session, queries.violations),
        client.query(session, queries.predictions),
        client.query(session, queries.reference_predictions),
    )
    per_bin = (names.feature_label, names.bin_label)
    total = _values(instances)
    return DriftWindow(
        reference=_nested(_values(reference, *per_bin)),
        current=_nested(_values(bins, *per_bin)),
        instances=total.get((), 0.0),
        violations={(f, k): v for (f, k), v in _values(violations, names.feature_label, names.kind_label).items()},
        reference_predictions={c: v for (c,), v in _values(reference_predictions, names.class_label).items()},
        predictions={c: v for (c,), v in _values(predictions, names.class_label).items()},
    )
