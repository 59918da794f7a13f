"""The emulated API server evaluates a CRD's CEL rules as kube-apiserver does: ModelDeployment's own CRD
refuses what the operator would refuse, before the operator ever sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import KubeApi

from .helpers import MD

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "serving.esteira.io_modeldeployments.yaml"


def document(name: str = "iris", **spec: Any) -> dict[str, Any]:
    model = {"name": "iris", "version": "1", "storageUri": "s3://m/1"}
    return {
        "apiVersion": "serving.esteira.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


@pytest.fixture
def api(kube_api: KubeApi) -> KubeApi:
    kube_api.apply_crd(CRD)
    return kube_api


def refusal(exc: ApiException) -> tuple[int, str]:
    return exc.status, json.loads(exc.body)["message"]


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("9lives", {}, "metadata.name must start with a letter"),
        ("iris", {"autoscaling": {"minReplicas": 0}}, "Standard mode keeps at least one replica"),
        ("iris", {"batching": {"maxBatchSize": 8, "maxBatchDelayMs": 0}}, "5000 ms default"),
        ("iris", {"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu"),
        (
            "iris",
            {"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "2048Mi"}}},
            "spec.resources.requests: resources.requests must not exceed resources.limits",
        ),
        ("iris", {"resources": {"limits": {"nvidia.com/gpu": "500m"}}}, "counts whole units"),
    ],
)
def test_create_is_refused_with_the_rule_message(
    api: KubeApi, kube_namespace: str, name: str, spec: dict, message: str
) -> None:
    objects = api.custom_objects()
    with pytest.raises(ApiException) as caught:
        objects.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], document(name, **spec))
    status, text = refusal(caught.value)
    assert status == 422
    assert message in text
    listed = objects.list_namespaced_custom_object(*MD[:2], kube_namespace, MD[2])["items"]
    assert listed == []


def test_transition_rule_compares_with_the_stored_object(api: KubeApi, kube_namespace: str) -> None:
    objects = api.custom_objects()
    objects.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], document())
    objects.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "iris", {"spec": {"gpu": {"count": 1}}})
    with pytest.raises(ApiException) as caught:
        objects.patch_namespaced_custom_object(
            *MD[:2], kube_namespace, MD[2], "iris", {"spec": {"deploymentMode": "Knative"}}
        )
    assert refusal(caught.value) == (
        422,
        'modeldeployments.serving.esteira.io "iris" is invalid: spec.deploymentMode: deploymentMode cannot change '
        "after creation (KServe forbids it): create a new ModelDeployment instead",
    )
