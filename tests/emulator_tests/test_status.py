"""The status subresource and metadata.generation follow the rules of CRDs with ``subresources.status``."""

from __future__ import annotations

from typing import Any

from tests.emulator.cluster import KubeApi
from tests.emulator.fixtures import widget_crd

from .helpers import MD, model_deployment


def md_api(api: KubeApi, namespace: str) -> tuple[Any, tuple[str, str, str, str]]:
    return api.custom_objects(), (MD[0], MD[1], namespace, MD[2])


def test_status_given_on_create_is_dropped(crds: KubeApi, kube_namespace: str) -> None:
    api, where = md_api(crds, kube_namespace)
    created = api.create_namespaced_custom_object(*where, {**model_deployment("m1"), "status": {"phase": "Fake"}})
    assert "status" not in created


def test_main_object_writes_ignore_status_and_bump_generation_only_for_spec(crds: KubeApi, kube_namespace: str) -> None:
    api, where = md_api(crds, kube_namespace)
    api.create_namespaced_custom_object(*where, model_deployment("m1"))
    patched = api.patch_namespaced_custom_object(*where, "m1", {"spec": {"model": "v2"}, "status": {"phase": "Fake"}})
    assert patched["spec"]["model"] == "v2"
    assert "status" not in patched
    assert patched["metadata"]["generation"] == 2
    labelled = api.patch_namespaced_custom_object(*where, "m1", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2  # metadata-only change
    assert int(labelled["metadata"]["resourceVersion"]) > int(patched["metadata"]["resourceVersion"])


def test_status_writes_change_only_status_and_keep_generation(crds: KubeApi, kube_namespace: str) -> None:
    api, where = md_api(crds, kube_namespace)
    created = api.create_namespaced_custom_object(*where, model_deployment("m1"))
    body = {"spec": {"model": "ignored"}, "metadata": {"labels": {"ignored": "yes"}}, "status": {"phase": "Ready"}}
    patched = api.patch_namespaced_custom_object_status(*where, "m1", body)
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"] == created["spec"]
    assert "labels" not in patched["metadata"]
    assert patched["metadata"]["generation"] == 1
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_status_put_and_json_patch(crds: KubeApi, kube_namespace: str) -> None:
    api, where = md_api(crds, kube_namespace)
    api.create_namespaced_custom_object(*where, model_deployment("m1"))
    current = api.get_namespaced_custom_object(*where, "m1")
    replaced = api.replace_namespaced_custom_object_status(*where, "m1", {**current, "status": {"phase": "A"}})
    assert replaced["status"] == {"phase": "A"}
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": replaced["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/status/phase", "value": "B"},
    ]
    patched = api.patch_namespaced_custom_object_status(*where, "m1", ops, _content_type="application/json-patch+json")
    assert patched["status"] == {"phase": "B"}
    assert patched["metadata"]["generation"] == 1


def test_resources_without_status_subresource_keep_status_on_main_writes(
    kube_api: KubeApi, kube_namespace: str
) -> None:
    kube_api.require_emulator("installing a throw-away CRD")
    kube_api.apply_crd(
        widget_crd(schema={"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    )
    api = kube_api.custom_objects()
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": "A"}}
    created = api.create_namespaced_custom_object("example.com", "v1", kube_namespace, "widgets", body)
    assert created["status"] == {"phase": "A"}
    patched = api.patch_namespaced_custom_object(
        "example.com", "v1", kube_namespace, "widgets", "w", {"status": {"phase": "B"}}
    )
    assert patched["status"] == {"phase": "B"}
    # Without a status subresource every non-metadata change counts (apiextensions strategy.go: PrepareForUpdate).
    assert patched["metadata"]["generation"] == 2
