"""A tiny real Kopf operator runs end to end against the emulator: child objects, status, finalizers, events."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes.client.exceptions import ApiException

from tests.emulator import EmulatorServer
from tests.emulator.cluster import KubeApi
from tests.support.fake_kserve import FakeKServe
from tests.support.waiting import eventually

from .helpers import ISVC, MD, inference_service, model_deployment


def tiny_operator(api: KubeApi, namespace: str, deleted: list[str]) -> kopf.OperatorRegistry:
    """ModelDeployment -> InferenceService, with a status patch, an event and a delete handler (finalizer)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=api.url, insecure=True, token="unused", default_namespace=namespace)

    @kopf.on.create(*MD, registry=registry)
    def create(body: kopf.Body, name: str, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        child = inference_service(name)
        kopf.adopt(child, owner=body)
        try:
            api.custom_objects().create_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], child)
        except ApiException as exc:  # a retried handler finds its child already there
            if exc.status != 409:
                raise
        patch.status["inferenceService"] = name
        kopf.info(body, reason="Rendered", message=f"InferenceService {name} for model {spec['model']}")

    @kopf.on.delete(*MD, registry=registry)
    def delete(name: str, **_: Any) -> None:
        deleted.append(name)

    return registry


@pytest.mark.e2e
def test_kopf_operator_end_to_end(crds: KubeApi, kube_namespace: str, kube_emulator: EmulatorServer) -> None:
    api = crds.custom_objects()
    deleted: list[str] = []
    registry = tiny_operator(crds, kube_namespace, deleted)
    args = ["run", "--standalone", "--namespace", kube_namespace]
    with (
        FakeKServe(crds.kubeconfig, [kube_namespace]) as kserve,
        KopfRunner(args, registry=registry, timeout=30) as runner,
    ):
        api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment("m1"))

        def handled() -> dict[str, Any] | None:
            obj: dict[str, Any] = api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
            return obj if (obj.get("status") or {}).get("inferenceService") == "m1" else None

        md = eventually(handled)
        assert md["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        isvc = api.get_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2], "m1")
        assert isvc["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        kserve.wait_for("m1", kube_namespace)

        reasons = lambda: {e.reason for e in crds.core().list_namespaced_event(kube_namespace).items}  # noqa: E731
        assert "Rendered" in eventually(reasons)

        api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")

        def gone() -> bool:
            try:
                api.get_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], "m1")
            except ApiException as exc:
                return exc.status == 404
            return False

        eventually(gone)
        assert deleted == ["m1"]
        assert api.list_namespaced_custom_object(*ISVC[:2], kube_namespace, ISVC[2])["items"] == []  # collected

    assert runner.exit_code == 0
    assert runner.exception is None
    assert "Creation is processed: 1 succeeded; 0 failed" in runner.output
    assert not kube_emulator.emulator.errors


@pytest.mark.e2e
def test_kopf_operator_converges_under_injected_faults(
    crds: KubeApi, kube_namespace: str, kube_emulator: EmulatorServer
) -> None:
    """Server errors, true conflicts, dropped watches and slow answers delay the operator but do not break it."""
    api = crds.custom_objects()
    deleted: list[str] = []
    registry = tiny_operator(crds, kube_namespace, deleted)
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.05] * 20  # Kopf's default backoffs (1 s and more) only slow the test
    settings.watching.reconnect_backoff = 0.05
    kube_emulator.set_faults(
        error_rate=0.3, conflict_rate=0.6, drop_watch_rate=0.5, drop_watch_after=0.3, slow_rate=0.2, delay=0.05, seed=4
    )
    names = [f"m{index}" for index in range(3)]
    args = ["run", "--standalone", "--namespace", kube_namespace]
    with KopfRunner(args, registry=registry, settings=settings, timeout=30) as runner:
        for name in names:
            api.create_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], model_deployment(name))

        def all_handled() -> bool:
            items = api.list_namespaced_custom_object(*MD[:2], kube_namespace, MD[2])["items"]
            return len(items) == 3 and all((item.get("status") or {}).get("inferenceService") for item in items)

        eventually(all_handled, timeout=20)
        for name in names:
            api.delete_namespaced_custom_object(*MD[:2], kube_namespace, MD[2], name)
        eventually(lambda: not api.list_namespaced_custom_object(*MD[:2], kube_namespace, MD[2])["items"], timeout=20)

    assert sorted(deleted) == names
    assert runner.exception is None
    assert kube_emulator.faults.injected["error"] > 0
    assert not kube_emulator.emulator.errors
