"""Reads a ModelDeployment and its InferenceService, plans, applies, and reports the decisions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from esteira.controller import metrics
from esteira.controller.kube import KubeAPI
from esteira.controller.retry import ApiError, with_backoff
from esteira.state.reconcile import ReconcileInput, ReconcilePlan, Result, plan_reconcile

logger = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """One per operator: serialises work per ModelDeployment so event- and timer-driven runs never race."""

    def __init__(self, api: KubeAPI, prometheus_url: str | None) -> None:
        self.api = api
        self.prometheus_url = prometheus_url
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    async def reconcile(self, namespace: str, name: str) -> Result | None:
        """Bring one ModelDeployment's children and status in line; None when the object is gone."""
        started = time.perf_counter()
        try:
            async with self._locks[(namespace, name)]:
                result = await self._reconcile(namespace, name)
        except ApiError:
            metrics.RECONCILES.labels("error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if result is not None:
            metrics.RECONCILES.labels(result).inc()
        return result

    async def _reconcile(self, namespace: str, name: str) -> Result | None:
        md = await with_backoff(lambda: self.api.get_model_deployment(namespace, name), "read ModelDeployment")
        if md is None or md["metadata"].get("deletionTimestamp"):
            return None
        isvc = await with_backoff(lambda: self.api.get_inference_service(namespace, name), "read InferenceService")
        plan = plan_reconcile(
            ReconcileInput(
                name=name,
                namespace=namespace,
                generation=md["metadata"].get("generation"),
                spec=md.get("spec") or {},
                status=md.get("status") or {},
                isvc=isvc,
                now=utc_now(),
                prometheus_url=self.prometheus_url,
            )
        )
        await self._apply(md, plan)
        return plan.result

    async def _apply(self, md: dict[str, Any], plan: ReconcilePlan) -> None:
        namespace, name = md["metadata"]["namespace"], md["metadata"]["name"]
        if plan.create is not None:
            child = plan.create
            kopf.adopt(child, owner=cast(kopf.Body, md))
            await with_backoff(lambda: self._create_or_patch(namespace, child), "create InferenceService")
        elif plan.patch is not None:
            patch = plan.patch
            await with_backoff(
                lambda: self.api.patch_inference_service(namespace, name, patch), "patch InferenceService"
            )
        if plan.status_changed:
            await with_backoff(
                lambda: self.api.patch_model_deployment_status(namespace, name, plan.status),
                "patch ModelDeployment status",
            )
        for decision in plan.decisions:
            kopf.event(
                cast(kopf.Body, md),
                type="Warning" if decision.warning else "Normal",
                reason=decision.reason,
                message=decision.message,
            )
            log = logger.warning if decision.warning else logger.info
            log("%s/%s %s: %s", namespace, name, decision.reason, decision.message)

    async def _create_or_patch(self, namespace: str, child: dict[str, Any]) -> None:
        """Create; if a retried create already went through (409 AlreadyExists), patch to the same content."""
        try:
            await self.api.create_inference_service(namespace, child)
        except ApiError as exc:
            if exc.status != 409:
                raise
            patch = {"metadata": {k: child["metadata"][k] for k in ("labels", "annotations", "ownerReferences")}}
            await self.api.patch_inference_service(
                namespace, child["metadata"]["name"], {**patch, "spec": child["spec"]}
            )
