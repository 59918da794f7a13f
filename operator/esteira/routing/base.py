"""The router interface: what objects carry a traffic plan, and what split they actually report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.inferenceservice import RenderContext
from esteira.render.revisions import TrafficPlan

# (apiVersion, kind, name) of an object in the ModelDeployment's namespace
ObjectKey = tuple[str, str, str]


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


@dataclass(frozen=True)
class RouteStatus:
    """What the backend reports: is the canary arm serving, and what share of traffic it gets.

    `canary_weight` is None when the backend has not reported a split yet; the engine then waits
    instead of assuming its last instruction took effect.
    """

    canary_ready: bool
    canary_weight: int | None


class TrafficRouter(Protocol):
    name: str

    def desired(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan) -> list[dict[str, Any]]:
        """Every object that serves `plan` (reconcile and set routes in one: the weights live in them)."""
        ...

    def observe(
        self,
        ctx: RenderContext,
        spec: ModelDeploymentSpec,
        plan: TrafficPlan,
        objects: Mapping[ObjectKey, dict[str, Any]],
    ) -> RouteStatus:
        """Read the split the backend reports from the live objects (get routes)."""
        ...

    def kinds(self) -> list[tuple[str, str]]:
        """The (apiVersion, kind) pairs this router manages; others' leftovers are cleaned on a router change."""
        ...
