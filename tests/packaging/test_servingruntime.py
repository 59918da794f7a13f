"""Esteira's ClusterServingRuntime, validated against KServe v0.20.0's CRD."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from esteira.packaging.entrypoint import ENV_RUNTIME_DIR
from esteira.packaging.servingruntime import RuntimeOptions, render_serving_runtime
from esteira.vocabulary import ESTEIRA_RUNTIME, MODEL_CONTAINER
from tests.support.schemas import ManifestError, validate_custom_resource

IMAGE = "registry.example/esteira/model-server:0.1.0"


def container(runtime: dict[str, Any]) -> dict[str, Any]:
    (only,) = runtime["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def env_of(runtime: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(runtime)["env"]}


@pytest.mark.parametrize(
    "options",
    [
        RuntimeOptions(image=IMAGE),
        RuntimeOptions(
            image=IMAGE,
            name="esteira-torchserve-gpu",
            requests={"cpu": "2", "memory": "8Gi"},
            limits={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
            tmp_size_limit="20Gi",
            image_pull_policy="Always",
        ),
    ],
)
def test_validates_against_kserve_crd(options: RuntimeOptions) -> None:
    validate_custom_resource(render_serving_runtime(options))


def test_validation_catches_a_broken_runtime() -> None:
    # The check above must be able to fail: a field the CRD does not know is rejected.
    broken = copy.deepcopy(render_serving_runtime(RuntimeOptions(image=IMAGE)))
    container(broken)["securityContext"]["readOnlyRootFilesystem"] = "yes"
    with pytest.raises(ManifestError, match="readOnlyRootFilesystem"):
        validate_custom_resource(broken)


def test_names_what_the_operator_renders() -> None:
    runtime = render_serving_runtime(RuntimeOptions(image=IMAGE))
    assert runtime["kind"] == "ClusterServingRuntime"
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["metadata"]["name"] == ESTEIRA_RUNTIME
    assert "namespace" not in runtime["metadata"]
    assert container(runtime)["name"] == MODEL_CONTAINER
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v1", "v2"]
    assert spec["supportedModelFormats"] == [{"name": "pytorch", "version": "1", "autoSelect": False}]


def test_entrypoint_ports_protocols_and_metrics() -> None:
    runtime = render_serving_runtime(RuntimeOptions(image=IMAGE))
    c = container(runtime)
    assert c["image"] == IMAGE
    assert c["command"] == ["python", "-m", "esteira.packaging.entrypoint"]
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    env = env_of(runtime)
    assert env["TS_INFERENCE_ADDRESS"] == "http://0.0.0.0:8080"
    assert env["TS_MANAGEMENT_ADDRESS"].startswith("http://127.0.0.1:")
    assert env["TS_OPEN_INFERENCE_PROTOCOL"] == "oip"
    assert env["TS_DISABLE_TOKEN_AUTHORIZATION"] == "true"
    assert env["TS_ENABLE_MODEL_API"] == "false"
    assert env[ENV_RUNTIME_DIR].startswith("/tmp/")
    assert env["OMP_NUM_THREADS"] == {"resourceFieldRef": {"containerName": MODEL_CONTAINER, "resource": "limits.cpu"}}
    assert "TS_SERVICE_ENVELOPE" not in env  # envelopes would break TorchServe's batching
    assert runtime["spec"]["annotations"] == {
        "prometheus.kserve.io/port": "8082",
        "prometheus.kserve.io/path": "/metrics",
    }
    assert c["readinessProbe"]["exec"]["command"] == ["python", "-m", "esteira.packaging.healthcheck"]


def test_non_root_read_only_with_writable_tmp() -> None:
    runtime = render_serving_runtime(RuntimeOptions(image=IMAGE, tmp_size_limit="4Gi"))
    c = container(runtime)
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 1000
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    (mount,) = c["volumeMounts"]
    (volume,) = runtime["spec"]["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"}
    assert volume["emptyDir"] == {"sizeLimit": "4Gi"}
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}


def test_image_is_required() -> None:
    with pytest.raises(ValueError, match="image"):
        RuntimeOptions(image="")
    with pytest.raises(ValueError, match="image"):
        RuntimeOptions(image="has space:1")
