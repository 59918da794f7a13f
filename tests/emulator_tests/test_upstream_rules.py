"""Rules checked against upstream sources: the garbage collector on dangling owners and orphaning, patch
content types and field selectors of custom resources, explicit nulls in CRD schemas, cluster-scoped
namespaces, and JSON-patch ``test`` equality."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.emulator.cluster import KubeApi
from tests.emulator.fixtures import widget_crd
from tests.emulator.patches import PatchTestFailed, json_patch

from .helpers import MD, http, model_deployment

CM_PATH = "/api/v1/namespaces/{namespace}/configmaps"
DEAD_UID = "00000000-dead-beef-0000-000000000000"


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """The emulator collects garbage at once; a real cluster's collector takes a moment."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def owner_ref(owner: dict[str, Any], **extra: Any) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"], **extra}


def configmap(api: KubeApi, namespace: str, name: str, **meta: Any) -> tuple[int, Any]:
    return http(api.url, "POST", CM_PATH.format(namespace=namespace), {"metadata": {"name": name, **meta}})


def configmap_names(api: KubeApi, namespace: str) -> set[str]:
    status, body = http(api.url, "GET", CM_PATH.format(namespace=namespace))
    assert status == 200
    return {item["metadata"]["name"] for item in body["items"]} - {"kube-root-ca.crt"}


# -- 1. garbage collection (pkg/controller/garbagecollector attemptToDeleteItem, classifyReferences) ------


def test_dependent_created_with_a_dangling_owner_is_collected(kube_api: KubeApi, kube_namespace: str) -> None:
    status, _ = configmap(kube_api, kube_namespace, "owner")
    assert status == 201
    stale = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": DEAD_UID}
    status, created = configmap(kube_api, kube_namespace, "orphaned", ownerReferences=[stale])
    assert status == 201  # the API server accepts it; the collector removes it afterwards
    assert created["metadata"]["ownerReferences"] == [stale]
    eventually(lambda: configmap_names(kube_api, kube_namespace) == {"owner"})


def test_owner_in_another_namespace_is_dangling(kube_api: KubeApi, kube_namespace: str) -> None:
    other = kube_api.create_namespace()
    try:
        _, owner = configmap(kube_api, other, "owner")
        status, _ = configmap(kube_api, kube_namespace, "dep", ownerReferences=[owner_ref(owner)])
        assert status == 201
        eventually(lambda: configmap_names(kube_api, kube_namespace) == set())
        assert configmap_names(kube_api, other) == {"owner"}
    finally:
        kube_api.delete_namespace(other)


def test_update_pointing_at_a_dangling_owner_is_collected(kube_api: KubeApi, kube_namespace: str) -> None:
    configmap(kube_api, kube_namespace, "dep")
    stale = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": DEAD_UID}
    path = CM_PATH.format(namespace=kube_namespace) + "/dep"
    patch = {"metadata": {"ownerReferences": [stale]}}
    status, _ = http(kube_api.url, "PATCH", path, patch, content_type="application/merge-patch+json")
    assert status == 200
    eventually(lambda: configmap_names(kube_api, kube_namespace) == set())


def test_dangling_references_are_removed_when_another_owner_lives(kube_api: KubeApi, kube_namespace: str) -> None:
    _, alive = configmap(kube_api, kube_namespace, "alive")
    stale = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": DEAD_UID}
    configmap(kube_api, kube_namespace, "dep", ownerReferences=[owner_ref(alive), stale])
    path = CM_PATH.format(namespace=kube_namespace) + "/dep"

    def only_solid_left() -> bool:
        _, body = http(kube_api.url, "GET", path)
        return body["metadata"].get("ownerReferences") == [owner_ref(alive)]

    eventually(only_solid_left)


def test_orphan_propagation_releases_dependents_even_with_finalizers(kube_api: KubeApi, kube_namespace: str) -> None:
    _, owner = configmap(kube_api, kube_namespace, "owner", finalizers=["example.com/hold"])
    configmap(kube_api, kube_namespace, "dep", ownerReferences=[owner_ref(owner)])
    base = CM_PATH.format(namespace=kube_namespace)
    status, marked = http(kube_api.url, "DELETE", base + "/owner", {"propagationPolicy": "Orphan"})
    assert status == 200
    assert marked["metadata"]["deletionTimestamp"]

    def released() -> bool:
        _, dep = http(kube_api.url, "GET", base + "/dep")
        _, held = http(kube_api.url, "GET", base + "/owner")
        return "ownerReferences" not in dep["metadata"] and held["metadata"]["finalizers"] == ["example.com/hold"]

    eventually(released)
    patch = {"metadata": {"finalizers": None}}
    http(kube_api.url, "PATCH", base + "/owner", patch, content_type="application/merge-patch+json")
    time.sleep(0.5)  # give a real collector the chance to (wrongly) take the dependent along
    assert configmap_names(kube_api, kube_namespace) == {"dep"}


def test_orphan_propagation_without_finalizers(kube_api: KubeApi, kube_namespace: str) -> None:
    _, owner = configmap(kube_api, kube_namespace, "owner")
    configmap(kube_api, kube_namespace, "dep", ownerReferences=[owner_ref(owner)])
    base = CM_PATH.format(namespace=kube_namespace)
    http(kube_api.url, "DELETE", base + "/owner", {"propagationPolicy": "Orphan"})
    eventually(lambda: configmap_names(kube_api, kube_namespace) == {"dep"})
    _, dep = http(kube_api.url, "GET", base + "/dep")
    assert "ownerReferences" not in dep["metadata"]
    http(kube_api.url, "PATCH", base + "/dep", {"data": {"a": "b"}}, content_type="application/merge-patch+json")
    assert configmap_names(kube_api, kube_namespace) == {"dep"}  # an update does not collect it later


# -- 2. strategic merge patch on custom resources (endpoints/handlers/patch.go PatchResource) ----------


def test_strategic_merge_patch_is_415_on_custom_resources_only(crds: KubeApi, kube_namespace: str) -> None:
    crds.custom_objects().create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    smp = "application/strategic-merge-patch+json"
    path = f"/apis/{MD[0]}/{MD[1]}/namespaces/{kube_namespace}/{MD[2]}/m1"
    status, body = http(crds.url, "PATCH", path, {"metadata": {"labels": {"a": "b"}}}, content_type=smp)
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert body["message"] == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )
    configmap(crds, kube_namespace, "cm")
    cm_path = CM_PATH.format(namespace=kube_namespace) + "/cm"
    status, patched = http(crds.url, "PATCH", cm_path, {"data": {"k": "v"}}, content_type=smp)
    assert status == 200  # built-in resources take strategic merge patches
    assert patched["data"] == {"k": "v"}


# -- 3. field selectors on custom resources (apiextensions-apiserver conversion/converter.go) -----------

WIDGETS = ("example.com", "v1", "widgets")
WIDGET_CRD = widget_crd(
    selectableFields=[{"jsonPath": ".spec.color"}],
    schema={
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "color": {"type": "string"},
                        "size": {"type": "integer"},
                        "shape": {"type": "string", "default": "round"},
                        "note": {"type": "string", "nullable": True},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                }
            },
        }
    },
)


@pytest.fixture
def widgets(kube_api: KubeApi) -> KubeApi:
    kube_api.apply_crd(WIDGET_CRD)
    return kube_api


def widget_path(namespace: str, name: str = "") -> str:
    return f"/apis/{WIDGETS[0]}/{WIDGETS[1]}/namespaces/{namespace}/{WIDGETS[2]}" + (f"/{name}" if name else "")


def create_widget(api: KubeApi, namespace: str, name: str, **spec: Any) -> tuple[int, Any]:
    body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    return http(api.url, "POST", widget_path(namespace), body)


def test_field_selectors_on_custom_resources(crds: KubeApi, widgets: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1", replicas=2))
    md_path = f"/apis/{MD[0]}/{MD[1]}/namespaces/{kube_namespace}/{MD[2]}"
    status, body = http(crds.url, "GET", md_path + "?fieldSelector=spec.replicas%3D2")
    assert (status, body["reason"], body["message"]) == (400, "BadRequest", "field label not supported: spec.replicas")
    status, _ = http(crds.url, "GET", md_path + "?watch=true&timeoutSeconds=1&fieldSelector=spec.model%3Dx")
    assert status == 400  # a watch is refused before it streams
    status, body = http(
        crds.url, "GET", md_path + f"?fieldSelector=metadata.name%3Dm1,metadata.namespace%3D{kube_namespace}"
    )
    assert status == 200
    assert [item["metadata"]["name"] for item in body["items"]] == ["m1"]

    create_widget(widgets, kube_namespace, "red", color="red", size=1)
    create_widget(widgets, kube_namespace, "blue", color="blue", size=1)
    status, body = http(widgets.url, "GET", widget_path(kube_namespace) + "?fieldSelector=spec.color%3Dred")
    assert status == 200  # a selectableField of the CRD version
    assert [item["metadata"]["name"] for item in body["items"]] == ["red"]
    status, body = http(widgets.url, "GET", widget_path(kube_namespace) + "?fieldSelector=spec.size%3D1")
    assert (status, body["message"]) == (400, "field label not supported: spec.size")


def test_field_selectors_on_built_ins_are_unchanged(kube_api: KubeApi, kube_namespace: str) -> None:
    configmap(kube_api, kube_namespace, "a")
    path = CM_PATH.format(namespace=kube_namespace) + "?fieldSelector=metadata.name%3Da"
    status, body = http(kube_api.url, "GET", path)
    assert status == 200
    assert [item["metadata"]["name"] for item in body["items"]] == ["a"]


# -- 4. explicit nulls (apiextensions-apiserver defaulting/prunenulls.go, algorithm.go Default) ---------


def test_explicit_nulls_are_pruned_or_defaulted(widgets: KubeApi, kube_namespace: str) -> None:
    status, body = create_widget(
        widgets, kube_namespace, "w", color=None, shape=None, note=None, size=3, tags={"a": None, "b": "x"}
    )
    assert status == 201, body
    # color: not nullable, no default -> dropped; shape: not nullable, default -> defaulted; note: nullable -> kept
    assert body["spec"] == {"size": 3, "shape": "round", "note": None, "tags": {"b": "x"}}
    patch = {"spec": {"size": None}}  # a merge patch's null deletes; a PUT's null is pruned
    current = http(widgets.url, "GET", widget_path(kube_namespace, "w"))[1]
    replaced = {**current, "spec": {**current["spec"], "color": None, "shape": None}}
    status, body = http(widgets.url, "PUT", widget_path(kube_namespace, "w"), replaced)
    assert status == 200, body
    assert "color" not in body["spec"] and body["spec"]["shape"] == "round"
    status, body = http(
        widgets.url, "PATCH", widget_path(kube_namespace, "w"), patch, content_type="application/merge-patch+json"
    )
    assert status == 200 and "size" not in body["spec"]


def test_explicit_null_on_the_test_crd(crds: KubeApi, kube_namespace: str) -> None:
    body = model_deployment("m1", replicas=None, canaryTrafficPercent=None)
    created = crds.custom_objects().create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], body)
    assert created["spec"] == {"model": "resnet", "replicas": 1}


# -- 5. cluster-scoped objects (registry/rest/meta.go EnsureObjectNamespaceMatchesRequestNamespace) -----


def test_cluster_scoped_objects_drop_metadata_namespace(kube_api: KubeApi) -> None:
    name = f"ns-clear-{time.monotonic_ns() % 100000}"
    status, body = http(
        kube_api.url, "POST", "/api/v1/namespaces", {"metadata": {"name": name, "namespace": "default"}}
    )
    try:
        assert status == 201, body
        assert "namespace" not in body["metadata"]
        body["metadata"]["namespace"] = "default"
        body["metadata"]["labels"] = {"a": "b"}
        status, updated = http(kube_api.url, "PUT", f"/api/v1/namespaces/{name}", body)
        assert status == 200, updated
        assert "namespace" not in updated["metadata"]
        assert updated["metadata"]["labels"]["a"] == "b"
    finally:
        kube_api.delete_namespace(name)


# -- 6. JSON-patch test (gopkg.in/evanphx/json-patch.v4 lazyNode.equal) ------------------------------


@pytest.mark.parametrize(
    ("stored", "value", "passes"),
    [
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        ("1", 1, False),
        (1, 1, True),
        (1.0, 1, True),  # Go writes the stored float 1.0 as 1
        (1, 1.0, False),  # the client wrote 1.0: its text differs from Go's 1
        (0.5, 0.5, True),
        (None, None, True),
        ({"a": 1, "b": [True]}, {"b": [True], "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ([1, 2], [1, True], False),
    ],
)
def test_json_patch_test_compares_json_values(stored: Any, value: Any, passes: bool) -> None:
    ops = [{"op": "test", "path": "/x", "value": value}]
    if passes:
        assert json_patch({"x": stored}, ops) == {"x": stored}
    else:
        with pytest.raises(PatchTestFailed):
            json_patch({"x": stored}, ops)


def test_json_patch_test_of_a_boolean_against_1_is_422(crds: KubeApi, kube_namespace: str) -> None:
    api = crds.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1", replicas=1))
    ops = [{"op": "test", "path": "/spec/replicas", "value": True}, {"op": "add", "path": "/spec/model", "value": "x"}]
    path = f"/apis/{MD[0]}/{MD[1]}/namespaces/{kube_namespace}/{MD[2]}/m1"
    status, body = http(crds.url, "PATCH", path, ops, content_type="application/json-patch+json")
    assert status == 422
    ops[0]["value"] = 1
    status, body = http(crds.url, "PATCH", path, ops, content_type="application/json-patch+json")
    assert (status, body["spec"]["model"]) == (200, "x")
