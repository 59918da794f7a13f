"""Evidence from a Prometheus server's HTTP API, with timeouts, retries and errors that say what failed."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.evidence.drift import drift_window
from esteira.rollout.evidence import ArmSample, Evidence, MetricsUnavailable
from esteira.rollout.queries import ArmQueries, MetricNames, arm_queries, render_custom


class PrometheusClient:
    """Instant queries against `/api/v1/query`."""

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 3) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.attempts = attempts

    async def query(self, session: aiohttp.ClientSession, promql: str) -> list[dict[str, Any]]:
        last = ""
        for attempt in range(self.attempts):
            try:
                async with session.get(
                    f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
                ) as response:
                    body = await response.json(content_type=None)
                    if response.status == 200 and body.get("status") == "success":
                        result: list[dict[str, Any]] = body["data"]["result"]
                        return result
                    last = f"HTTP {response.status}: {body.get('error', body)}"
                    if response.status == 400:
                        break  # a bad query will not get better
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.0))
        raise MetricsUnavailable(f"Prometheus at {self.url}: {last} (query: {promql})")

    async def scalar(self, session: aiohttp.ClientSession, promql: str) -> float | None:
        result = await self.query(session, promql)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    async def by_label(self, session: aiohttp.ClientSession, promql: str, label: str) -> dict[str, float]:
        result = await self.query(session, promql)
        out = {}
        for series in result:
            value = float(series["value"][1])
            if not math.isnan(value):
                out[series["metric"].get(label, "")] = value
        return out


class PrometheusProvider:
    """Gathers both arms' samples and the custom checks for one analysis."""

    def __init__(self, client: PrometheusClient, names: MetricNames | None = None) -> None:
        self.client = client
        self.names = names or MetricNames()

    async def _arm(self, session: aiohttp.ClientSession, queries: ArmQueries) -> ArmSample:
        requests, errors, p95, classes, drift = await asyncio.gather(
            self.client.scalar(session, queries.requests),
            self.client.scalar(session, queries.errors),
            self.client.scalar(session, queries.latency_p95),
            self.client.by_label(session, queries.class_counts, self.names.class_label),
            drift_window(self.client, session, queries.drift, self.names),
        )
        return ArmSample(
            requests=requests or 0.0,
            errors=errors or 0.0,
            latency_p95=p95,
            class_counts=classes,
            drift=drift,
        )

    async def collect(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, stable_revision: int, canary_revision: int
    ) -> Evidence:
        interval = spec.rollout.interval
        model = spec.model.name
        async with aiohttp.ClientSession() as session:
            canary = await self._arm(session, arm_queries(self.names, namespace, model, canary_revision, interval))
            stable = await self._arm(session, arm_queries(self.names, namespace, model, stable_revision, interval))
            custom = {}
            for check in spec.rollout.analysis.custom:
                promql = render_custom(check.query, namespace, name, canary_revision, interval)
                custom[check.name] = await self.client.scalar(session, promql)
        return Evidence(canary=canary, stable=stable, custom=custom)
