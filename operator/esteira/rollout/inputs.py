"""What a rollout step reads: the spec, the status, the time, the backend's report, the evidence, a command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.rollout.evidence import Evidence
from esteira.vocabulary import Command


@dataclass(frozen=True)
class ObservedRoute:
    """What the backend reports for one canary revision: is it serving, and its share of traffic.

    `weight` is None while the backend has not reported a split; the engine then waits instead of
    assuming its last instruction took effect. A report about another revision (say, the canary a new
    version just superseded) says nothing about the current canary.
    """

    revision: int | None
    ready: bool = False
    weight: int | None = None

    def about(self, revision: int) -> ObservedRoute:
        """This report if it describes `revision`, else the report of a canary nobody has seen yet."""
        return self if self.revision == revision else ObservedRoute(revision)


NOTHING_OBSERVED = ObservedRoute(None)


@dataclass(frozen=True)
class RolloutInput:
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus
    now: datetime
    route: ObservedRoute = NOTHING_OBSERVED
    evidence: Evidence | None = None
    metrics_error: str | None = None
    command: Command | None = None
