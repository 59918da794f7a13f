"""Reads a ModelDeployment and its InferenceService, plans, applies, and reports the decisions."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import kopf

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.controller import telemetry
from esteira.controller.collector_link import CollectorLink
from esteira.controller.kube import KubeAPI
from esteira.controller.retry import ApiError, with_backoff
from esteira.drift.evaluate import DriftWindow
from esteira.evidence.drift import drift_window
from esteira.evidence.prometheus import PrometheusClient, PrometheusProvider
from esteira.evidence.quality import WithQuality, prometheus_tallies
from esteira.rollout.engine import analysis_due
from esteira.rollout.evidence import Evidence, MetricsUnavailable
from esteira.rollout.queries import MetricNames, drift_queries
from esteira.routing import key_of
from esteira.state.monitoring import drift_due
from esteira.state.reconcile import ReconcileInput, ReconcilePlan, Result, plan_reconcile
from esteira.vocabulary import COMMAND_ANNOTATION, Command, format_time, parse_time

logger = logging.getLogger(__name__)


class Reconciler:
    """One per operator: serialises work per ModelDeployment so event- and timer-driven runs never race."""

    def __init__(self, api: KubeAPI, prometheus_url: str | None) -> None:
        self.api = api
        self.prometheus_url = prometheus_url
        self.collector = CollectorLink.from_env()
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        telemetry.forget_deployment(namespace, name)

    async def reconcile(self, namespace: str, name: str) -> Result | None:
        """Bring one ModelDeployment's children and status in line; None when the object is gone."""
        started = time.perf_counter()
        try:
            async with self._locks[(namespace, name)]:
                result = await self._reconcile(namespace, name)
        except ApiError:
            telemetry.RECONCILES.labels("error").inc()
            raise
        finally:
            telemetry.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if result is not None:
            telemetry.RECONCILES.labels(result).inc()
        return result

    async def _reconcile(self, namespace: str, name: str) -> Result | None:
        md = await with_backoff(lambda: self.api.get_model_deployment(namespace, name), "read ModelDeployment")
        if md is None or md["metadata"].get("deletionTimestamp"):
            return None
        objects = await with_backoff(lambda: self.api.list_children(namespace, name), "list children")
        now = format_time(datetime.now(UTC))
        evidence, metrics_error = await self._evidence(md, now)
        drift, drift_error = await self._drift(md, now)
        plan = plan_reconcile(
            ReconcileInput(
                name=name,
                namespace=namespace,
                generation=md["metadata"].get("generation"),
                spec=md.get("spec") or {},
                status=md.get("status") or {},
                objects=objects,
                now=now,
                prometheus_url=self.prometheus_url,
                collector_url=self.collector.url,
                evidence=evidence,
                metrics_error=metrics_error,
                drift=drift,
                drift_error=drift_error,
                command=read_command(md),
            )
        )
        await self._apply(md, plan)
        telemetry.record_status(namespace, name, plan.status)
        if drift is not None or drift_error is not None:
            self._record_drift(namespace, name, plan.status, drift_error)
        return plan.result

    async def _evidence(self, md: dict[str, Any], now: str) -> tuple[Evidence | None, str | None]:
        """Query the metrics only when an analysis is due; a failure becomes the engine's reason to hold."""
        try:
            spec = ModelDeploymentSpec.parse(md.get("spec") or {})
            status = ModelDeploymentStatus.model_validate(md.get("status") or {})
        except (InvalidSpec, ValueError):
            return None, None
        if status.canary is None or status.stable is None or not analysis_due(spec, status, parse_time(now)):
            return None, None
        url = spec.monitoring.prometheus_url or self.prometheus_url
        if not url:
            return None, "no Prometheus URL: set spec.monitoring.prometheusUrl or the operator's --prometheus-url"
        client = PrometheusClient(url)
        provider = WithQuality(PrometheusProvider(client), prometheus_tallies(client))
        try:
            evidence = await provider.collect(
                md["metadata"]["namespace"],
                md["metadata"]["name"],
                spec,
                status.stable.revision,
                status.canary.revision,
            )
        except MetricsUnavailable as exc:
            return None, str(exc)
        return evidence, None

    async def _drift(self, md: dict[str, Any], now: str) -> tuple[DriftWindow | None, str | None]:
        """The stable revision's drift window when an evaluation is due; a failure is recorded, not raised."""
        try:
            spec = ModelDeploymentSpec.parse(md.get("spec") or {})
            status = ModelDeploymentStatus.model_validate(md.get("status") or {})
        except (InvalidSpec, ValueError):
            return None, None
        revision = drift_due(spec, status, parse_time(now))
        if revision is None or spec.monitoring.drift is None:
            return None, None
        url = spec.monitoring.prometheus_url or self.prometheus_url
        if not url:
            return None, "no Prometheus URL: set spec.monitoring.prometheusUrl or the operator's --prometheus-url"
        client = PrometheusClient(url)
        names = MetricNames()
        queries = drift_queries(
            names, md["metadata"]["namespace"], spec.model.name, revision, spec.monitoring.drift.window
        )
        try:
            async with aiohttp.ClientSession() as session:
                return await drift_window(client, session, queries, names), None
        except MetricsUnavailable as exc:
            return None, str(exc)

    @staticmethod
    def _record_drift(namespace: str, name: str, status: dict[str, Any], error: str | None) -> None:
        if error is not None:
            telemetry.DRIFT_EVALUATION_ERRORS.inc()
            return
        monitoring = ModelDeploymentStatus.model_validate(status).monitoring
        if monitoring is None:
            return
        telemetry.DRIFT_EVALUATIONS.labels(monitoring.verdict).inc()
        telemetry.record_drift(namespace, name, {f.name: f.score for f in monitoring.features if f.score is not None})

    async def _apply(self, md: dict[str, Any], plan: ReconcilePlan) -> None:
        namespace = md["metadata"]["namespace"]
        for child in plan.creates:
            kopf.adopt(child, owner=cast(kopf.Body, md))
            await with_backoff(functools.partial(self._create_or_patch, namespace, child), "create child")
        for key, patch in plan.patches:
            await with_backoff(functools.partial(self.api.patch_child, namespace, key, patch), "patch child")
        for key in plan.deletes:
            await with_backoff(functools.partial(self.api.delete_child, namespace, key), "delete child")
        if plan.status_patch:
            await with_backoff(
                lambda: self.api.patch_model_deployment_status(namespace, md["metadata"]["name"], plan.status_patch),
                "patch ModelDeployment status",
            )
        for decision in plan.decisions:
            if decision.reason in ("Promoted", "RolledBack"):
                telemetry.ROLLOUTS.labels(decision.reason).inc()
            kopf.event(
                cast(kopf.Body, md),
                type="Warning" if decision.warning else "Normal",
                reason=decision.reason,
                message=decision.message,
            )
            log = logger.warning if decision.warning else logger.info
            log("%s/%s %s: %s", namespace, md["metadata"]["name"], decision.reason, decision.message)
        self.collector.record(namespace, md["metadata"]["name"], plan.decisions)

    async def _create_or_patch(self, namespace: str, child: dict[str, Any]) -> None:
        """Create; if a retried create already went through (409 AlreadyExists), patch to the same content."""
        try:
            await self.api.create_child(namespace, child)
        except ApiError as exc:
            if exc.status != 409:
                raise
            metadata = {k: child["metadata"][k] for k in ("labels", "annotations", "ownerReferences")}
            await self.api.patch_child(namespace, key_of(child), {"metadata": metadata, "spec": child["spec"]})


def read_command(md: dict[str, Any]) -> Command | None:
    """The last command a person left on the object (`kubectl esteira promote|pause|...` writes it)."""
    raw = ((md.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
    if not raw:
        return None
    try:
        return Command.decode(raw)
    except ValueError as exc:
        logger.warning("ignoring unreadable %s annotation %r: %s", COMMAND_ANNOTATION, raw, exc)
        return None
