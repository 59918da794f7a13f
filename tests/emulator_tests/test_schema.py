"""Custom resources are defaulted, pruned and validated by their CRD schema, as on a real cluster."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import KubeApi

from .helpers import MD, api_reason, model_deployment


def test_defaults_are_applied_and_unknown_fields_pruned(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    body = model_deployment("m1", unknownField="dropped")
    created = api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], body)
    assert created["spec"] == {"model": "resnet", "replicas": 1}


def test_invalid_objects_are_422(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1", replicas=-1))
    assert (caught.value.status, api_reason(caught.value)) == (422, "Invalid")
    assert "spec.replicas" in caught.value.body
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", {"spec": {"model": None}})
    assert caught.value.status == 422


def test_status_with_preserve_unknown_fields_is_kept(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    status = {"kopf": {"progress": {}}, "anything": {"nested": [1, 2]}}
    patched = api.patch_namespaced_custom_object_status(*MD[:2], kube_namespace, MD[2], "m1", {"status": status})
    assert patched["status"] == status
