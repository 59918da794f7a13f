"""One reconcile, planned without I/O: the ModelDeployment and its InferenceService in, actions out.

The adapter (`esteira.controller`) reads both objects, calls `plan_reconcile`, applies what it returns
and posts the decisions as Events. Planning twice on the same input gives the same plan, which is what
makes the operator idempotent across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus, Phase
from esteira.render.inferenceservice import RenderContext, render_inference_service
from esteira.state.conditions import get_condition, set_condition
from esteira.state.drift import drift_patch, last_applied, managed_view, with_last_applied
from esteira.state.revisions import Decision, track_revisions, traffic_plan

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# KServe reports these when a model cannot load or the spec is refused; anything else not ready is pending.
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}

Result = Literal["created", "updated", "unchanged", "invalid"]


@dataclass(frozen=True)
class ReconcileInput:
    name: str
    namespace: str
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]
    isvc: dict[str, Any] | None
    now: str
    prometheus_url: str | None = None


@dataclass
class ReconcilePlan:
    result: Result
    status: dict[str, Any]
    status_changed: bool
    create: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    decisions: list[Decision] = field(default_factory=list)


def _read_status(raw: dict[str, Any]) -> ModelDeploymentStatus:
    """Status as last written; unreadable status starts afresh rather than blocking the object forever."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValueError:
        return ModelDeploymentStatus()


def _invalid(inp: ReconcileInput, status: ModelDeploymentStatus, exc: InvalidSpec) -> ReconcilePlan:
    before = status.to_wire()
    message = str(exc)
    set_condition(status, "Ready", False, "InvalidSpec", message, inp.now, inp.generation)
    status.phase = "Invalid"
    status.observed_generation = inp.generation
    after = status.to_wire()
    decisions = [Decision("InvalidSpec", f"Spec rejected, nothing changed: {message}", warning=True)]
    if before == after:
        decisions = []  # already reported for this generation
    return ReconcilePlan("invalid", after, before != after, decisions=decisions)


def _check_mode_unchanged(spec: ModelDeploymentSpec, isvc: dict[str, Any] | None) -> None:
    if isvc is None:
        return
    current = ((isvc.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)
    if current and current != spec.deployment_mode:
        raise InvalidSpec.single(
            "spec.deploymentMode",
            f"cannot change from {current} to {spec.deployment_mode} after creation (KServe forbids it): "
            "create a new ModelDeployment instead",
        )


def _isvc_condition(isvc: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def _observe(
    inp: ReconcileInput, status: ModelDeploymentStatus, isvc: dict[str, Any] | None, touched: bool
) -> list[Decision]:
    """Carry the InferenceService's state into the ModelDeployment's status; returns transitions worth an Event."""
    was_ready = (c := get_condition(status, "Ready")) is not None and c.status == "True"
    isvc_status = (isvc or {}).get("status") or {}
    ready_cond = _isvc_condition(isvc, "Ready") if isvc else None
    current = (
        isvc is not None
        and not touched
        and isvc_status.get("observedGeneration", 0) >= (isvc.get("metadata") or {}).get("generation", 0)
    )
    ready = current and ready_cond is not None and ready_cond.get("status") == "True"
    model_status = isvc_status.get("modelStatus")
    transition = (model_status or {}).get("transitionStatus")
    failed = current and not ready and (transition in FAILED_TRANSITIONS or _reports_failure(ready_cond))

    status.url = isvc_status.get("url") if isvc is not None else None
    status.model_status = model_status
    status.inference_service = inp.name
    status.observed_generation = inp.generation
    decisions: list[Decision] = []
    g, now = inp.generation, inp.now
    if ready:
        set_condition(status, "Ready", True, "InferenceServiceReady", f"Serving at {status.url}", now, g)
        set_condition(status, "Degraded", False, "Healthy", "", now, g)
        if not was_ready:
            decisions.append(Decision("Ready", f"InferenceService {inp.name} is ready at {status.url}"))
    elif failed:
        reason = (ready_cond or {}).get("reason") or transition or "Failed"
        message = (ready_cond or {}).get("message") or _failure_info(model_status) or "InferenceService failed"
        set_condition(status, "Ready", False, "InferenceServiceFailed", f"{reason}: {message}", now, g)
        set_condition(status, "Degraded", True, "InferenceServiceFailed", f"{reason}: {message}", now, g)
        degraded = get_condition(status, "Degraded")
        if degraded is not None and degraded.last_transition_time == now:
            decisions.append(Decision("Degraded", f"InferenceService {inp.name}: {reason}: {message}", warning=True))
    else:
        set_condition(status, "Ready", False, "InferenceServicePending", "Waiting for KServe to report Ready", now, g)
        set_condition(status, "Degraded", False, "Healthy", "", now, g)

    rolling = status.canary is not None
    if rolling:
        assert status.canary is not None
        set_condition(
            status,
            "Progressing",
            True,
            "CanaryRollout",
            f"Canary revision {status.canary.revision} at {status.canary.weight}% of traffic",
            now,
            g,
        )
    elif not ready and not failed:
        set_condition(status, "Progressing", True, "Reconciling", "InferenceService is being updated", now, g)
    else:
        set_condition(status, "Progressing", False, "Stable", "No rollout in progress", now, g)
    status.phase = _phase(ready, failed, rolling)
    return decisions


def _reports_failure(condition: dict[str, Any] | None) -> bool:
    reason = (condition or {}).get("reason") or ""
    return condition is not None and condition.get("status") == "False" and "fail" in reason.lower()


def _failure_info(model_status: dict[str, Any] | None) -> str:
    info = (model_status or {}).get("lastFailureInfo") or {}
    return str(info.get("message") or "")


def _phase(ready: bool, failed: bool, rolling: bool) -> Phase:
    if failed:
        return "Degraded"
    if rolling:
        return "Progressing"
    return "Ready" if ready else "Pending"


def plan_reconcile(inp: ReconcileInput) -> ReconcilePlan:
    """Decide what to create or patch and what the status becomes."""
    status = _read_status(inp.status)
    before = status.to_wire()
    try:
        spec = ModelDeploymentSpec.parse(inp.spec)
        _check_mode_unchanged(spec, inp.isvc)
        change = track_revisions(spec, status, inp.now)
        ctx = RenderContext(inp.name, inp.namespace, inp.prometheus_url)
        desired = with_last_applied(render_inference_service(ctx, spec, traffic_plan(change.status)))
    except InvalidSpec as exc:
        return _invalid(inp, status, exc)

    status = change.status
    decisions = list(change.decisions)
    create = patch = None
    if inp.isvc is None:
        create = desired
        decisions.append(Decision("Created", f"Created InferenceService {inp.name}"))
        result: Result = "created"
    elif (patch := drift_patch(inp.isvc, desired)) is not None:
        if last_applied(inp.isvc) == managed_view(desired):
            decisions.append(
                Decision("DriftCorrected", f"Put back a manual change to InferenceService {inp.name}", warning=True)
            )
        else:
            decisions.append(Decision("Updated", f"Updated InferenceService {inp.name} to the current spec"))
        result = "updated"
    else:
        result = "unchanged"

    decisions += _observe(inp, status, inp.isvc, touched=create is not None or patch is not None)
    after = status.to_wire()
    return ReconcilePlan(result, after, after != before, create=create, patch=patch, decisions=decisions)
