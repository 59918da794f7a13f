"""One reconcile, planned without I/O: the ModelDeployment, its live children and evidence in, actions out.

The adapter (`esteira.controller`) reads the objects (and, when an analysis is due, the metrics), calls
`plan_reconcile`, applies what it returns and posts the decisions as Events. Planning twice on the same
input gives the same plan, which is what makes the operator idempotent across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec, check_name
from esteira.api.status import ModelDeploymentStatus, Phase
from esteira.render.httproute import arm_service_name
from esteira.render.inferenceservice import ISVC_API_VERSION, RenderContext
from esteira.rollout.engine import Command, EngineInput, advance, parse_time
from esteira.rollout.evidence import Evidence
from esteira.routing import ObjectKey, router_for
from esteira.routing.base import key_of
from esteira.routing.kserve import knative_restoring
from esteira.state import merge_patch
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
    objects: Mapping[ObjectKey, dict[str, Any]]  # the live children, by (apiVersion, kind, name)
    now: str
    prometheus_url: str | None = None
    evidence: Evidence | None = None
    metrics_error: str | None = None
    command: Command | None = None


@dataclass
class ReconcilePlan:
    result: Result
    status: dict[str, Any]
    status_changed: bool
    status_patch: dict[str, Any] = field(default_factory=dict)  # merge patch from the status read to `status`
    creates: list[dict[str, Any]] = field(default_factory=list)
    patches: list[tuple[ObjectKey, dict[str, Any]]] = field(default_factory=list)
    deletes: list[ObjectKey] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def create(self) -> dict[str, Any] | None:
        """The first object to create (the single InferenceService of the KServe router)."""
        return self.creates[0] if self.creates else None

    @property
    def patch(self) -> dict[str, Any] | None:
        """The first patch (the single InferenceService of the KServe router)."""
        return self.patches[0][1] if self.patches else None


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
    patch = merge_patch.diff(inp.status or {}, after)
    return ReconcilePlan("invalid", after, before != after, status_patch=patch, decisions=decisions)


def _check_mode_unchanged(spec: ModelDeploymentSpec, objects: Mapping[ObjectKey, dict[str, Any]]) -> None:
    modes = {
        ((obj.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)
        for key, obj in objects.items()
        if key[1] == "InferenceService"
    } - {None}
    for current in modes:
        if current == spec.deployment_mode:
            continue
        raise InvalidSpec.single(
            "spec.deploymentMode",
            f"cannot change from {current} to {spec.deployment_mode} after creation (KServe forbids it): "
            "create a new ModelDeployment instead",
        )


def _isvc_condition(isvc: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def _observe(
    inp: ReconcileInput,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    isvc: dict[str, Any] | None,
    touched: bool,
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

    if status.canary is not None:
        canary = status.canary
        held = canary.pause_reason
        set_condition(
            status,
            "Progressing",
            True,
            ("RolloutPaused" if canary.paused else "RolloutHeld") if held else "CanaryRollout",
            f"Canary revision {canary.revision} at {canary.weight}% of traffic" + (f": {held}" if held else ""),
            now,
            g,
        )
    elif not ready and not failed:
        set_condition(status, "Progressing", True, "Reconciling", "InferenceService is being updated", now, g)
    else:
        set_condition(status, "Progressing", False, "Stable", "No rollout in progress", now, g)
    status.phase = _phase(status, spec, ready, failed)
    return decisions


def _reports_failure(condition: dict[str, Any] | None) -> bool:
    reason = (condition or {}).get("reason") or ""
    return condition is not None and condition.get("status") == "False" and "fail" in reason.lower()


def _failure_info(model_status: dict[str, Any] | None) -> str:
    info = (model_status or {}).get("lastFailureInfo") or {}
    return str(info.get("message") or "")


def _phase(status: ModelDeploymentStatus, spec: ModelDeploymentSpec, ready: bool, failed: bool) -> Phase:
    if failed:
        return "Degraded"
    if status.canary is not None:
        return "Paused" if status.canary.paused else "Progressing"
    last = status.last_rollout
    if (
        last is not None
        and last.outcome == "RolledBack"
        and (last.model_version, last.storage_uri) == (spec.model.version, spec.model.storage_uri)
    ):
        return "RolledBack"
    return "Ready" if ready else "Pending"


def _primary_key(ctx: RenderContext, spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> ObjectKey:
    """The InferenceService whose state the ModelDeployment reports: the one serving stable."""
    if spec.rollout.router == "GatewayAPI" and status.stable is not None:
        arm = traffic_plan(status).stable
        return (ISVC_API_VERSION, "InferenceService", arm_service_name(ctx, arm))
    return (ISVC_API_VERSION, "InferenceService", ctx.name)


def _restoring_after_rollback(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, isvc: dict[str, Any] | None
) -> bool:
    last = status.last_rollout
    return (
        spec.deployment_mode == "Knative"
        and spec.rollout.router == "KServe"
        and status.canary is None
        and status.stable is not None
        and last is not None
        and last.outcome == "RolledBack"
        and knative_restoring(status.stable.revision, isvc)
    )


def _command_effects(inp: ReconcileInput, status: ModelDeploymentStatus) -> tuple[bool, int | None]:
    """(retry, rollback_to) asked by a command not carried out yet; the engine records its id."""
    command = inp.command
    if command is None or command.id == status.last_command:
        return False, None
    return command.action == "retry", command.revision if command.action == "rollback" else None


def plan_reconcile(inp: ReconcileInput) -> ReconcilePlan:
    """Decide what to create, patch or delete, where the rollout goes, and what the status becomes."""
    status = _read_status(inp.status)
    before = status.to_wire()
    try:
        check_name(inp.name)
        spec = ModelDeploymentSpec.parse(inp.spec)
        _check_mode_unchanged(spec, inp.objects)
        retry, rollback_to = _command_effects(inp, status)
        change = track_revisions(spec, status, inp.now, retry=retry, rollback_to=rollback_to)
        ctx = RenderContext(inp.name, inp.namespace, inp.prometheus_url)
        router = router_for(spec.rollout.router)
        decisions = list(change.decisions)
        status = change.status
        requeue_after = None
        if status.canary is not None or inp.command is not None:
            route = router.observe(ctx, spec, traffic_plan(status), inp.objects)
            engine = advance(
                EngineInput(
                    spec=spec,
                    status=status,
                    now=parse_time(inp.now),
                    canary_ready=route.canary_ready,
                    observed_weight=route.canary_weight,
                    evidence=inp.evidence,
                    metrics_error=inp.metrics_error,
                    command=inp.command,
                )
            )
            status, requeue_after = engine.status, engine.requeue_after
            decisions += engine.decisions
        serving = traffic_plan(status)
        if _restoring_after_rollback(spec, status, inp.objects.get(_primary_key(ctx, spec, status))):
            serving = replace(serving, pin_previous=True)
        desired = [with_last_applied(obj) for obj in router.desired(ctx, spec, serving)]
    except InvalidSpec as exc:
        return _invalid(inp, _read_status(inp.status), exc)

    plan = ReconcilePlan("unchanged", {}, False, decisions=decisions, requeue_after=requeue_after)
    wanted = {key_of(obj): obj for obj in desired}
    for key, obj in wanted.items():
        live = inp.objects.get(key)
        if live is None:
            plan.creates.append(obj)
            plan.decisions.append(Decision("Created", f"Created {key[1]} {key[2]}"))
        elif (patch := drift_patch(live, obj)) is not None:
            plan.patches.append((key, patch))
            if last_applied(live) == managed_view(obj):
                plan.decisions.append(
                    Decision("DriftCorrected", f"Put back a manual change to {key[1]} {key[2]}", True)
                )
            else:
                plan.decisions.append(Decision("Updated", f"Updated {key[1]} {key[2]} to the current spec"))
    for key in inp.objects:
        if key not in wanted:
            plan.deletes.append(key)
            plan.decisions.append(Decision("Deleted", f"Deleted {key[1]} {key[2]}: no longer serves any revision"))
    if plan.creates:
        plan.result = "created"
    elif plan.patches or plan.deletes:
        plan.result = "updated"

    primary = _primary_key(ctx, spec, status)
    touched = any(key == primary for key, _ in plan.patches) or primary in {key_of(o) for o in plan.creates}
    plan.decisions += _observe(inp, spec, status, inp.objects.get(primary), touched=touched)
    plan.status = status.to_wire()
    plan.status_changed = plan.status != before
    plan.status_patch = merge_patch.diff(inp.status or {}, plan.status)
    return plan
