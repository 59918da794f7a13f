"""KServe v0.20.0's InferenceService webhooks: each rule passes a valid object and refuses a broken one
with KServe's message, as pure functions and through the emulator's HTTP API (the ``kubernetes`` client)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import KubeApi
from tests.emulator.kserve import admission

from .helpers import ISVC
from .kserve_cases import CASES, MODE, Case, canary, isvc

DENIED = 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '


def create(api: KubeApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = api.custom_objects().create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], body)
    return cast(dict[str, Any], created)


def refusal(exc: ApiException) -> tuple[int, str, str]:
    status = json.loads(exc.body or "{}")
    return int(exc.status), str(status["reason"]), str(status["message"])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_rule_pure(case: Case) -> None:
    admission.admit(None, case.build(case.good))
    with pytest.raises(admission.AdmissionDenied) as refused:
        admission.admit(None, case.build(case.bad))
    assert refused.value.message == case.message


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_rule_over_http(crds: KubeApi, kube_namespace: str, case: Case) -> None:
    create(crds, kube_namespace, case.build(case.good))
    bad = case.build(case.bad)
    bad["metadata"]["name"] = bad["metadata"]["name"] if case.id == "name" else "other"
    expected = case.message.replace('InferenceService "m1"', 'InferenceService "other"')
    with pytest.raises(ApiException) as refused:
        create(crds, kube_namespace, bad)
    assert refusal(refused.value) == (403, "Forbidden", DENIED + expected)


def test_renderer_shapes_pass() -> None:
    """The shapes Esteira renders: an unnamed stable predictor, and Standard canaries with a named model."""
    admission.admit(None, isvc(mode="Knative", canaryTrafficPercent=10))
    standard = isvc()
    standard["spec"]["canary"] = [canary("rev-2", 25, minReplicas=1)]
    assert admission.validate_create(admission.default_inference_service(standard)) == []


def test_defaulter() -> None:
    obj = isvc(mode="RawDeployment")
    obj["metadata"]["labels"] = {"internal.serving.kserve.io/localmodel": "cache", "app": "x"}
    defaulted = admission.default_inference_service(obj)
    assert defaulted["metadata"]["annotations"] == {MODE: "Standard", "modelFormat": "pytorch"}
    assert defaulted["metadata"]["labels"] == {"app": "x"}  # local model cache disabled in the stock config
    assert obj["metadata"]["annotations"] == {MODE: "RawDeployment"}  # the input is left alone

    legacy = isvc()
    legacy["spec"]["predictor"] = {"triton": {"storageUri": "s3://t"}}
    legacy["metadata"]["annotations"]["modelFormat"] = "mine"
    converted = admission.default_inference_service(legacy)
    assert converted["spec"]["predictor"] == {
        "model": {"modelFormat": {"name": "triton"}, "storageUri": "s3://t", "protocolVersion": "v2"}
    }
    assert converted["metadata"]["annotations"]["modelFormat"] == "mine"  # a user's value is kept

    custom = isvc()
    custom["spec"]["predictor"] = {"containers": [{"image": "x"}]}
    container = admission.default_inference_service(custom)["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (1, "1"),
        ("0.5", "500m"),
        (0.5, "500m"),
        ("1000m", "1"),
        ("4096Mi", "4Gi"),
        ("1.5Gi", "1536Mi"),
        ("500Ki", "500Ki"),
        ("1023Ki", "1023Ki"),
        ("0.5Ki", "512"),
        ("3000", "3k"),
        ("2048", "2048"),
        ("1e3", "1e3"),
        ("2000e-3", "2"),
        ("0.0000000001", "1n"),
        ("0", "0"),
        ("1E", "1E"),
        ("2Ei", "2Ei"),
    ],
)
def test_the_defaulter_writes_every_quantity_back_canonical(sent: Any, stored: str) -> None:
    """The Go struct round trip: as `kubectl get isvc -o yaml` shows what Esteira sent (apimachinery
    quantity_test.go's canonical cases)."""
    obj = isvc()
    obj["spec"]["predictor"]["model"]["resources"] = {"requests": {"cpu": sent}, "limits": {"nvidia.com/gpu": sent}}
    resources = admission.default_inference_service(obj)["spec"]["predictor"]["model"]["resources"]
    assert resources == {"requests": {"cpu": stored}, "limits": {"nvidia.com/gpu": stored}}


def test_model_mesh_predictor_is_not_defaulted() -> None:
    defaulted = admission.default_inference_service(isvc(mode="ModelMesh"))
    assert "modelFormat" not in defaulted["metadata"]["annotations"]


def test_update_rules_pure() -> None:
    stored = admission.admit(None, isvc(name="m1"))
    stored["status"] = {"deploymentMode": "RawDeployment"}
    renamed = isvc(name="m1")
    renamed["spec"]["predictor"]["name"] = "rev-2"
    with pytest.raises(admission.AdmissionDenied) as refused:
        admission.admit(stored, renamed)
    assert refused.value.message == "predictor.name change requires a model change (e.g. storageUri)"
    renamed["spec"]["predictor"]["model"]["storageUri"] = "s3://models/m/2"
    admission.admit(stored, renamed)

    with pytest.raises(admission.AdmissionDenied) as refused:
        admission.admit(stored, isvc(name="m1", mode="Knative"))
    assert refused.value.message == "update rejected: deploymentMode cannot be changed from 'Standard' to 'Knative'"
    fresh = {key: value for key, value in stored.items() if key != "status"}
    admission.admit(fresh, isvc(name="m1", mode="Knative"))  # no status yet: nothing recorded to protect

    leaving = isvc(name="9lives")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert admission.validate_update(stored, leaving) == []  # objects being deleted pass


def test_update_rules_over_http(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    where = (*ISVC[:2], kube_namespace, ISVC[2])
    create(crds, kube_namespace, isvc())
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(*where, "m1", {"spec": {"predictor": {"name": "rev-2"}}})
    assert refusal(refused.value) == (
        403,
        "Forbidden",
        DENIED + "predictor.name change requires a model change (e.g. storageUri)",
    )

    api.patch_namespaced_custom_object_status(*where, "m1", {"status": {"deploymentMode": "Standard"}})
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(*where, "m1", {"metadata": {"annotations": {MODE: "Knative"}}})
    message = "update rejected: deploymentMode cannot be changed from 'Standard' to 'Knative'"
    assert refusal(refused.value) == (403, "Forbidden", DENIED + message)

    current = cast(dict[str, Any], api.get_namespaced_custom_object(*where, "m1"))
    current["spec"]["predictor"]["model"]["name"] = "kserve-container"
    with pytest.raises(ApiException) as refused:
        api.replace_namespaced_custom_object(*where, "m1", current)
    assert refusal(refused.value)[2] == DENIED + "the 'name' field is not allowed in standard predictor"


def test_defaulting_over_http(crds: KubeApi, kube_namespace: str) -> None:
    created = create(crds, kube_namespace, isvc(mode="RawDeployment"))
    assert created["metadata"]["annotations"] == {MODE: "Standard", "modelFormat": "pytorch"}
    assert created["metadata"]["generation"] == 1


def test_webhooks_can_be_switched_off(tmp_path: Any) -> None:
    from tests.emulator import EmulatorServer, KubeEmulator

    from .helpers import DATA

    with EmulatorServer(KubeEmulator(kserve_webhooks=False)) as server:
        api = KubeApi(kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"), url=server.url, emulator=server)
        api.apply_crd(DATA / "inferenceservices-crd.yaml")
        created = create(api, "default", isvc(name="9lives"))
        assert "modelFormat" not in created["metadata"]["annotations"]
