"""Gateway API router: one InferenceService per revision (Standard mode) and a weighted HTTPRoute."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.applied import last_applied
from esteira.render.httproute import (
    arm_service_name,
    observed_canary_weight,
    render_http_route,
    route_behind,
    route_url,
    split_weights,
)
from esteira.render.inferenceservice import RenderContext, render_inference_service
from esteira.render.names import predictor_service_name
from esteira.render.traffic import Arm, TrafficPlan
from esteira.rollout.inputs import ObservedRoute
from esteira.routing.base import ChildKind, ObjectKey, Objects, condition_true
from esteira.routing.kserve import INFERENCE_SERVICES
from esteira.vocabulary import HTTPROUTE_API_VERSION, ISVC_API_VERSION

HTTP_ROUTES = ChildKind(HTTPROUTE_API_VERSION, "HTTPRoute", "httproutes")


class GatewayAPIRouter:
    name = "GatewayAPI"
    kinds: tuple[ChildKind, ...] = (INFERENCE_SERVICES, HTTP_ROUTES)
    copies_requests = True  # the route's RequestMirror filter

    def primary(self, ctx: RenderContext, plan: TrafficPlan) -> ObjectKey:
        return (ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.stable))

    def url(self, ctx: RenderContext, spec: ModelDeploymentSpec) -> str | None:
        return route_url(ctx, spec)  # the stable revision's InferenceService URL would skip the split

    def desired(
        self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects
    ) -> list[dict[str, Any]]:
        arms = [plan.stable] + ([plan.canary] if plan.canary is not None else [])
        services = [
            render_inference_service(
                replace(ctx, name=arm_service_name(ctx, arm), owner=ctx.name), spec, TrafficPlan(stable=arm)
            )
            for arm in arms
        ]
        serving = _serving_meanwhile(ctx, plan, live) if plan.canary is None else None
        if serving is not None:  # the new stable is not ready: the revision serving now keeps every request
            revision, kept = serving
            bridge = TrafficPlan(stable=Arm(revision, "", ""), canary=plan.stable, canary_weight=0)
            return [*services, kept, render_http_route(ctx, spec, bridge)]
        return [*services, render_http_route(ctx, spec, plan)]

    def observe(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects) -> ObservedRoute:
        if plan.canary is None:
            return ObservedRoute(None)
        canary = live.get((ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.canary)))
        route = live.get((HTTPROUTE_API_VERSION, "HTTPRoute", ctx.name))
        weight = observed_canary_weight(route, plan.canary, ctx) if route is not None else None
        applied = route is None or not route_behind(route)
        return ObservedRoute(plan.canary.revision, condition_true(canary, "Ready"), weight, applied)


def _serving_meanwhile(ctx: RenderContext, plan: TrafficPlan, live: Objects) -> tuple[int, dict[str, Any]] | None:
    """A ready revision to keep serving while a new stable one is not ready yet, and its InferenceService as last
    applied (so keeping it writes nothing); None once the new one is ready, or with none to keep.

    An Immediate rollout or a rollback makes a new stable revision at once: routed to its InferenceService
    before that was ready, and with the ready one deleted in the same reconcile, every request failed until it
    was. The ready one the route sends most to keeps serving instead (the newest of equals), until the next
    reconcile finds the new one ready: the newest alone was a canary replaced mid-rollout, which then took every
    request while the stable it had been judged against was deleted.
    """
    if condition_true(live.get((ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.stable))), "Ready"):
        return None
    ready: list[tuple[int, dict[str, Any]]] = []
    for (api_version, kind, name), obj in live.items():
        found = re.fullmatch(rf"{re.escape(ctx.name)}-rev-([0-9]+)", name)
        if api_version == ISVC_API_VERSION and kind == "InferenceService" and found and condition_true(obj, "Ready"):
            ready.append((int(found.group(1)), obj))
    if not ready:
        return None
    route = live.get((HTTPROUTE_API_VERSION, "HTTPRoute", ctx.name))
    weights = split_weights(route) if route is not None else {}

    def serving(entry: tuple[int, dict[str, Any]]) -> tuple[int, int]:
        return weights.get(predictor_service_name(entry[1]["metadata"]["name"]), 0), entry[0]

    revision, obj = max(ready, key=serving)
    applied = last_applied(obj)
    metadata = obj["metadata"]
    kept = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata.get("namespace"),
            "labels": applied.get("labels", metadata.get("labels") or {}),
            "annotations": applied.get("annotations", {}),
        },
        "spec": applied.get("spec", obj.get("spec") or {}),
    }
    return revision, kept
