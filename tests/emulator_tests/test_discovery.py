"""Discovery: built-in groups are served, and a CRD created through the API becomes discoverable."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator.cluster import CRD_GROUP, CRD_PLURAL, CRD_VERSION, KubeApi
from tests.support.schemas import HTTPROUTE_CRD, upstream_crds_dir

from .helpers import DATA, MD, http, model_deployment


def resources_of(api: KubeApi, group_version: str) -> dict[str, dict[str, object]]:
    status, body = http(api.url, "GET", f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}")
    assert status == 200, body
    return {item["name"]: item for item in body["resources"]}


def test_core_namespaces_and_events_are_discoverable(kube_api: KubeApi) -> None:
    core = resources_of(kube_api, "v1")
    assert core["namespaces"]["namespaced"] is False
    assert core["events"]["kind"] == "Event"
    assert "watch" in core["events"]["verbs"]
    assert resources_of(kube_api, "events.k8s.io/v1")["events"]["namespaced"] is True


def test_created_crd_is_discoverable_with_its_names_and_subresources(kube_api: KubeApi) -> None:
    kube_api.require_emulator("a clean discovery (no CRD installed before the test)")
    status, _ = http(kube_api.url, "GET", "/apis/serving.esteira.io/v1alpha1")
    assert status == 404

    crd = kube_api.apply_crd(DATA / "modeldeployments-crd.yaml")
    assert crd["status"]["acceptedNames"]["kind"] == "ModelDeployment"

    status, groups = http(kube_api.url, "GET", "/apis")
    group = next(item for item in groups["groups"] if item["name"] == "serving.esteira.io")
    assert group["preferredVersion"]["version"] == "v1alpha1"
    listed = resources_of(kube_api, "serving.esteira.io/v1alpha1")
    main = listed["modeldeployments"]
    assert (main["kind"], main["singularName"], main["namespaced"]) == ("ModelDeployment", "modeldeployment", True)
    assert set(main["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete"}
    assert main["shortNames"] == ["md"]
    assert "modeldeployments/status" in listed


def test_deleting_a_crd_stops_serving_its_resource(kube_api: KubeApi, kube_namespace: str) -> None:
    kube_api.require_emulator("deleting a CRD")
    kube_api.apply_crd(DATA / "modeldeployments-crd.yaml")
    api = kube_api.custom_objects()
    api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))
    api.delete_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL, "modeldeployments.serving.esteira.io")
    status, _ = http(kube_api.url, "GET", "/apis/serving.esteira.io/v1alpha1")
    assert status == 404
    with pytest.raises(ApiException) as caught:
        api.list_namespaced_custom_object(*MD[:2], kube_namespace, MD[2])
    assert caught.value.status == 404


def test_apply_crd_twice_replaces_it(kube_api: KubeApi) -> None:
    first = kube_api.apply_crd(DATA / "inferenceservices-crd.yaml")
    second = kube_api.apply_crd(DATA / "inferenceservices-crd.yaml")
    assert second["metadata"]["uid"] == first["metadata"]["uid"]


@pytest.mark.parametrize("group_version", ["gateway.networking.k8s.io/v1", "metrics.k8s.io/v1beta1"])
def test_groups_a_bare_api_server_lacks_are_not_served(kube_api: KubeApi, group_version: str) -> None:
    kube_api.require_emulator("a cluster without the Gateway API or metrics-server")
    status, _ = http(kube_api.url, "GET", f"/apis/{group_version}")
    assert status == 404


def test_httproutes_are_served_once_their_crd_is_applied(kube_api: KubeApi, kube_namespace: str) -> None:
    kube_api.require_emulator("a cluster without the Gateway API")
    api = kube_api.custom_objects()
    with pytest.raises(ApiException) as caught:
        api.list_namespaced_custom_object("gateway.networking.k8s.io", "v1", kube_namespace, "httproutes")
    assert caught.value.status == 404
    kube_api.apply_crd(upstream_crds_dir() / HTTPROUTE_CRD)
    listed = api.list_namespaced_custom_object("gateway.networking.k8s.io", "v1", kube_namespace, "httproutes")
    assert listed["items"] == []
