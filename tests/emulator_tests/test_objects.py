"""Creating, reading, listing, updating and patching objects behaves as on a real API server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import KubeApi

from .helpers import MD, api_reason, http, model_deployment

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def create_md(api: KubeApi, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return api.custom_objects().create_namespaced_custom_object(
        *MD[:2], namespace, MD[2], model_deployment(name, **spec)
    )


def test_create_sets_server_owned_metadata_and_takes_namespace_from_url(crds: KubeApi, kube_namespace: str) -> None:
    created = create_md(crds, kube_namespace, "m1")
    meta = created["metadata"]
    assert meta["namespace"] == kube_namespace  # the body had none
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert RFC3339.match(meta["creationTimestamp"])
    fetched = crds.custom_objects().get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    assert fetched == created


def test_resource_versions_grow_across_resources(crds: KubeApi, kube_namespace: str) -> None:
    first = int(create_md(crds, kube_namespace, "a")["metadata"]["resourceVersion"])
    cm = crds.core().create_namespaced_config_map(kube_namespace, {"metadata": {"name": "c"}})
    second = int(create_md(crds, kube_namespace, "b")["metadata"]["resourceVersion"])
    assert first < int(cm.metadata.resource_version) < second


def test_namespace_mismatch_between_url_and_body_is_rejected(crds: KubeApi, kube_namespace: str) -> None:
    body = model_deployment("m1")
    body["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(ApiException) as caught:
        crds.custom_objects().create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], body)
    assert caught.value.status == 400


def test_list_is_per_namespace_and_carries_a_resource_version(crds: KubeApi, kube_namespace: str) -> None:
    created = create_md(crds, kube_namespace, "m1")
    other = crds.create_namespace()
    api = crds.custom_objects()
    listed = api.list_namespaced_custom_object(*MD[:2], kube_namespace, MD[2])
    assert [item["metadata"]["name"] for item in listed["items"]] == ["m1"]
    assert listed["kind"] == "ModelDeploymentList"
    assert int(listed["metadata"]["resourceVersion"]) >= int(created["metadata"]["resourceVersion"])
    assert api.list_namespaced_custom_object(*MD[:2], other, MD[2])["items"] == []
    everywhere = api.list_cluster_custom_object(*MD[:2], MD[2])["items"]
    assert [item["metadata"]["namespace"] for item in everywhere] == [kube_namespace]
    crds.delete_namespace(other)


def test_label_selector_on_list(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.core()
    for name, labels in (("a", {"app": "x", "tier": "web"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        api.create_namespaced_config_map(kube_namespace, {"metadata": {"name": name, "labels": labels}})
    names = {cm.metadata.name for cm in api.list_namespaced_config_map(kube_namespace, label_selector="app=x").items}
    assert names == {"a", "b"}
    names = {
        cm.metadata.name for cm in api.list_namespaced_config_map(kube_namespace, label_selector="app=x,tier").items
    }
    assert names == {"a"}


def test_create_of_an_existing_name_is_409_already_exists(crds: KubeApi, kube_namespace: str) -> None:
    create_md(crds, kube_namespace, "m1")
    with pytest.raises(ApiException) as caught:
        create_md(crds, kube_namespace, "m1")
    assert (caught.value.status, api_reason(caught.value)) == (409, "AlreadyExists")


def test_missing_objects_are_404(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    calls = [
        lambda: api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "nope"),
        lambda: api.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "nope", {"spec": {}}),
        lambda: api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "nope"),
    ]
    for call in calls:
        with pytest.raises(ApiException) as caught:
            call()
        assert (caught.value.status, api_reason(caught.value)) == (404, "NotFound")


def test_objects_need_an_existing_namespace(kube_api: KubeApi) -> None:
    with pytest.raises(ApiException) as caught:
        kube_api.core().create_namespaced_config_map("no-such-namespace", {"metadata": {"name": "c"}})
    assert (caught.value.status, api_reason(caught.value)) == (404, "NotFound")
    assert "default" in {ns.metadata.name for ns in kube_api.core().list_namespace().items}


def test_unknown_resource_is_404(kube_api: KubeApi) -> None:
    status, body = http(kube_api.url, "GET", "/apis/nothing.example.com/v1/namespaces/x/things")
    assert status == 404
    assert body["kind"] == "Status"


def test_generate_name(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.core()
    names = {
        api.create_namespaced_config_map(kube_namespace, {"metadata": {"generateName": "cfg-"}}).metadata.name
        for _ in range(3)
    }
    assert len(names) == 3
    assert all(re.fullmatch(r"cfg-[a-z0-9]{5}", name) for name in names)


def test_stale_updates_are_409_conflict(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    old = create_md(crds, kube_namespace, "m1")
    api.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", {"spec": {"model": "v2"}})
    stale = {**old, "spec": {"model": "v3"}}
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", stale)
    assert (caught.value.status, api_reason(caught.value)) == (409, "Conflict")
    stale_patch = {"metadata": {"resourceVersion": old["metadata"]["resourceVersion"]}, "spec": {"model": "v4"}}
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", stale_patch)
    assert caught.value.status == 409
    current = api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
    assert current["spec"]["model"] == "v2"
    fresh = {**current, "spec": {"model": "v5"}}
    replaced = api.replace_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", fresh)
    assert replaced["spec"]["model"] == "v5"


def test_custom_resources_refuse_unconditional_put(crds: KubeApi, kube_namespace: str) -> None:
    current = create_md(crds, kube_namespace, "m1")
    body = {**current, "metadata": {"name": "m1"}}
    with pytest.raises(ApiException) as caught:
        crds.custom_objects().replace_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1", body)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "content_type",
    ["application/merge-patch+json"],  # strategic merge is 415 on a CR (test_upstream_rules.py)
)
def test_merge_style_patches(crds: KubeApi, kube_namespace: str, content_type: str) -> None:
    create_md(crds, kube_namespace, "m1", canaryTrafficPercent=10)
    path = f"/apis/{MD[0]}/{MD[1]}/namespaces/{kube_namespace}/{MD[2]}/m1"
    status, body = http(
        crds.url, "PATCH", path, {"spec": {"canaryTrafficPercent": None, "model": "v2"}}, content_type=content_type
    )
    assert status == 200
    assert body["spec"] == {"model": "v2", "replicas": 1}


def test_json_patch_and_failed_test_is_422(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    created = create_md(crds, kube_namespace, "m1")
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
    ]
    patched = api.patch_namespaced_custom_object(
        *MD[:2], kube_namespace, MD[2], "m1", ops, _content_type="application/json-patch+json"
    )
    assert patched["metadata"]["labels"] == {"a": "b"}
    with pytest.raises(ApiException) as caught:  # the same test op again: the resourceVersion moved on
        api.patch_namespaced_custom_object(
            *MD[:2], kube_namespace, MD[2], "m1", ops, _content_type="application/json-patch+json"
        )
    assert caught.value.status == 422
    assert api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1") == patched


def test_unsupported_patch_type_is_415(crds: KubeApi, kube_namespace: str) -> None:
    create_md(crds, kube_namespace, "m1")
    path = f"/apis/{MD[0]}/{MD[1]}/namespaces/{kube_namespace}/{MD[2]}/m1"
    status, _ = http(crds.url, "PATCH", path, {"spec": {}}, content_type="text/plain")
    assert status == 415


def test_no_op_patch_keeps_the_resource_version(crds: KubeApi, kube_namespace: str) -> None:
    created = create_md(crds, kube_namespace, "m1")
    patched = crds.custom_objects().patch_namespaced_custom_object(
        *MD[:2], kube_namespace, MD[2], "m1", {"spec": {"model": created["spec"]["model"]}}
    )
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_events_are_creatable_and_listable_in_both_apis(kube_api: KubeApi, kube_namespace: str) -> None:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "namespace": kube_namespace}
    core_event = {
        "metadata": {"generateName": "kopf-event-"},
        "involvedObject": ref,
        "reason": "Tested",
        "message": "m",
    }
    status, created = http(kube_api.url, "POST", f"/api/v1/namespaces/{kube_namespace}/events", core_event)
    assert status == 201
    assert created["metadata"]["name"].startswith("kopf-event-")
    new_event = {"metadata": {"name": "e1"}, "regarding": ref, "reason": "Tested", "note": "n", "action": "Test"}
    status, _ = http(kube_api.url, "POST", f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events", new_event)
    assert status == 201
    core = kube_api.core().list_namespaced_event(kube_namespace).items
    assert [(event.reason, event.involved_object.name) for event in core] == [("Tested", "x")]
    status, listed = http(kube_api.url, "GET", f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events")
    assert [item["note"] for item in listed["items"]] == ["n"]
