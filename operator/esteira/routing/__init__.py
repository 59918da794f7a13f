"""Traffic routers: one interface, one implementation per backend (KServe's own split, Gateway API)."""

from esteira.routing.base import ObjectKey, RouteStatus, TrafficRouter
from esteira.routing.gateway import GatewayAPIRouter
from esteira.routing.kserve import KServeRouter


def router_for(name: str) -> TrafficRouter:
    """The router named by `spec.rollout.router`."""
    routers: dict[str, TrafficRouter] = {"KServe": KServeRouter(), "GatewayAPI": GatewayAPIRouter()}
    return routers[name]


__all__ = ["GatewayAPIRouter", "KServeRouter", "ObjectKey", "RouteStatus", "TrafficRouter", "router_for"]
