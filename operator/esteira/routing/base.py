"""The router interface: which objects carry a traffic plan, and what split the backend reports.

A router owns everything specific to its backend: the kinds of object it manages (from which the
operator's child resources and RBAC derive), how a plan becomes objects, how to read the split back,
and backend quirks such as Knative's pin after a rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from esteira.api.spec import ModelDeploymentSpec
from esteira.render.inferenceservice import RenderContext
from esteira.render.traffic import TrafficPlan
from esteira.rollout.inputs import ObservedRoute

# (apiVersion, kind, name) of an object in the ModelDeployment's namespace
ObjectKey = tuple[str, str, str]
Objects = Mapping[ObjectKey, dict[str, Any]]


@dataclass(frozen=True)
class ChildKind:
    """A kind of object a router creates, with the REST plural the API adapter and RBAC need."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def condition_true(obj: Mapping[str, Any] | None, type_: str) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


def is_current(obj: Mapping[str, Any]) -> bool:
    """Whether the object's controller has reported on its latest generation, where its status.observedGeneration
    counts the object's own generations (KServe's counts a child's: see routing.kserve)."""
    status = obj.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int((obj.get("metadata") or {}).get("generation") or 1)


class TrafficRouter(Protocol):
    name: str
    kinds: tuple[ChildKind, ...]
    copies_requests: bool  # can send the canary copies of stable's requests (rollout.mirror)

    def desired(
        self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects
    ) -> list[dict[str, Any]]:
        """Every object that serves `plan` (reconcile and set routes in one: the weights live in them)."""
        ...

    def observe(self, ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, live: Objects) -> ObservedRoute:
        """Read the split the backend reports for the plan's canary from the live objects."""
        ...

    def primary(self, ctx: RenderContext, plan: TrafficPlan) -> ObjectKey:
        """The InferenceService whose state the ModelDeployment reports: the one serving stable."""
        ...

    def url(self, ctx: RenderContext, spec: ModelDeploymentSpec) -> str | None:
        """Where clients call the ModelDeployment, when not at the primary InferenceService's own URL."""
        ...
