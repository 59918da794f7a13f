"""The operator and `esteira up` run one rollout step: for the same inputs they decide the same things.

The operator reaches the step through `plan_reconcile`, reading the canary's readiness and weight from
KServe's status on the live InferenceService; the local runtime calls `rollout_step` with what its own
router and servers report. Any sequence of evidence, commands, readiness and weights gives both the
same rollout decisions and the same revisions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.render import RenderContext
from esteira.rollout.cycle import rollout_step
from esteira.rollout.evidence import ArmSample, Evidence
from esteira.rollout.inputs import ObservedRoute, RolloutInput
from esteira.rollout.revisions import traffic_plan
from esteira.routing import key_of, router_for
from esteira.state.reconcile import ReconcileInput, plan_reconcile
from esteira.vocabulary import Command, format_time
from tests.support.specs import model, spec

T0 = datetime(2026, 1, 1, 12, 0, 0)
GOOD = Evidence(
    canary=ArmSample(requests=200, errors=0, latency_p95=0.05, class_counts={"a": 100, "b": 100}),
    stable=ArmSample(requests=800, errors=1, latency_p95=0.05, class_counts={"a": 400, "b": 400}),
)
ERRORS = Evidence(canary=ArmSample(requests=200, errors=40, latency_p95=0.05), stable=GOOD.stable)
QUIET = Evidence(canary=ArmSample(requests=3), stable=GOOD.stable)
# Reconcile-only decisions: what the operator did to objects and what KServe reported, not the rollout.
OBJECT_DECISIONS = {"Created", "Updated", "Deleted", "DriftCorrected", "Ready", "Degraded"}


def parsed(version: str) -> ModelDeploymentSpec:
    rollout = {"steps": [10, 50, 100], "interval": "1m", "analysis": {"minRequests": 50, "errorRate": {"max": 0.05}}}
    return ModelDeploymentSpec.parse(
        spec(model=model(version=version, storageUri=f"s3://m/{version}"), rollout=rollout)
    )


def live_isvc(md: ModelDeploymentSpec, status: ModelDeploymentStatus, route: ObservedRoute) -> dict[str, Any]:
    """The InferenceService as KServe (Standard mode) would report `route` for the current canary."""
    plan = traffic_plan(status)
    (isvc,) = router_for("KServe").desired(RenderContext("iris", "models"), md, plan, {})
    isvc["metadata"]["generation"] = 1
    isvc["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
    if plan.canary is not None and route.revision == plan.canary.revision:
        isvc["status"]["canaryStatuses"] = [
            {"name": plan.canary.predictor_name, "ready": route.ready, "trafficPercent": route.weight}
        ]
    return isvc


TICK = st.tuples(
    st.sampled_from([GOOD, ERRORS, QUIET, None]),
    st.one_of(
        st.none(),
        st.none(),
        st.builds(Command, id=st.uuids().map(str), action=st.sampled_from(["promote", "pause", "resume", "abort"])),
    ),
    st.booleans(),  # the canary is ready
    st.sampled_from([None, 0, 10, 50, 100]),  # the weight the backend reports
    st.sampled_from([30, 60, 90]),  # seconds since the last tick
    st.sampled_from(["2", "2", "2", "3"]),  # the spec's version (a new one supersedes the canary)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(TICK, min_size=1, max_size=15))
def test_operator_and_local_paths_decide_the_same(ticks: list[Any]) -> None:
    first = rollout_step(RolloutInput(spec=parsed("1"), status=ModelDeploymentStatus(), now=T0))
    local = operator = first.status
    now = T0
    for evidence, command, ready, weight, seconds, version in ticks:
        now += timedelta(seconds=seconds)
        md = parsed(version)
        canary = local.canary
        route = ObservedRoute(canary.revision if canary else None, ready, weight if ready else None)
        local_out = rollout_step(
            RolloutInput(spec=md, status=local, now=now, route=route, evidence=evidence, command=command)
        )
        isvc = live_isvc(md, operator, route)
        plan = plan_reconcile(
            ReconcileInput(
                name="iris",
                namespace="models",
                generation=1,
                spec=md.model_dump(by_alias=True, exclude_none=True),
                status=operator.to_wire(),
                objects={key_of(isvc): isvc},
                now=format_time(now),
                evidence=evidence,
                command=command,
            )
        )
        rollout_decisions = [d for d in plan.decisions if d.reason not in OBJECT_DECISIONS]
        assert rollout_decisions == local_out.decisions
        operator = ModelDeploymentStatus.model_validate(plan.status)
        local = local_out.status
        assert (operator.stable, operator.canary, operator.last_rollout) == (
            local.stable,
            local.canary,
            local.last_rollout,
        )
