"""Closing the loop on a cluster: a retraining trigger creates a Job carrying its evidence, the Job's
outcome is recorded, and the build it produces must beat stable's validation score to get a canary."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from tests.emulator.cluster import KubeApi
from tests.support.cluster import Esteira, eventually, model_source
from tests.support.fake_kserve import FakeKServe
from tests.support.specs import document, spec

pytestmark = pytest.mark.usefixtures("operator")

# On a real cluster the Job controller runs this and it succeeds; on the emulator the test plays that part.
JOB = {
    "backoffLimit": 0,
    "template": {"spec": {"containers": [{"name": "train", "image": "busybox:1.36", "command": ["true"]}]}},
}


def card(version: str, score: float) -> dict[str, Any]:
    return {"parentVersion": version, "validation": {"metric": "accuracy", "score": score}}


def md(namespace: str) -> dict[str, Any]:
    body = spec(retraining={"triggers": {"schedule": "24h"}, "job": JOB, "minInterval": "1h"})
    body["model"] = {**body["model"], **model_source("1.0.0", "s3://models/iris/1.0.0"), "card": card("0.9.0", 0.95)}
    return document(body, namespace=namespace)


def runs(esteira: Esteira, namespace: str) -> list[dict[str, Any]]:
    return ((esteira.get_md(namespace, "iris").get("status") or {}).get("retraining") or {}).get("runs") or []


def test_a_trigger_runs_a_job_and_a_worse_candidate_is_refused(
    esteira: Esteira, kube_api: KubeApi, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    created = esteira.create_md(kube_namespace, md(kube_namespace))
    batch = kubernetes.client.BatchV1Api(kube_api.api_client())

    def job() -> Any:
        found = batch.list_namespaced_job(kube_namespace, label_selector="serving.esteira.io/retrain-run").items
        return found[0] if found else None

    made = eventually(job, what="the retraining Job")
    assert made.metadata.name == "iris-retrain-1"
    assert made.metadata.owner_references[0].uid == created["metadata"]["uid"]
    env = {e.name: e.value for e in made.spec.template.spec.containers[0].env}
    assert json.loads(env["ESTEIRA_RETRAIN_EVIDENCE"])["signal"] == "Schedule"
    assert runs(esteira, kube_namespace)[0]["outcome"] == "Running"

    if kube_api.emulated:  # the Job controller's part: the Job completed
        complete = {"type": "Complete", "status": "True", "lastProbeTime": None, "lastTransitionTime": None}
        batch.patch_namespaced_job_status(
            "iris-retrain-1", kube_namespace, {"status": {"succeeded": 1, "conditions": [complete]}}
        )
    eventually(lambda: runs(esteira, kube_namespace)[0]["outcome"] == "Succeeded", 60, "the run recorded as Succeeded")

    # The run produced 1.1.0, validated worse than stable: it is refused and the run says so with both scores.
    worse = {**model_source("1.1.0", "s3://models/iris/1.1.0"), "card": card("1.0.0", 0.90)}
    esteira.patch_md(kube_namespace, "iris", {"spec": {"model": worse}})
    refused = eventually(
        lambda: runs(esteira, kube_namespace)[0]["outcome"] == "RejectedCandidate" and runs(esteira, kube_namespace)[0],
        what="the candidate refused",
    )
    assert "0.9" in refused["message"] and "0.95" in refused["message"]
    status = esteira.get_md(kube_namespace, "iris")["status"]
    assert status.get("canary") is None and status["stable"]["modelVersion"] == "1.0.0"
    eventually(  # posted after the status write
        lambda: "CandidateRejected" in [e["reason"] for e in esteira.events_for(kube_namespace, "iris")],
        what="the CandidateRejected event",
    )

    # A better build gets its canary.
    better = {**model_source("1.2.0", "s3://models/iris/1.2.0"), "card": card("1.0.0", 0.97)}
    esteira.patch_md(kube_namespace, "iris", {"spec": {"model": better}})
    eventually(lambda: (esteira.get_md(kube_namespace, "iris").get("status") or {}).get("canary"), what="a canary")


def test_a_job_left_by_an_earlier_model_deployment_of_the_name_fails_the_run_it_would_have_decided(
    esteira: Esteira, kube_api: KubeApi, kube_namespace: str
) -> None:
    """Deleted with `--cascade=orphan`, an earlier `iris` left its Job `iris-retrain-1` behind, owner gone, labels
    kept. The new `iris`'s run 1 must not take that Job's outcome, nor try to create it for ever."""
    batch = kubernetes.client.BatchV1Api(kube_api.api_client())
    labels = {"serving.esteira.io/deployment": "iris", "serving.esteira.io/retrain-run": "1"}
    left = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "iris-retrain-1", "labels": labels}}
    left["spec"] = {
        **JOB,
        "template": {**JOB["template"], "spec": {**JOB["template"]["spec"], "restartPolicy": "Never"}},
    }
    batch.create_namespaced_job(kube_namespace, left)
    esteira.create_md(kube_namespace, md(kube_namespace))
    failed = eventually(
        lambda: (
            (runs(esteira, kube_namespace) or [{}])[0].get("outcome") == "Failed" and runs(esteira, kube_namespace)[0]
        ),
        60,
        "run 1 failed on the Job it does not own",
    )
    assert "does not own" in failed["message"] and "iris-retrain-1" in failed["message"]
    said = eventually(
        lambda: [e for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "RetrainingFailed"],
        what="the RetrainingFailed event",
    )
    assert said[0]["type"] == "Warning"
    held = batch.read_namespaced_job("iris-retrain-1", kube_namespace)
    assert not held.metadata.owner_references, "the Job left behind is not adopted"
