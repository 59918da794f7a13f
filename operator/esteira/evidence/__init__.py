"""Metric providers: where the rollout engine's evidence comes from.

One interface, one implementation per source: Prometheus (`prometheus.PrometheusProvider`, used by the
operator and by the local runtime when a URL is set) and the local runtime's own counters
(`esteira.local.provider.LocalMetricProvider`).
"""

from __future__ import annotations

from typing import Protocol

from esteira.api.spec import ModelDeploymentSpec
from esteira.rollout.evidence import Evidence


class MetricProvider(Protocol):
    async def collect(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, stable_revision: int, canary_revision: int
    ) -> Evidence:
        """Both arms' samples over the last `rollout.interval`; raises MetricsUnavailable when it cannot."""
        ...
