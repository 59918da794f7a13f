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

    `weight` is None while the backend has not reported a split (a Gateway that has not accepted the route, a
    KServe that reports no traffic percent); the engine then goes on, and the canary's own request count says
    whether traffic reaches it (too few hold the step, and past lowTrafficDeadline lowTrafficAction applies). A
    weight reported that differs from the one wanted holds the step until the router catches up, and so does a
    backend that has not acted on what was last written to it yet (`applied` False: KServe in Standard mode with no
    `canaryStatuses` entry for the canary, or in Knative mode with a status about an earlier spec; a Gateway that
    accepted only earlier generations of the route), whose report is about an earlier split. A report about another revision
    (say, the canary a new version just superseded) says nothing about the current canary.
    """

    revision: int | None
    ready: bool = False
    weight: int | None = None
    applied: bool = True

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
    # The router can copy stable's requests to the canary (rollout.mirror): the Gateway API's and esteira up's.
    router_copies: bool = True
