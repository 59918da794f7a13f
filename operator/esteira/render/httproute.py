"""Gateway API routing for a rollout: one InferenceService per revision behind one HTTPRoute.

The route answers for its own hosts, splits traffic by weight between the stable and canary predictor Services,
lets a client pin an arm with the `x-model-revision` header (A/B and debugging), and copies stable's requests to
a canary that takes no traffic of its own yet (rollout.mirror).
"""

from __future__ import annotations

from typing import Any

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.render.inferenceservice import RenderContext, common_labels
from esteira.render.names import MAX_DERIVED_NAME, predictor_service_name
from esteira.render.traffic import Arm, TrafficPlan
from esteira.vocabulary import HTTPROUTE_API_VERSION, REVISION_HEADER

PREDICTOR_PORT = 80


def arm_service_name(ctx: RenderContext, arm: Arm) -> str:
    """Each revision gets its own InferenceService `<name>-rev-<n>`, with an unnamed predictor."""
    return f"{ctx.name}-{arm.predictor_name}"


def _backend(ctx: RenderContext, arm: Arm, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": predictor_service_name(arm_service_name(ctx, arm)), "port": PREDICTOR_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _pinned(ctx: RenderContext, arm: Arm) -> dict[str, Any]:
    return {
        "matches": [{"headers": [{"type": "Exact", "name": REVISION_HEADER, "value": str(arm.revision)}]}],
        "backendRefs": [_backend(ctx, arm)],
    }


def route_hostnames(ctx: RenderContext, spec: ModelDeploymentSpec) -> list[str]:
    """The hosts the route answers for: the spec's, else the one KServe's domain template gives an
    InferenceService named after the ModelDeployment. Without any, the route took every host's requests on its
    Gateway, and of two ModelDeployments' routes there the older answered for both."""
    if spec.rollout.gateway.hostnames:
        return list(spec.rollout.gateway.hostnames)
    label = f"{ctx.name}-{ctx.namespace}"
    if len(label) > MAX_DERIVED_NAME:  # a DNS label; KServe refuses such a host for its own (GenerateDomainName)
        raise InvalidSpec.single(
            "spec.rollout.gateway.hostnames",
            f"the default host's first label {label!r} has {len(label)} characters, over DNS's {MAX_DERIVED_NAME}: "
            "name the hosts here",
        )
    return [f"{label}.{ctx.ingress_domain}"]


def route_url(ctx: RenderContext, spec: ModelDeploymentSpec) -> str | None:
    """Where clients call the route: its first host that is no wildcard (None when every one is)."""
    return next((f"http://{host}" for host in route_hostnames(ctx, spec) if not host.startswith("*.")), None)


def render_http_route(ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan) -> dict[str, Any]:
    gateway = spec.rollout.gateway
    pinned_stable = _pinned(ctx, plan.stable)
    rules = [pinned_stable]
    split: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}
    if plan.canary is None:
        split["backendRefs"] = [_backend(ctx, plan.stable, 100)]
    else:
        rules.append(_pinned(ctx, plan.canary))
        split["backendRefs"] = [
            _backend(ctx, plan.stable, 100 - plan.canary_weight),
            _backend(ctx, plan.canary, plan.canary_weight),
        ]
        if plan.mirror:
            # A rule's mirror copies every request of the rule, whichever backend it goes to: only while the canary
            # takes none of the split are those stable's alone (a backendRef's own filters would say it exactly,
            # but mirroring there is implementation-specific, and Istio refuses it).
            for rule in (pinned_stable, split):
                rule["filters"] = [
                    {"type": "RequestMirror", "requestMirror": {"backendRef": _backend(ctx, plan.canary)}}
                ]
    rules.append(split)
    if spec.timeout_seconds is not None:  # the gateway's Envoy then tells the model server how long it waits
        for rule in rules:
            rule["timeouts"] = {"request": f"{spec.timeout_seconds}s"}
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": ctx.name, "namespace": ctx.namespace, "labels": common_labels(ctx.name, spec)},
        "spec": {
            "parentRefs": [{"name": gateway.name, "namespace": gateway.namespace}],
            "hostnames": route_hostnames(ctx, spec),
            "rules": rules,
        },
    }


def _accepted_generations(route: dict[str, Any]) -> list[int]:
    """The generations of the route a Gateway reports it accepted (one a parent; the current one where the
    condition names none)."""
    generation = int((route.get("metadata") or {}).get("generation") or 1)
    return [
        int(c.get("observedGeneration") or generation)
        for p in (route.get("status") or {}).get("parents") or []
        for c in p.get("conditions") or []
        if c.get("type") == "Accepted" and c.get("status") == "True"
    ]


def route_behind(route: dict[str, Any]) -> bool:
    """Whether a Gateway accepted only earlier generations of the route: the split it sends is an older one."""
    generation = int((route.get("metadata") or {}).get("generation") or 1)
    accepted = _accepted_generations(route)
    return bool(accepted) and max(accepted) < generation


def split_weights(route: dict[str, Any]) -> dict[str, int]:
    """The route's split as written: each backend Service's weight in the rule callers without a pin take."""
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if len(refs) > 1 or not rule.get("matches", [{}])[0].get("headers"):
            return {str(r.get("name")): int(r.get("weight", 1)) for r in refs}
    return {}


def observed_canary_weight(route: dict[str, Any], canary: Arm, ctx: RenderContext) -> int | None:
    """The canary's weight as the route says, once a Gateway accepted this generation of it; None while unknown.
    An acceptance of an earlier generation says nothing of the weights just written: taken for them, the engine
    went on while the Gateway still sent the old split."""
    generation = int((route.get("metadata") or {}).get("generation") or 1)
    if not any(accepted >= generation for accepted in _accepted_generations(route)):
        return None
    wanted = predictor_service_name(arm_service_name(ctx, canary))
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if len(refs) > 1 or not rule.get("matches", [{}])[0].get("headers"):
            total = sum(int(r.get("weight", 1)) for r in refs) or 1
            return next((round(100 * int(r.get("weight", 1)) / total) for r in refs if r.get("name") == wanted), 0)
    return None
