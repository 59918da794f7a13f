"""Deletion: finalizers hold objects back, owners take their dependents along, namespaces empty out."""

from __future__ import annotations

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import KubeApi

from .helpers import ISVC, MD, inference_service, model_deployment


def test_delete_without_finalizers_removes_at_once(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    with pytest.raises(ApiException) as caught:
        api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    assert caught.value.status == 404


def test_finalizers_hold_the_object_until_removed_then_deleted_event(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    body = model_deployment("m1")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], body)
    api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    marked = api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["finalizers"] == ["example.com/cleanup"]

    with pytest.raises(ApiException) as caught:  # no new finalizers once deletion has started
        api.patch_namespaced_custom_object(
            *MD[:2], kube_namespace, MD[2], "m1", {"metadata": {"finalizers": ["example.com/cleanup", "other"]}}
        )
    assert caught.value.status == 422

    since = marked["metadata"]["resourceVersion"]
    api.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as caught:
        api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    assert caught.value.status == 404
    events = watch.Watch().stream(
        api.list_namespaced_custom_object, *MD[:2], kube_namespace, MD[2], resource_version=since, timeout_seconds=1
    )
    # As on a real server, removing the last finalizer deletes the object: one DELETED event, no MODIFIED.
    assert [(event["type"], event["object"]["metadata"].get("finalizers")) for event in events] == [("DELETED", None)]


def test_delete_precondition_on_resource_version(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    with pytest.raises(ApiException) as caught:
        api.delete_namespaced_custom_object(
            *MD[:2], kube_namespace, MD[2], "m1", body={"preconditions": {"resourceVersion": "1"}}
        )
    assert caught.value.status == 409


def test_dependents_are_garbage_collected_with_their_owner(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    owner = api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    child = inference_service("m1")
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": "m1", "uid": owner["metadata"]["uid"]}
    ]
    api.create_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2], child)
    api.create_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2], inference_service("unowned"))
    api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    left = api.list_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2])["items"]
    assert [item["metadata"]["name"] for item in left] == ["unowned"]


def test_deleting_a_namespace_deletes_its_objects(crds: KubeApi) -> None:
    namespace = crds.create_namespace()
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], namespace, MD[2], model_deployment("m1"))
    crds.delete_namespace(namespace)
    assert api.list_namespaced_custom_object(*MD[:2], namespace, MD[2])["items"] == []
    assert namespace not in {ns.metadata.name for ns in crds.core().list_namespace().items}
