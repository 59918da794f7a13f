"""KServe's own traffic split: `canaryTrafficPercent` (Knative mode) or `spec.canary[]` (Standard mode).

Knative keeps two revisions: the latest takes `canaryTrafficPercent`, the last one rolled out (tag
`prev`) the rest, so the canary rides on the predictor and 0% pins everything to stable. Standard mode
(KServe 0.20+) runs named predictors side by side and reports each one's share in `canaryStatuses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.inferenceservice import ISVC_API_VERSION, LABEL_REVISION, RenderContext, render_inference_service
from esteira.render.revisions import TrafficPlan
from esteira.routing.base import ObjectKey, RouteStatus


def _condition(isvc: dict[str, Any], type_: str) -> bool:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


class KServeRouter:
    name = "KServe"

    def desired(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan) -> list[dict[str, Any]]:
        return [render_inference_service(ctx, spec, plan)]

    def kinds(self) -> list[tuple[str, str]]:
        return [(ISVC_API_VERSION, "InferenceService")]

    def observe(
        self,
        ctx: RenderContext,
        spec: ModelDeploymentSpec,
        plan: TrafficPlan,
        objects: Mapping[ObjectKey, dict[str, Any]],
    ) -> RouteStatus:
        isvc = objects.get((ISVC_API_VERSION, "InferenceService", ctx.name))
        if isvc is None or plan.canary is None:
            return RouteStatus(canary_ready=False, canary_weight=None)
        status = isvc.get("status") or {}
        current = status.get("observedGeneration", 0) >= (isvc.get("metadata") or {}).get("generation", 1)
        if not current:
            return RouteStatus(False, None)
        if spec.deployment_mode == "Standard":
            for arm in status.get("canaryStatuses") or []:
                if arm.get("name") == plan.canary.predictor_name:
                    return RouteStatus(bool(arm.get("ready")), arm.get("trafficPercent"))
            return RouteStatus(False, None)
        # Knative: the predictor carries the canary; its revision is the latest one once it is ready.
        labels = ((isvc.get("spec") or {}).get("predictor") or {}).get("labels") or {}
        serving_canary = labels.get(LABEL_REVISION) == str(plan.canary.revision)
        predictor = (status.get("components") or {}).get("predictor") or {}
        ready = (
            serving_canary
            and predictor.get("latestReadyRevision") is not None
            and predictor.get("latestReadyRevision") == predictor.get("latestCreatedRevision")
            and _condition(isvc, "PredictorReady")
        )
        latest = [t for t in predictor.get("traffic") or [] if t.get("latestRevision")]
        weight = int(latest[0].get("percent", 0)) if latest and serving_canary else None
        return RouteStatus(ready, weight)


def knative_restoring(stable_revision: int, isvc: dict[str, Any] | None) -> bool:
    """Whether a Knative InferenceService still has to bring stable's spec back to a ready revision.

    True until the live object carries stable's revision and KServe reports its latest revision ready
    for the current generation; until then a rollback pins traffic to the previous revision.
    """
    if isvc is None:
        return False
    labels = ((isvc.get("spec") or {}).get("predictor") or {}).get("labels") or {}
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    current = status.get("observedGeneration", 0) >= (isvc.get("metadata") or {}).get("generation", 1)
    ready = predictor.get("latestReadyRevision") is not None and (
        predictor.get("latestReadyRevision") == predictor.get("latestCreatedRevision")
    )
    return not (labels.get(LABEL_REVISION) == str(stable_revision) and current and ready)
