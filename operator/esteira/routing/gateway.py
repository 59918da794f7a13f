"""Gateway API router: one InferenceService per revision (Standard mode) and a weighted HTTPRoute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.httproute import HTTPROUTE_API_VERSION, arm_service_name, observed_canary_weight, render_http_route
from esteira.render.inferenceservice import ISVC_API_VERSION, RenderContext, render_inference_service
from esteira.render.revisions import TrafficPlan
from esteira.routing.base import ObjectKey, RouteStatus


class GatewayAPIRouter:
    name = "GatewayAPI"

    def desired(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan) -> list[dict[str, Any]]:
        arms = [plan.stable] + ([plan.canary] if plan.canary is not None else [])
        services = [
            render_inference_service(
                replace(ctx, name=arm_service_name(ctx, arm), owner=ctx.name), spec, TrafficPlan(stable=arm)
            )
            for arm in arms
        ]
        return [*services, render_http_route(ctx, spec, plan)]

    def kinds(self) -> list[tuple[str, str]]:
        return [(ISVC_API_VERSION, "InferenceService"), (HTTPROUTE_API_VERSION, "HTTPRoute")]

    def observe(
        self,
        ctx: RenderContext,
        spec: ModelDeploymentSpec,
        plan: TrafficPlan,
        objects: Mapping[ObjectKey, dict[str, Any]],
    ) -> RouteStatus:
        if plan.canary is None:
            return RouteStatus(False, None)
        canary = objects.get((ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, plan.canary)))
        route = objects.get((HTTPROUTE_API_VERSION, "HTTPRoute", ctx.name))
        conditions = ((canary or {}).get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        weight = observed_canary_weight(route, plan.canary, ctx) if route is not None else None
        return RouteStatus(ready, weight)
