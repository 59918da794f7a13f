"""The accuracy check's evidence: each arm's labelled predictions over interval + labelDelay.

A wrapper around any metric provider: it adds a `Tally` to both arms when the spec asks for the accuracy
check, from Prometheus (the collector's counters, on a cluster) or straight from the collector's store (in
`esteira up`, which runs the collector itself). Without the check it adds nothing and costs no query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from esteira.api.spec import ModelDeploymentSpec
from esteira.evidence import MetricProvider
from esteira.evidence.prometheus import PrometheusClient
from esteira.quality.scores import Tally
from esteira.rollout.evidence import Evidence, MetricsUnavailable
from esteira.rollout.quality_queries import QualityNames, quality_queries
from esteira.vocabulary import parse_duration

# (namespace, deployment, revision, window in seconds) -> that arm's tally
TallyReader = Callable[[str, str, int, int], Awaitable[Tally]]


def quality_window(spec: ModelDeploymentSpec) -> int:
    """Seconds of label arrivals the check counts: one interval, plus the time labels take to arrive."""
    accuracy = spec.rollout.analysis.accuracy
    delay = parse_duration(accuracy.label_delay) if accuracy else parse_duration("0s")
    return max(1, int((parse_duration(spec.rollout.interval) + delay).total_seconds()))


@dataclasses.dataclass
class WithQuality:
    """`inner`'s evidence, plus both arms' labelled-prediction tallies when the spec has an accuracy check."""

    inner: MetricProvider
    read: TallyReader

    async def collect(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, stable_revision: int, canary_revision: int
    ) -> Evidence:
        evidence = await self.inner.collect(namespace, name, spec, stable_revision, canary_revision)
        if spec.rollout.analysis.accuracy is None or evidence.stable is None:
            return evidence
        window = quality_window(spec)
        try:
            canary, stable = await asyncio.gather(
                self.read(namespace, name, canary_revision, window), self.read(namespace, name, stable_revision, window)
            )
        except MetricsUnavailable:
            raise
        except Exception as exc:  # the collector or its database: hold, never judge on nothing
            raise MetricsUnavailable(f"labelled predictions: {type(exc).__name__}: {exc}") from exc
        return Evidence(
            canary=dataclasses.replace(evidence.canary, quality=canary),
            stable=dataclasses.replace(evidence.stable, quality=stable),
            custom=evidence.custom,
        )


def prometheus_tallies(client: PrometheusClient, names: QualityNames | None = None) -> TallyReader:
    """Tallies from the collector's counters in Prometheus."""
    metric_names = names or QualityNames()

    async def read(namespace: str, deployment: str, revision: int, window: int) -> Tally:
        queries = quality_queries(metric_names, namespace, deployment, revision, window)
        async with (
            client.session() as session
        ):  # its credentials and CA: a bare session was refused by any guarded Prometheus
            labelled, correct, absolute, squared = await asyncio.gather(
                client.scalar(session, queries.labelled),
                client.scalar(session, queries.correct),
                client.scalar(session, queries.absolute_error),
                client.scalar(session, queries.squared_error),
            )
        # Whole counts (`window_count`), which the API answers as floats.
        return Tally(round(labelled or 0.0), round(correct or 0.0), absolute or 0.0, squared or 0.0)

    return read


def store_tallies(tallies: Callable[[str, str, float], dict[str, Tally]]) -> TallyReader:
    """Tallies from a collector's store in this process (`Store.tallies`)."""

    async def read(namespace: str, deployment: str, revision: int, window: int) -> Tally:
        by_revision = await asyncio.to_thread(tallies, namespace, deployment, time.time() - window)
        return by_revision.get(str(revision), Tally())

    return read
