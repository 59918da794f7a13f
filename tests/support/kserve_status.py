"""The ``status`` KServe v0.20.0 writes on an InferenceService, per deployment mode (pure; no I/O).

Sources (kserve/kserve at v0.20.0): ``pkg/apis/serving/v1beta1/inference_service_status.go`` (fields,
conditions, PropagateStatus for Knative, PropagateRawStatus for Standard, model status),
``pkg/controller/v1beta1/inferenceservice/components/predictor.go`` (Reconcile, reconcileCanaryDeployments),
``reconcilers/ingress/ingress_reconciler.go`` (Knative URL and address), ``reconcilers/ingress/
kube_ingress_reconciler.go`` and ``httproute_reconciler.go`` (Standard URL: createRawURL, createAddress),
``controller.go`` (status.deploymentMode) and ``utils/utils.go`` (GetDeploymentMode).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.emulator.kserve import naming

Outcome = Literal["progressing", "ready", "failed"]
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
_LEGACY_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}  # constants.go: ParseDeploymentMode
DEFAULT_MODE = "Knative"  # stock inferenceservice-config: deploy.defaultDeploymentMode Serverless
_CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class Failure:
    """Why a model fails to load; ``reason`` must be one of KServe's ``lastFailureInfo.reason`` values."""

    reason: str = "ModelLoadFailed"
    message: str = "failed to load the model (injected by the test)"


@dataclass
class History:
    """What KServe remembers between reconciles of one InferenceService (Knative revisions, raw availability), and
    the generations of the child whose observedGeneration KServe reports as the InferenceService's."""

    by_generation: dict[int, str] = field(default_factory=dict)
    latest_ready: str | None = None
    rolled_out: str | None = None
    previous_rolled_out: str | None = None
    available: bool = False  # Standard: the stable Deployment has been available once
    child_generation: int = 0
    child_spec: str | None = None

    def child_observed(self, child_spec: Any) -> int:
        """The child's observedGeneration once its controller acted on ``child_spec``: one more each time that
        spec changes, as the API server counts a Deployment's or a Knative Service's generations (a Deployment's
        replicas written by an autoscaler, which count too, are not modelled)."""
        text = json.dumps(child_spec, sort_keys=True)
        if text != self.child_spec:
            self.child_spec, self.child_generation = text, self.child_generation + 1
        return self.child_generation


def deployment_mode(obj: dict[str, Any]) -> str:
    """utils.go: GetDeploymentMode: the recorded mode, else the annotation, else the configured default."""
    recorded = str((obj.get("status") or {}).get("deploymentMode") or "")
    annotated = str(((obj.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION) or "")
    mode = recorded or annotated or DEFAULT_MODE
    return _LEGACY_MODES.get(mode, mode)


def build_status(
    obj: dict[str, Any], outcome: Outcome, failure: Failure | None, history: History, domain: str
) -> dict[str, Any]:
    """The whole status for this object and outcome; ``history`` is updated as KServe's own records are."""
    if deployment_mode(obj) == "Standard":
        return _standard(obj, outcome, failure, history, domain)
    return _knative(obj, outcome, failure, history, domain)


def _knative(
    obj: dict[str, Any], outcome: Outcome, failure: Failure | None, history: History, domain: str
) -> dict[str, Any]:
    """Knative mode: the predictor is a Knative Service; traffic splits between its revisions."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
    predictor_spec = spec.get("predictor") or {}
    service = naming.predictor_service_name(name, predictor_spec.get("name"))
    latest = history.by_generation.setdefault(
        generation, naming.knative_revision_name(service, len(history.by_generation) + 1)
    )
    if outcome == "ready":
        traffic = _roll_out(history, latest, predictor_spec.get("canaryTrafficPercent"))
    else:
        traffic = [_traffic(history.rolled_out, 100, False, "prev")] if history.rolled_out else []
    now = _now()
    reason, message = _why(outcome, failure, f"Revision {latest} is being deployed")
    ready = _ready_status(outcome)
    conditions = [
        _condition("IngressReady", "True" if traffic else "False", now),
        _condition("PredictorConfigurationReady", ready, now, reason, message),
        _condition("PredictorReady", ready, now, reason, message),
        _condition("PredictorRouteReady", "True" if traffic else "False", now),
        _condition("Ready", ready, now, reason, message),
    ]
    predictor: dict[str, Any] = {
        "latestCreatedRevision": latest,
        # ksvc URL with Knative's default domain template {{.Name}}.{{.Namespace}}.{{.Domain}}
        "url": f"http://{naming.host_name(service, namespace, domain)}",
        "traffic": traffic,
    }
    for key, value in (
        ("latestReadyRevision", history.latest_ready),
        ("latestRolledoutRevision", history.rolled_out),
        ("previousRolledoutRevision", history.previous_rolled_out),
    ):
        if value:
            predictor[key] = value
    return {
        # PropagateStatus: the Knative Service's observedGeneration, not the InferenceService's; the service's spec
        # is the predictor's (its template and, from canaryTrafficPercent, its traffic)
        "observedGeneration": history.child_observed(predictor_spec),
        # ingress_reconciler.go: the service host is the predictor's with "-predictor" dropped
        "url": f"http://{naming.host_name(name, namespace, domain)}",
        "address": {"url": f"http://{name}.{namespace}.{_CLUSTER_DOMAIN}"},
        "conditions": conditions,
        "components": {"predictor": predictor},
        "modelStatus": _model_status(outcome, failure, latest, loaded_before=bool(history.rolled_out)),
        "deploymentMode": "Knative",  # controller.go: the parsed mode, never the legacy name
    }


def _standard(
    obj: dict[str, Any], outcome: Outcome, failure: Failure | None, history: History, domain: str
) -> dict[str, Any]:
    """Standard (raw) mode: Deployments and Services, no revisions; canaries are separate named Deployments.

    A failure or a rollout in progress hits the canaries when there are some (the stable Deployment keeps
    serving), otherwise the stable predictor.
    """
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name, namespace = meta["name"], meta["namespace"]
    predictor_spec = spec.get("predictor") or {}
    service = naming.predictor_service_name(name, predictor_spec.get("name"))
    arms = spec.get("canary") or []
    now = _now()
    if outcome == "ready":
        history.available = True
    stable_outcome: Outcome = "ready" if arms and history.available else outcome
    if stable_outcome == "progressing" and history.available:
        stable_outcome = "ready"  # PropagateRawStatus: Available=True during a rolling update stays True
    reason, message = _why(stable_outcome, failure, "Deployment is progressing")
    if stable_outcome == "ready":  # the Deployment's Available condition, copied (PropagateRawStatus)
        reason, message = "MinimumReplicasAvailable", "Deployment has minimum availability."
    ready = _ready_status(stable_outcome)
    conditions = [
        _condition("IngressReady", "True", now),
        _condition("PredictorReady", ready, now, reason, message),
        _condition("Ready", ready, now, "" if ready == "True" else reason, "" if ready == "True" else message),
    ]
    status: dict[str, Any] = {
        # PropagateRawStatus: the stable predictor Deployment's observedGeneration, which spec.canary never changes
        "observedGeneration": history.child_observed(predictor_spec),
        # createRawURL with the stock domainTemplate "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
        "url": f"http://{name}-{namespace}.{domain}",
        "address": {"url": f"http://{service}.{namespace}.{_CLUSTER_DOMAIN}"},  # createAddress
        "conditions": conditions,
        "components": {"predictor": {"url": f"http://{service}-{namespace}.{domain}"}},  # raw createRawURL
        "modelStatus": _model_status(stable_outcome, failure, service, loaded_before=history.available),
        "deploymentMode": "Standard",
    }
    if arms:  # predictor.go: reconcileCanaryDeployments
        arms_ready = outcome == "ready"
        status["canaryStatuses"] = [
            {
                "name": (arm.get("predictor") or {}).get("name", ""),
                "ready": arms_ready,
                "trafficPercent": int(arm.get("trafficPercent") or 0),
                "modelStatus": {"transitionStatus": ""},  # a Go struct is never omitted: written empty
            }
            for arm in arms
        ]
        canary_reason = "AllCanariesReady" if arms_ready else "CanariesNotReady"
        conditions.append(_condition("CanaryPredictorReady", "True" if arms_ready else "False", now, canary_reason))
    return status


def _roll_out(history: History, latest: str, canary: int | None) -> list[dict[str, Any]]:
    """Knative routing: a canary splits traffic with the last rolled-out revision, otherwise promote."""
    history.latest_ready = latest
    stable = history.rolled_out
    if canary is not None and stable and stable != latest:
        return [_traffic(latest, int(canary), True, "latest"), _traffic(stable, 100 - int(canary), False, "prev")]
    if stable != latest:
        history.previous_rolled_out, history.rolled_out = stable, latest
    return [_traffic(latest, 100, True, "latest")]


def _model_status(outcome: Outcome, failure: Failure | None, revision: str, *, loaded_before: bool) -> dict[str, Any]:
    """inference_service_status.go: PropagateModelStatus and UpdateModelTransitionStatus."""
    result: dict[str, Any] = {
        "transitionStatus": {"ready": "UpToDate", "progressing": "InProgress", "failed": "BlockedByFailedLoad"}[
            outcome
        ],
        "states": {
            "activeModelState": "Loaded" if outcome == "ready" or loaded_before else "Pending",
            "targetModelState": {"ready": "Loaded", "progressing": "Loading", "failed": "FailedToLoad"}[outcome],
        },
    }
    if outcome == "failed" and failure is not None:
        result["lastFailureInfo"] = {
            "reason": failure.reason,
            "message": failure.message,
            "modelRevisionName": revision,
            "time": _now(),
        }
    return result


def _why(outcome: Outcome, failure: Failure | None, progressing: str) -> tuple[str, str]:
    if outcome == "progressing":
        return "Deploying", progressing
    if outcome == "failed" and failure is not None:
        return failure.reason, failure.message
    return "", ""


def _ready_status(outcome: Outcome) -> str:
    return {"ready": "True", "progressing": "Unknown", "failed": "False"}[outcome]


def _traffic(revision: str | None, percent: int, latest: bool, tag: str) -> dict[str, Any]:
    return {"revisionName": revision, "percent": percent, "latestRevision": latest, "tag": tag}


def _condition(kind: str, status: str, now: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": status, "lastTransitionTime": now}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
