"""Traffic routers: one interface, one implementation per backend (KServe's own split, Gateway API)."""

from esteira.routing.base import ChildKind, ObjectKey, Objects, TrafficRouter, key_of
from esteira.routing.gateway import GatewayAPIRouter
from esteira.routing.kserve import KServeRouter

ROUTERS: dict[str, TrafficRouter] = {"KServe": KServeRouter(), "GatewayAPI": GatewayAPIRouter()}


def router_for(name: str) -> TrafficRouter:
    """The router named by `spec.rollout.router`."""
    return ROUTERS[name]


def child_kinds() -> tuple[ChildKind, ...]:
    """Every kind any router manages: what the operator lists, watches and may write."""
    seen: dict[tuple[str, str], ChildKind] = {}
    for router in ROUTERS.values():
        for kind in router.kinds:
            seen.setdefault((kind.api_version, kind.kind), kind)
    return tuple(seen.values())


__all__ = [
    "ROUTERS",
    "ChildKind",
    "GatewayAPIRouter",
    "KServeRouter",
    "ObjectKey",
    "Objects",
    "TrafficRouter",
    "child_kinds",
    "key_of",
    "router_for",
]
