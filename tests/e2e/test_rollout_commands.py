"""RolloutCommand: rollout commands granted apart from spec edits, carried out once, recorded with who asked."""

from __future__ import annotations

from typing import Any

import pytest

from esteira import API_GROUP, API_VERSION
from esteira.api.command import COMMAND_PLURAL
from esteira.kubectl import main, rollout_command
from tests.e2e.test_kubectl_plugin import md, status_of, with_canary
from tests.emulator.cluster import KubeApi
from tests.support.cluster import Esteira, eventually
from tests.support.fake_kserve import FakeKServe

pytestmark = pytest.mark.usefixtures("operator")


def command(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    found = api.custom_objects().get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, COMMAND_PLURAL, name)
    return dict(found)


def finished(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return eventually(lambda: command(api, namespace, name).get("status"), timeout=30, what=f"{name} finished")


def created_by_plugin(api: KubeApi, namespace: str, *args: str) -> str:
    before = {c["metadata"]["name"] for c in list_commands(api, namespace)}
    assert main(["--kubeconfig", str(api.kubeconfig), "-n", namespace, *args]) == 0
    (name,) = {c["metadata"]["name"] for c in list_commands(api, namespace)} - before
    return name


def created(api: KubeApi, namespace: str, body: dict[str, Any]) -> str:
    """A RolloutCommand created as `kubectl create` would, without the plugin's checks."""
    made = api.custom_objects().create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, COMMAND_PLURAL, body)
    return str(made["metadata"]["name"])


def deployed_with_canary(esteira: Esteira, namespace: str) -> None:
    esteira.create_md(namespace, md(namespace, "1"))
    eventually(lambda: status_of(esteira, namespace).get("phase") == "Ready", timeout=30, what="ready")
    with_canary(esteira, namespace)


def list_commands(api: KubeApi, namespace: str) -> list[dict[str, Any]]:
    listing = api.custom_objects().list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, COMMAND_PLURAL)
    return list(listing["items"])


def test_pause_and_promote_through_rollout_commands(
    crds: KubeApi, esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    deployed_with_canary(esteira, kube_namespace)
    paused = created_by_plugin(crds, kube_namespace, "pause", "iris", "--via", "command", "--requested-by", "alice")
    assert finished(crds, kube_namespace, paused)["phase"] == "Done"
    assert status_of(esteira, kube_namespace)["canary"]["hold"] == "PausedByRequest"
    assert status_of(esteira, kube_namespace)["lastCommand"].startswith("rolloutcommand/")

    promoted = created_by_plugin(
        crds, kube_namespace, "promote", "--full", "iris", "--via", "command", "--requested-by", "bob"
    )
    assert finished(crds, kube_namespace, promoted)["phase"] == "Done"
    status = status_of(esteira, kube_namespace)
    assert status["stable"]["revision"] == 2 and "canary" not in status
    received = eventually(
        lambda: (
            [e["message"] for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "CommandReceived"]
            or None
        ),
        what="CommandReceived events",
    )
    assert any("pause requested by alice" in m for m in received), received
    assert any("promote requested by bob" in m for m in received), received

    # Carried out once: a later reconcile leaves both commands, and the rollout, as they are.
    esteira.patch_md(kube_namespace, "iris", {"metadata": {"labels": {"touched": "yes"}}})
    assert command(crds, kube_namespace, paused)["status"]["phase"] == "Done"
    assert status_of(esteira, kube_namespace)["stable"]["revision"] == 2


def test_a_command_with_nothing_to_act_on_is_ignored_or_rejected(
    crds: KubeApi, esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    deployed_with_canary(esteira, kube_namespace)
    assert main(["--kubeconfig", str(crds.kubeconfig), "-n", kube_namespace, "abort", "iris"]) == 0
    eventually(lambda: "canary" not in status_of(esteira, kube_namespace), what="aborted by annotation")
    ignored = created_by_plugin(crds, kube_namespace, "pause", "iris", "--via", "command", "--requested-by", "carol")
    outcome = finished(crds, kube_namespace, ignored)
    assert outcome["phase"] == "Ignored" and "no rollout in progress" in outcome["message"]
    with pytest.raises(SystemExit, match="no ModelDeployment absent in namespace"):  # the plugin checks first
        main(["--kubeconfig", str(crds.kubeconfig), "-n", kube_namespace, "pause", "absent", "--via", "command"])
    nowhere = created(crds, kube_namespace, rollout_command("absent", "pause", "dan"))  # kubectl create does not
    outcome = finished(crds, kube_namespace, nowhere)
    assert outcome["phase"] == "Rejected" and "no ModelDeployment absent" in outcome["message"]


def test_a_command_cannot_be_changed_after_creation(crds: KubeApi, kube_namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    name = created(crds, kube_namespace, rollout_command("absent", "pause", "erin"))
    with pytest.raises(ApiException) as refused:
        crds.custom_objects().patch_namespaced_custom_object(
            API_GROUP, API_VERSION, kube_namespace, COMMAND_PLURAL, name, {"spec": {"requestedBy": "mallory"}}
        )
    assert refused.value.status == 422 and "cannot be changed" in str(refused.value.body)
