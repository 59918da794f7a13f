"""The fake KServe controller writes the status KServe writes, and obeys the test's steering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.emulator.cluster import KubeApi, load_yaml
from tests.emulator.schemas import StructuralSchema
from tests.support.fake_kserve import Failure, FakeKServe
from tests.support.prerequisites import require_file
from tests.support.schemas import upstream_crds_dir

from .helpers import ISVC, inference_service
from .kserve_cases import canary, isvc

KSERVE_CRD = Path("kserve-v0.20.0") / "serving.kserve.io_inferenceservices.yaml"


@pytest.fixture
def kserve(crds: KubeApi, fake_kserve: FakeKServe | None) -> FakeKServe:
    if fake_kserve is None:
        pytest.skip("the fake KServe runs only against the API emulator")
    return fake_kserve


def create(api: KubeApi, namespace: str, name: str, **predictor: Any) -> None:
    api.custom_objects().create_namespaced_custom_object(
        *ISVC[:2], namespace, ISVC[2], inference_service(name, **predictor)
    )


def patch(api: KubeApi, namespace: str, name: str, predictor: dict[str, Any]) -> int:
    body = {"spec": {"predictor": predictor}}
    patched = api.custom_objects().patch_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name, body)
    return int(patched["metadata"]["generation"])


def status(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    obj = api.custom_objects().get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name)
    return dict(obj["status"])


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {condition["type"]: condition["status"] for condition in status["conditions"]}


def test_ready_status_like_kserve(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    create(crds, kube_namespace, "m1")
    kserve.wait_for("m1", kube_namespace)
    result = status(crds, kube_namespace, "m1")
    assert result["observedGeneration"] == 1
    assert result["url"] == f"http://m1.{kube_namespace}.example.com"
    assert result["address"]["url"] == f"http://m1.{kube_namespace}.svc.cluster.local"
    assert conditions(result) == {
        "Ready": "True",
        "PredictorReady": "True",
        "PredictorConfigurationReady": "True",
        "PredictorRouteReady": "True",
        "IngressReady": "True",
    }
    assert result["deploymentMode"] == "Knative"
    assert all(condition["lastTransitionTime"] for condition in result["conditions"])
    predictor = result["components"]["predictor"]
    assert predictor["latestCreatedRevision"] == predictor["latestReadyRevision"] == "m1-predictor-00001"
    assert predictor["latestRolledoutRevision"] == "m1-predictor-00001"
    assert predictor["traffic"] == [
        {"revisionName": "m1-predictor-00001", "percent": 100, "latestRevision": True, "tag": "latest"}
    ]
    assert result["modelStatus"] == {
        "transitionStatus": "UpToDate",
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
    }


def test_canary_splits_traffic_and_promotion_rolls_out(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    create(crds, kube_namespace, "m1")
    kserve.wait_for("m1", kube_namespace)
    generation = patch(crds, kube_namespace, "m1", {"canaryTrafficPercent": 20, "minReplicas": 2})
    kserve.wait_for("m1", kube_namespace, generation=generation)
    result = status(crds, kube_namespace, "m1")
    predictor = result["components"]["predictor"]
    assert result["observedGeneration"] == 2  # PropagateStatus: the Knative Service's, one more for its new spec
    assert [(t["revisionName"], t["percent"], t["tag"]) for t in predictor["traffic"]] == [
        ("m1-predictor-00002", 20, "latest"),
        ("m1-predictor-00001", 80, "prev"),
    ]
    assert predictor["latestRolledoutRevision"] == "m1-predictor-00001"

    generation = patch(crds, kube_namespace, "m1", {"canaryTrafficPercent": None})
    kserve.wait_for("m1", kube_namespace, generation=generation)
    predictor = status(crds, kube_namespace, "m1")["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == "m1-predictor-00003"
    assert predictor["previousRolledoutRevision"] == "m1-predictor-00001"
    assert [t["percent"] for t in predictor["traffic"]] == [100]


def test_failing_and_recovering(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    kserve.fail("m1", failure=Failure(reason="ModelLoadFailed", message="bad weights"))
    create(crds, kube_namespace, "m1")
    kserve.wait_for("m1", kube_namespace, outcome="failed")
    result = status(crds, kube_namespace, "m1")
    assert conditions(result)["Ready"] == "False"
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("ModelLoadFailed", "bad weights")
    assert result["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert result["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert "latestReadyRevision" not in result["components"]["predictor"]

    kserve.recover("m1", kube_namespace)
    kserve.wait_for("m1", kube_namespace, outcome="ready")
    assert conditions(status(crds, kube_namespace, "m1"))["Ready"] == "True"


def test_ready_delay_reports_progress_first(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    kserve.ready_delay = 0.5
    create(crds, kube_namespace, "m1")
    kserve.wait_for("m1", kube_namespace, outcome="progressing")
    progressing = status(crds, kube_namespace, "m1")
    assert conditions(progressing)["Ready"] == "Unknown"
    assert progressing["modelStatus"]["transitionStatus"] == "InProgress"
    kserve.wait_for("m1", kube_namespace, outcome="ready")
    assert conditions(status(crds, kube_namespace, "m1"))["Ready"] == "True"


def test_written_status_validates_against_kserves_crd(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    """With KServe's real CRD installed, the emulator itself would refuse (422) or prune a wrong status."""
    crd = load_yaml(require_file(upstream_crds_dir() / KSERVE_CRD, "run `make crds-upstream`"))
    crds.apply_crd(crd)
    schema = StructuralSchema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    kserve.fail("bad")
    create(crds, kube_namespace, "good", canaryTrafficPercent=10)
    create(crds, kube_namespace, "bad")
    kserve.wait_for("good", kube_namespace)
    kserve.wait_for("bad", kube_namespace, outcome="failed")
    assert kserve.errors == []
    for name in ("good", "bad"):
        obj = crds.custom_objects().get_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2], name)
        assert schema.errors(obj) == []
        assert schema.prepare(obj)["status"] == obj["status"]  # nothing was pruned


def test_standard_status_like_kserve(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    """Standard mode: no revisions or traffic; URLs from the predictor service names; one status per canary."""
    api = crds.custom_objects()
    where = (*ISVC[:2], kube_namespace, ISVC[2])
    api.create_namespaced_custom_object(*where, isvc("m1"))
    kserve.wait_for("m1", kube_namespace)
    result = status(crds, kube_namespace, "m1")
    assert result["deploymentMode"] == "Standard"
    assert result["url"] == f"http://m1-{kube_namespace}.example.com"
    assert result["address"]["url"] == f"http://m1-predictor.{kube_namespace}.svc.cluster.local"
    assert result["components"] == {"predictor": {"url": f"http://m1-predictor-{kube_namespace}.example.com"}}
    assert conditions(result) == {"IngressReady": "True", "PredictorReady": "True", "Ready": "True"}
    assert "canaryStatuses" not in result

    kserve.fail("m1", kube_namespace)
    body = {"spec": {"canary": [canary("rev-2", 20)]}}
    generation = patched_generation(api.patch_namespaced_custom_object(*where, "m1", body))
    kserve.wait_for("m1", kube_namespace, outcome="failed", generation=generation)
    result = status(crds, kube_namespace, "m1")
    assert conditions(result)["Ready"] == "True"  # the stable Deployment keeps serving
    assert conditions(result)["CanaryPredictorReady"] == "False"
    assert result["canaryStatuses"] == [
        {"name": "rev-2", "ready": False, "trafficPercent": 20, "modelStatus": {"transitionStatus": ""}}
    ]
    # PropagateRawStatus: the stable Deployment's observedGeneration, which a canary leaves as it was
    assert (generation, result["observedGeneration"]) == (2, 1)

    kserve.recover("m1", kube_namespace)
    kserve.wait_for("m1", kube_namespace, generation=generation)
    result = status(crds, kube_namespace, "m1")
    assert [arm["ready"] for arm in result["canaryStatuses"]] == [True]
    canary_condition = next(c for c in result["conditions"] if c["type"] == "CanaryPredictorReady")
    assert (canary_condition["status"], canary_condition["reason"]) == ("True", "AllCanariesReady")


def patched_generation(obj: object) -> int:
    assert isinstance(obj, dict)
    return int(obj["metadata"]["generation"])


def named_knative() -> dict[str, Any]:
    obj = isvc("m1", "Knative")
    obj["spec"]["predictor"]["name"] = "blue"
    return obj


def test_named_predictor_revisions(crds: KubeApi, kube_namespace: str, kserve: FakeKServe) -> None:
    """A named stable predictor names its Knative service and revisions <isvc>-<name>-predictor."""
    crds.custom_objects().create_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2], named_knative())
    kserve.wait_for("m1", kube_namespace)
    predictor = status(crds, kube_namespace, "m1")["components"]["predictor"]
    assert predictor["latestCreatedRevision"] == "m1-blue-predictor-00001"
    assert predictor["url"] == f"http://m1-blue-predictor.{kube_namespace}.example.com"
