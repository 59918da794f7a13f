"""The API server's own write rules: metadata validation and the admission chain's order and scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import kmock
import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.emulator import EmulatorServer, KubeEmulator
from tests.emulator.admission import denied
from tests.emulator.cluster import KubeApi

from .helpers import DATA, MD, model_deployment

MDS = kmock.resource(*MD)
SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def create_md(api: KubeApi, namespace: str, name: str, **meta: Any) -> dict[str, Any]:
    body = model_deployment(name)
    body["metadata"].update(meta)
    created = api.custom_objects().create_namespaced_custom_object(*MD[:2], namespace, MD[2], body)
    return cast(dict[str, Any], created)


def invalid(api: KubeApi, namespace: str, name: str, **meta: Any) -> list[str]:
    with pytest.raises(ApiException) as refused:
        create_md(api, namespace, name, **meta)
    assert refused.value.status == 422
    return [cause["message"] for cause in json.loads(refused.value.body or "{}")["details"]["causes"]]


def test_object_names(crds: KubeApi, kube_namespace: str) -> None:
    create_md(crds, kube_namespace, "9lives.v1")  # a DNS subdomain may start with a digit and hold dots
    assert invalid(crds, kube_namespace, "Bad_Name") == [f'metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN}']
    too_long = "a" * 254
    assert invalid(crds, kube_namespace, too_long) == [
        f'metadata.name: Invalid value: "{too_long}": must be no more than 253 characters'
    ]


def test_namespace_names_are_labels(kube_api: KubeApi) -> None:
    core = kube_api.core()
    with pytest.raises(ApiException) as refused:
        core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name="a.b")))
    assert refused.value.status == 422
    assert "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'" in str(
        refused.value.body
    )
    assert "(e.g. 'my-name',  or '123-abc'" in str(refused.value.body)  # kube-apiserver's own double space


def test_labels(crds: KubeApi, kube_namespace: str) -> None:
    create_md(crds, kube_namespace, "ok", labels={"example.com/part": "a-1", "empty": ""})
    causes = invalid(crds, kube_namespace, "m1", labels={"a/b/c": "x", "k": "v" * 64, "-k": "v"})
    assert causes[0].startswith('metadata.labels: Invalid value: "-k": name part must consist of alphanumeric')
    assert causes[1].startswith('metadata.labels: Invalid value: "a/b/c": a qualified name must consist of')
    assert causes[2] == f'metadata.labels: Invalid value: "{"v" * 64}": must be no more than 63 characters'
    assert invalid(crds, kube_namespace, "m1", labels={"x" * 64: "v"})[0].endswith(
        "name part must be no more than 63 characters"
    )


def test_annotation_size(crds: KubeApi, kube_namespace: str) -> None:
    create_md(crds, kube_namespace, "ok", annotations={"a": "x" * (256 * 1024 - 1)})
    assert invalid(crds, kube_namespace, "m1", annotations={"a": "x" * (256 * 1024)}) == [
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    ]


def test_owner_references(crds: KubeApi, kube_namespace: str) -> None:
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u1", "controller": True}
    create_md(crds, kube_namespace, "ok", ownerReferences=[owner])
    causes = invalid(crds, kube_namespace, "m1", ownerReferences=[{**owner, "uid": "", "apiVersion": ""}])
    assert causes == [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty',
    ]
    second = {**owner, "name": "d", "uid": "u2"}
    [cause] = invalid(crds, kube_namespace, "m1", ownerReferences=[owner, second])
    assert cause.endswith(
        'Only one reference can have Controller set to true. Found "true" in references for ConfigMap/c and ConfigMap/d'
    )


class Recorder:
    """An admission plugin that records its calls and refuses objects labelled ``refuse``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, str | None]] = []

    def mutate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("mutate", old is None, new.get("spec", {}).get("model")))
        new["metadata"].setdefault("labels", {})["mutated"] = "yes"
        new["metadata"]["uid"] = "stolen"  # a webhook cannot change server-owned fields
        return new

    def validate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
        self.calls.append(("validate", old is None, new["metadata"]["labels"].get("mutated")))
        if (new["metadata"].get("labels") or {}).get("refuse"):
            raise denied("recorder.example.com", "refused by label")
        return []


def test_admission_chain(tmp_path: Path) -> None:
    recorder = Recorder()
    with EmulatorServer(KubeEmulator(admission={MDS: (recorder,)})) as server:
        api = KubeApi(kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"), url=server.url, emulator=server)
        api.apply_crd(DATA / "modeldeployments-crd.yaml")
        objects = api.custom_objects()
        created = create_md(api, "default", "m1")
        assert created["metadata"]["labels"] == {"mutated": "yes"}
        assert created["metadata"]["uid"] != "stolen"
        objects.patch_namespaced_custom_object(*MD[:2], "default", MD[2], "m1", {"spec": {"model": "v2"}})
        objects.patch_namespaced_custom_object_status(*MD[:2], "default", MD[2], "m1", {"status": {"phase": "Ready"}})
        objects.delete_namespaced_custom_object(*MD[:2], "default", MD[2], "m1")
        # create then update, each mutating before validating; the /status write and the delete skip webhooks
        assert recorder.calls == [
            ("mutate", True, "resnet"),
            ("validate", True, "yes"),
            ("mutate", False, "v2"),
            ("validate", False, "yes"),
        ]
        with pytest.raises(ApiException) as refused:
            create_md(api, "default", "m2", labels={"refuse": "yes"})
        assert (refused.value.status, json.loads(refused.value.body or "{}")["message"]) == (
            403,
            'admission webhook "recorder.example.com" denied the request: refused by label',
        )
