"""The pure reconcile planner: create, update, drift correction, status from KServe, invalid specs."""

from __future__ import annotations

import copy
import json
from typing import Any

from esteira.routing.base import key_of
from esteira.state.drift import is_subset
from esteira.state.reconcile import ReconcileInput, plan_reconcile
from esteira.vocabulary import ANNOTATION_LAST_APPLIED as LAST_APPLIED
from esteira.vocabulary import Command
from tests.support.specs import model, spec

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def run(
    body: dict[str, Any],
    status: dict[str, Any] | None = None,
    isvc: dict[str, Any] | None = None,
    now: str = NOW,
    generation: int = 1,
    **more: Any,
):
    """One reconcile of `iris` in `models`; ``more`` sets the other inputs (command, retrain_jobs, ...)."""
    return plan_reconcile(
        ReconcileInput(
            name="iris",
            namespace="models",
            generation=generation,
            spec=body,
            status=status or {},
            objects={key_of(isvc): isvc} if isvc else {},
            now=now,
            **more,
        )
    )


def apply(isvc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), as the API server applies it."""
    out = copy.deepcopy(isvc)

    def merge(target: dict[str, Any], change: dict[str, Any]) -> None:
        for key, value in change.items():
            if value is None:
                target.pop(key, None)
            elif isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = copy.deepcopy(value)

    merge(out, patch)
    return out


def kserve_ready(isvc: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    out = copy.deepcopy(isvc)
    out["metadata"]["generation"] = generation
    out["status"] = {
        "observedGeneration": generation,
        "url": "http://iris.models.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
        "modelStatus": {"transitionStatus": "UpToDate"},
    }
    return out


def test_first_reconcile_creates_and_reports_pending() -> None:
    plan = run(spec())
    assert plan.result == "created"
    assert plan.create is not None and plan.patch is None
    assert LAST_APPLIED in plan.create["metadata"]["annotations"]
    assert plan.status["phase"] == "Pending"
    assert plan.status["stable"]["revision"] == 1
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InferenceServicePending"
    assert [d.reason for d in plan.decisions] == ["RevisionCreated", "Created"]


def test_ready_inference_service_makes_the_deployment_ready() -> None:
    first = run(spec())
    assert first.create is not None
    plan = run(spec(), status=first.status, isvc=kserve_ready(first.create), now=LATER)
    assert plan.result == "unchanged"
    assert plan.status["phase"] == "Ready"
    assert plan.status["url"] == "http://iris.models.example.com"
    assert plan.status["modelStatus"] == {"transitionStatus": "UpToDate"}
    assert [d.reason for d in plan.decisions] == ["Ready"]
    again = run(spec(), status=plan.status, isvc=kserve_ready(first.create), now=LATER)
    assert not again.status_changed and again.decisions == []


def test_spec_change_patches_only_what_changed_and_removes_what_is_gone() -> None:
    body = spec(batching={"maxBatchSize": 8})
    first = run(body)
    assert first.create is not None
    isvc = kserve_ready(first.create)
    assert "batcher" in isvc["spec"]["predictor"]
    changed = spec(batching={"maxBatchSize": 1}, resources={"limits": {"memory": "4Gi"}})
    plan = run(changed, status=first.status, isvc=isvc, generation=2)
    assert plan.result == "updated" and plan.patch is not None
    assert plan.patch["spec"]["predictor"]["batcher"] is None
    patched = apply(isvc, plan.patch)
    assert "batcher" not in patched["spec"]["predictor"]
    assert patched["spec"]["predictor"]["model"]["resources"] == {
        "requests": {"memory": "4Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert [d.reason for d in plan.decisions] == ["Updated"]
    assert run(changed, status=plan.status, isvc=patched).patch is None


def test_manual_edit_is_put_back_and_webhook_defaults_are_left_alone() -> None:
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    isvc["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "1"}}  # defaulted field Esteira never set
    isvc["spec"]["predictor"]["containerConcurrency"] = 0
    assert run(spec(), status=first.status, isvc=isvc).patch is None

    edited = copy.deepcopy(isvc)
    edited["spec"]["predictor"]["maxReplicas"] = 50
    edited["spec"]["predictor"]["model"]["storageUri"] = "s3://elsewhere"
    plan = run(spec(), status=first.status, isvc=edited)
    assert plan.result == "updated" and plan.patch is not None
    assert [d.reason for d in plan.decisions if d.warning] == ["DriftCorrected"]
    restored = apply(edited, plan.patch)
    assert restored["spec"]["predictor"]["maxReplicas"] == 1
    assert restored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris/1.0.0"
    assert restored["spec"]["predictor"]["containerConcurrency"] == 0


def test_invalid_spec_changes_nothing_but_status() -> None:
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    ready = run(spec(), status=first.status, isvc=isvc)
    bad = spec(autoscaling={"metric": "rps"})
    plan = run(bad, status=ready.status, isvc=isvc, generation=2)
    assert plan.result == "invalid"
    assert plan.create is None and plan.patch is None
    assert plan.status["phase"] == "Invalid"
    condition = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert condition["status"] == "False" and condition["reason"] == "InvalidSpec"
    assert "spec.autoscaling.metric" in condition["message"]
    assert plan.status["stable"] == ready.status["stable"]
    assert plan.status["history"] == ready.status["history"]
    (decision,) = plan.decisions
    assert decision.warning and decision.reason == "InvalidSpec"
    assert run(bad, status=plan.status, isvc=isvc, generation=2).decisions == []


def test_invalid_new_model_version_does_not_make_a_revision() -> None:
    first = run(spec())
    bad = spec(model=model(version="2.0.0", storageUri="s3://m/2"), autoscaling={"minReplicas": 0})
    plan = run(bad, status=first.status, generation=2)
    assert plan.result == "invalid"
    assert plan.status["latestRevision"] == 1
    assert "canary" not in plan.status


def test_deployment_mode_cannot_change() -> None:
    first = run(spec())
    assert first.create is not None
    plan = run(spec(deploymentMode="Knative"), status=first.status, isvc=kserve_ready(first.create), generation=2)
    assert plan.result == "invalid"
    assert "spec.deploymentMode: cannot change from Standard to Knative" in plan.status["conditions"][0]["message"]


def test_failed_model_load_is_degraded_with_kserve_message() -> None:
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    isvc["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "ModelLoadFailed", "message": "no model-store/iris.mar"}
    ]
    isvc["status"]["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad"}
    plan = run(spec(), status=first.status, isvc=isvc)
    assert plan.status["phase"] == "Degraded"
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "no model-store/iris.mar" in degraded["message"]
    assert [d.reason for d in plan.decisions] == ["Degraded"]


def test_a_failure_message_past_a_condition_s_limit_is_cut_not_refused() -> None:
    """A model server's whole traceback in KServe's status: refused, the status was never written again."""
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    traceback = "Traceback (most recent call last):\n" + "  File x, line 1\n" * 4000
    isvc["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "Failed", "message": traceback}]
    plan = run(spec(), status=first.status, isvc=isvc)
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert len(degraded["message"]) == 32768 and "Traceback (most recent call last)" in degraded["message"]


def test_new_version_shows_progressing_canary() -> None:
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    plan = run(spec(model=model(version="2", storageUri="s3://m/2")), status=first.status, isvc=isvc, generation=2)
    assert plan.status["phase"] == "Progressing"
    assert plan.status["canary"]["revision"] == 2
    assert plan.patch is not None and plan.patch["spec"]["canary"][0]["trafficPercent"] == 0


def test_condition_transition_time_moves_only_on_change() -> None:
    first = run(spec())
    assert first.create is not None
    isvc = kserve_ready(first.create)
    ready = run(spec(), status=first.status, isvc=isvc, now=LATER)
    later = run(spec(), status=ready.status, isvc=isvc, now="2026-01-02T00:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in later.status["conditions"]}
    assert times["Ready"] == LATER


def test_resource_quantities_compare_by_value_as_kserve_s_webhook_rewrites_them() -> None:
    """KServe's defaulter writes every quantity back in canonical form: the same value is no drift, another is."""
    wanted = {"spec": {"predictor": {"model": {"resources": {"requests": {"cpu": 1, "memory": "4096Mi"}}}}}}
    canonical = {"spec": {"predictor": {"model": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}}}}
    assert is_subset(wanted, canonical)
    canonical["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] = "1500m"
    assert not is_subset(wanted, canonical)
    assert not is_subset({"env": {"requests": "1"}}, {"env": {"requests": 1}}), "only under resources"
    assert is_subset({"resources": {"limits": {"cpu": "0.5n"}}}, {"resources": {"limits": {"cpu": "1n"}}})


def test_is_subset_compares_lists_item_by_item() -> None:
    assert is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}], "b": 3})
    assert not is_subset({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"x": 2}]})
    assert not is_subset({"a": {"b": 1}}, {"a": {"b": 2}})


def test_last_applied_annotation_is_compact_json() -> None:
    created = run(spec()).create
    assert created is not None
    record = json.loads(created["metadata"]["annotations"][LAST_APPLIED])
    assert record["spec"] == created["spec"]


def knative_canary() -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, Any]]:
    """A Knative ModelDeployment with revision 2 (model 2) its ready canary: (stable's spec, the canary's spec, the
    plan that made the canary, the live InferenceService)."""
    knative = spec(deploymentMode="Knative", autoscaling={"metric": "concurrency"})
    first = run(knative)
    assert first.create is not None
    v2 = {**knative, "model": model(version="2", storageUri="s3://m/2")}
    canary_plan = run(v2, status=first.status, isvc=kserve_ready(first.create), generation=2)
    assert canary_plan.patch is not None
    live = kserve_ready(apply(first.create, canary_plan.patch), generation=2)
    live["status"]["components"] = {"predictor": {"latestReadyRevision": "r2", "latestCreatedRevision": "r2"}}
    return knative, v2, canary_plan, live


def test_knative_rollback_pins_traffic_to_the_previous_revision_until_stable_is_back() -> None:
    _, v2, canary_plan, live = knative_canary()

    aborted = plan_reconcile(
        ReconcileInput(
            name="iris",
            namespace="models",
            generation=2,
            spec=v2,
            status=canary_plan.status,
            objects={key_of(live): live},
            now=LATER,
            command=Command(id="x", action="abort"),
        )
    )
    assert aborted.status["lastRollout"]["outcome"] == "RolledBack"
    assert aborted.patch is not None
    predictor = apply(live, aborted.patch)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 0, "traffic stays on the previous revision"
    assert predictor["model"]["storageUri"] == "s3://models/iris/1.0.0", "stable's spec is restored"

    restored = kserve_ready(apply(live, aborted.patch), generation=3)
    restored["status"]["components"] = {"predictor": {"latestReadyRevision": "r3", "latestCreatedRevision": "r3"}}
    settled = run(v2, status=aborted.status, isvc=restored, generation=2, now=LATER)
    assert settled.patch is not None and settled.patch["spec"]["predictor"]["canaryTrafficPercent"] is None
    # Lifting the pin changes the generation, which KServe has not observed yet: read as "not restored", the pin
    # went back, and was lifted again, write after write.
    lifted = apply(restored, settled.patch)
    lifted["metadata"]["generation"] = 4
    after = run(v2, status=settled.status, isvc=lifted, generation=2, now=LATER)
    assert after.patch is None and not after.decisions


def test_knative_pins_traffic_when_a_canary_is_replaced_by_stable_s_own_build() -> None:
    """A GitOps revert of the spec to stable's build ends the canary without a rollback: unpinned, Knative sent
    every request to its latest ready revision, the abandoned canary, until stable's came up again."""
    knative, _, canary_plan, live = knative_canary()
    reverted = run(knative, status=canary_plan.status, isvc=live, generation=3, now=LATER)
    assert reverted.status.get("canary") is None and reverted.patch is not None
    predictor = apply(live, reverted.patch)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 0 and predictor["model"]["storageUri"] == "s3://models/iris/1.0.0"


def test_a_gateway_routed_deployment_is_served_at_its_route_s_host() -> None:
    """Its stable revision's InferenceService has a URL of its own, which would skip the route and its split."""
    body = spec(rollout={"router": "GatewayAPI"})
    first = plan_reconcile(ReconcileInput("iris", "models", 1, body, {}, {}, NOW, ingress_domain="ml.internal"))
    isvc = next(obj for obj in first.creates if obj["kind"] == "InferenceService")
    objects = {key_of(obj): obj for obj in first.creates} | {key_of(isvc): kserve_ready(isvc)}
    plan = plan_reconcile(
        ReconcileInput("iris", "models", 1, body, first.status, objects, LATER, ingress_domain="ml.internal")
    )
    assert plan.status["url"] == "http://iris-models.ml.internal"
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["message"] == "Serving at http://iris-models.ml.internal"


def test_a_job_this_model_deployment_does_not_own_decides_none_of_its_runs() -> None:
    """An earlier ModelDeployment of this name, deleted with its Jobs orphaned, left `iris-retrain-1` complete."""
    job_spec = {"template": {"spec": {"containers": [{"name": "train", "image": "example.com/train:1"}]}}}
    body = spec(retraining={"triggers": {"schedule": "24h"}, "job": job_spec})
    status = run(body).status  # stable recorded; then a run started
    status["retraining"] = {"runs": [{"run": 1, "at": NOW, "signal": "Schedule", "reason": "schedule"}]}
    status["retraining"]["runs"][0] |= {"outcome": "Running", "job": "iris-retrain-1"}
    status["retraining"] |= {"nextRun": 2, "lastTriggeredAt": NOW, "handled": ["schedule-0"]}
    left = {"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    left["metadata"] = {"name": "iris-retrain-1", "labels": {"serving.esteira.io/retrain-run": "1"}}

    def planned(owners: list[dict[str, Any]]):
        job = copy.deepcopy(left)
        job["metadata"]["ownerReferences"] = owners
        return run(body, copy.deepcopy(status), now=LATER, retrain_jobs={"iris-retrain-1": job}, owner_uid="uid-now")

    orphaned = planned([])
    assert orphaned.status["retraining"]["runs"][0]["outcome"] == "Running"
    assert [j["metadata"]["name"] for j in orphaned.retrain_jobs] == ["iris-retrain-1"], "its own is asked for"
    ours = planned([{"apiVersion": "serving.esteira.io/v1alpha1", "kind": "ModelDeployment", "uid": "uid-now"}])
    assert ours.status["retraining"]["runs"][0]["outcome"] == "Succeeded" and ours.retrain_jobs == []


def test_unreadable_status_starts_afresh_but_remembers_the_commands_carried_out() -> None:
    """Forgotten, the command annotation still on the object was carried out again."""
    unreadable = {"phase": "Sideways", "history": "not a list", "lastAnnotationCommand": "c-1", "lastCommand": "u-1"}
    plan = run(spec(), status=unreadable, command=Command("c-1", "pause"))
    assert plan.status["lastAnnotationCommand"] == "c-1" and plan.status["lastCommand"] == "u-1"
    assert not [d for d in plan.decisions if "pause" in d.message.lower() or d.reason.startswith("Command")]
