"""Gateway API router: one InferenceService per revision (Standard mode) and a weighted HTTPRoute."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.httproute import arm_service_name, observed_canary_weight, render_http_route
from esteira.render.inferenceservice import RenderContext, render_inference_service
from esteira.render.traffic import TrafficPlan
from esteira.rollout.inputs import ObservedRoute
from esteira.routing.base import ChildKind, ObjectKey, Objects, condition_true
from esteira.routing.kserve import INFERENCE_SERVICES
from esteira.vocabulary import HTTPROUTE_API_VERSION, ISVC_API_VERSION

HTTP_ROUTES = ChildKind(HTTPROUTE_API_VERSION, "HTTPRoute", "httproutes")


class GatewayAPIRouter:
    name = "GatewayAPI"
    kinds: tuple[ChildKind, ...] = (INFERENCE_SERVICES, HTTP_ROUTES)

    def primary(self, ctx: RenderContext, plan: TrafficPlan) -> ObjectKey:
        return (ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.stable))

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
        return [*services, render_http_route(ctx, spec, plan)]

    def observe(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects) -> ObservedRoute:
        if plan.canary is None:
            return ObservedRoute(None)
        canary = live.get((ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.canary)))
        route = live.get((HTTPROUTE_API_VERSION, "HTTPRoute", ctx.name))
        weight = observed_canary_weight(route, plan.canary, ctx) if route is not None else None
        return ObservedRoute(plan.canary.revision, condition_true(canary, "Ready"), weight)
