"""KServe's own traffic split: `canaryTrafficPercent` (Knative mode) or `spec.canary[]` (Standard mode).

Knative keeps two revisions: the latest takes `canaryTrafficPercent`, the last one rolled out (tag
`prev`) the rest, so the canary rides on the predictor and 0% pins everything to stable. Standard mode
(KServe 0.20+) runs the canary as a named predictor beside the unnamed stable one and reports each
canary's share in `canaryStatuses`.
"""

from __future__ import annotations

from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.inferenceservice import RenderContext, render_inference_service
from esteira.render.traffic import TrafficPlan
from esteira.rollout.inputs import ObservedRoute
from esteira.routing.base import ChildKind, ObjectKey, Objects, condition_true, is_current
from esteira.vocabulary import ISVC_API_VERSION, LABEL_REVISION

INFERENCE_SERVICES = ChildKind(ISVC_API_VERSION, "InferenceService", "inferenceservices")


def _served_revision(isvc: dict[str, Any]) -> str | None:
    return (((isvc.get("spec") or {}).get("predictor") or {}).get("labels") or {}).get(LABEL_REVISION)


def _latest_ready(isvc: dict[str, Any]) -> bool:
    predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    latest = predictor.get("latestReadyRevision")
    return latest is not None and latest == predictor.get("latestCreatedRevision")


def knative_restoring(stable_revision: int, isvc: dict[str, Any] | None) -> bool:
    """Whether a Knative InferenceService still has to bring stable's spec back to a ready revision.

    True until the live object carries stable's revision and KServe reports its latest revision ready
    for the current generation; until then traffic is pinned to the previous revision, because Knative
    would otherwise route to its latest ready revision: the canary rolled back, or replaced (the spec
    reverted to stable's build, a rollback to an earlier revision or an Immediate version mid-rollout).
    Once the pin is lifted on stable's revision, that is done: lifting it changes the generation, and read
    as "not current" again, the pin went back and was lifted again, write after write.
    """
    if isvc is None:
        return False
    serves_stable = _served_revision(isvc) == str(stable_revision)
    pinned = "canaryTrafficPercent" in ((isvc.get("spec") or {}).get("predictor") or {})
    if serves_stable and not pinned:
        return False
    return not (serves_stable and is_current(isvc) and _latest_ready(isvc))


class KServeRouter:
    name = "KServe"
    kinds: tuple[ChildKind, ...] = (INFERENCE_SERVICES,)
    copies_requests = False  # neither Knative's split nor spec.canary[] copies a request

    def primary(self, ctx: RenderContext, plan: TrafficPlan) -> ObjectKey:
        return (ISVC_API_VERSION, "InferenceService", ctx.name)

    def url(self, ctx: RenderContext, spec: ModelDeploymentSpec) -> str | None:
        return None  # the InferenceService's own: KServe splits traffic behind it

    def desired(
        self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects
    ) -> list[dict[str, Any]]:
        pin = (
            spec.deployment_mode == "Knative"
            and plan.canary is None
            and knative_restoring(plan.stable.revision, live.get(self.primary(ctx, plan)))
        )
        return [render_inference_service(ctx, spec, plan, pin_previous=pin)]

    def observe(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects) -> ObservedRoute:
        isvc = live.get(self.primary(ctx, plan))
        if isvc is None or plan.canary is None:
            return ObservedRoute(None)
        revision = plan.canary.revision
        status = isvc.get("status") or {}
        if spec.deployment_mode == "Standard":
            # KServe's status.observedGeneration is the stable Deployment's there (PropagateRawStatus,
            # inference_service_status.go), which a canary never changes: taken for the InferenceService's, every
            # canary waited for ever. canaryStatuses, written from spec.canary in the reconcile that acts on it
            # (predictor.go: reconcileCanaryDeployments), say what KServe has done for this canary.
            for arm in status.get("canaryStatuses") or []:
                if arm.get("name") == plan.canary.predictor_name:
                    return ObservedRoute(revision, bool(arm.get("ready")), arm.get("trafficPercent"))
            return ObservedRoute(revision, applied=False)
        # Knative: KServe copies the Knative Service's observedGeneration (PropagateStatus), which moves with the
        # InferenceService's while each change of its spec changes the service's, as each of Esteira's does (the
        # predictor or canaryTrafficPercent). Behind it, the status is about an earlier split.
        if not is_current(isvc):
            return ObservedRoute(revision, applied=False)
        # Knative: the predictor carries the canary; its revision is the latest one once it is ready.
        serving_canary = _served_revision(isvc) == str(revision)
        ready = serving_canary and _latest_ready(isvc) and condition_true(isvc, "PredictorReady")
        predictor = (status.get("components") or {}).get("predictor") or {}
        latest = [t for t in predictor.get("traffic") or [] if t.get("latestRevision")]
        weight = int(latest[0].get("percent", 0)) if latest and serving_canary else None
        return ObservedRoute(revision, ready, weight)
