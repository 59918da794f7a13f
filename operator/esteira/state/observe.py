"""KServe's view of an InferenceService -> the ModelDeployment's conditions, URL, modelStatus and phase."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.rollout.phase import Serving, phase_of
from esteira.state.conditions import get_condition, set_condition
from esteira.vocabulary import Decision

# KServe reports these when a model cannot load or the spec is refused; anything else not ready is pending.
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


@dataclass(frozen=True)
class Observation:
    """Where the report comes from: the object, its name, and whether this reconcile is changing it."""

    name: str
    isvc: dict[str, Any] | None
    touched: bool  # a write is on its way, so the status read describes the previous spec
    generation: int | None
    now: str
    url: str | None = None  # where clients call the ModelDeployment, when not at the InferenceService's URL


def _isvc_condition(isvc: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def _reports_failure(condition: dict[str, Any] | None) -> bool:
    reason = (condition or {}).get("reason") or ""
    return condition is not None and condition.get("status") == "False" and "fail" in reason.lower()


def _failure_info(model_status: dict[str, Any] | None) -> str:
    info = (model_status or {}).get("lastFailureInfo") or {}
    return str(info.get("message") or "")


def serving_state(obs: Observation, mode: str) -> tuple[Serving, dict[str, Any] | None]:
    """How KServe says the stable revision is doing, with its Ready condition.

    KServe's status.observedGeneration counts a child's generations (inference_service_status.go): in Knative
    mode the Knative Service's, which move with the InferenceService's as each of Esteira's changes reaches the
    service, so one behind says the status is about an earlier spec; in Standard mode the stable Deployment's,
    which a canary never moves (taken for the InferenceService's, it left the ModelDeployment not Ready for good
    after its first canary), and Ready there is the Deployment's availability, true through its rolling updates.
    """
    isvc = obs.isvc
    if isvc is None or obs.touched:
        return "pending", None
    status = isvc.get("status") or {}
    behind = status.get("observedGeneration", 0) < (isvc.get("metadata") or {}).get("generation", 0)
    if mode == "Knative" and behind:
        return "pending", None
    ready_cond = _isvc_condition(isvc, "Ready")
    if ready_cond is not None and ready_cond.get("status") == "True":
        return "ready", ready_cond
    transition = (status.get("modelStatus") or {}).get("transitionStatus")
    if transition in FAILED_TRANSITIONS or _reports_failure(ready_cond):
        return "failed", ready_cond
    return "pending", ready_cond


def observe_kserve(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, obs: Observation) -> list[Decision]:
    """Carry the InferenceService's state into the status in place; returns transitions worth an Event."""
    was_ready = (c := get_condition(status, "Ready")) is not None and c.status == "True"
    isvc_status = (obs.isvc or {}).get("status") or {}
    serving, ready_cond = serving_state(obs, spec.deployment_mode)
    model_status = isvc_status.get("modelStatus")
    status.url = (obs.url or isvc_status.get("url")) if obs.isvc is not None else None
    status.model_status = model_status
    status.inference_service = obs.name
    status.observed_generation = obs.generation
    decisions: list[Decision] = []
    g, now = obs.generation, obs.now
    if serving == "ready":
        set_condition(status, "Ready", True, "InferenceServiceReady", f"Serving at {status.url}", now, g)
        set_condition(status, "Degraded", False, "Healthy", "", now, g)
        if not was_ready:
            decisions.append(Decision("Ready", f"InferenceService {obs.name} is ready at {status.url}"))
    elif serving == "failed":
        transition = (model_status or {}).get("transitionStatus")
        reason = (ready_cond or {}).get("reason") or transition or "Failed"
        message = (ready_cond or {}).get("message") or _failure_info(model_status) or "InferenceService failed"
        set_condition(status, "Ready", False, "InferenceServiceFailed", f"{reason}: {message}", now, g)
        set_condition(status, "Degraded", True, "InferenceServiceFailed", f"{reason}: {message}", now, g)
        degraded = get_condition(status, "Degraded")
        if degraded is not None and degraded.last_transition_time == now:
            decisions.append(Decision("Degraded", f"InferenceService {obs.name}: {reason}: {message}", warning=True))
    else:
        set_condition(status, "Ready", False, "InferenceServicePending", "Waiting for KServe to report Ready", now, g)
        set_condition(status, "Degraded", False, "Healthy", "", now, g)
    set_progressing(status, serving, now, g)
    status.phase = phase_of(spec, status, serving)
    return decisions


def set_progressing(status: ModelDeploymentStatus, serving: Serving, now: str, generation: int | None) -> None:
    """Progressing says what the rollout waits for, by its hold, or that nothing is moving."""
    canary = status.canary
    if canary is not None:
        held = canary.pause_reason
        reason = ("RolloutPaused" if canary.paused else "RolloutHeld") if canary.hold else "CanaryRollout"
        copies = ", with a copy of every request stable answers" if canary.mirroring else ""
        message = f"Canary revision {canary.revision} at {canary.weight}% of traffic{copies}" + (
            f": {held}" if held else ""
        )
        set_condition(status, "Progressing", True, reason, message, now, generation)
    elif serving == "pending":
        set_condition(status, "Progressing", True, "Reconciling", "InferenceService is being updated", now, generation)
    else:
        set_condition(status, "Progressing", False, "Stable", "No rollout in progress", now, generation)
