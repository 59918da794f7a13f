"""The esteira-kserve ClusterServingRuntime, validated against KServe v0.20.0's CRD, and what its pod runs."""

from __future__ import annotations

from typing import Any

import pytest

from esteira.packaging.kserve_servingruntime import KServeRuntimeOptions, render_kserve_serving_runtime
from esteira.packaging.servingruntime import RuntimeOptions, render_serving_runtime
from esteira.vocabulary import ESTEIRA_KSERVE_RUNTIME, MODEL_CONTAINER
from tests.support.schemas import ManifestError, validate_custom_resource

IMAGE = "registry.example/esteira/model-server-kserve:0.1.0"


def container(runtime: dict[str, Any]) -> dict[str, Any]:
    (only,) = runtime["spec"]["containers"]
    found: dict[str, Any] = only
    return found


@pytest.mark.parametrize(
    "options",
    [
        KServeRuntimeOptions(image=IMAGE),
        KServeRuntimeOptions(
            image=IMAGE, limits={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}, tmp_size_limit="20Gi"
        ),
    ],
)
def test_validates_against_kserve_crd(options: RuntimeOptions) -> None:
    validate_custom_resource(render_kserve_serving_runtime(options))


def test_validation_catches_a_broken_runtime() -> None:
    broken = render_kserve_serving_runtime(KServeRuntimeOptions(image=IMAGE))
    container(broken)["readinessProbe"]["httpGet"]["port"] = [8080]
    with pytest.raises(ManifestError, match="port"):
        validate_custom_resource(broken)


def test_named_for_model_deployments_and_runs_the_kserve_server() -> None:
    runtime = render_kserve_serving_runtime(KServeRuntimeOptions(image=IMAGE))
    assert runtime["metadata"]["name"] == ESTEIRA_KSERVE_RUNTIME
    c = container(runtime)
    assert c["name"] == MODEL_CONTAINER
    assert c["command"] == ["python", "-m", "model_handlers.kserve_server"]
    assert c["args"] == ["--http-port=8080", "--metrics-port=8082"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}


def test_same_pod_hardening_ports_and_formats_as_esteira_torchserve() -> None:
    """The chart's PodMonitor and a ModelDeployment's format treat both runtimes alike."""
    kserve = render_kserve_serving_runtime(KServeRuntimeOptions(image=IMAGE))
    torchserve = render_serving_runtime(RuntimeOptions(image=IMAGE))
    for key in ("annotations", "supportedModelFormats", "protocolVersions", "volumes"):
        assert kserve["spec"][key] == torchserve["spec"][key]
    for key in ("securityContext", "ports", "volumeMounts", "resources"):
        assert container(kserve)[key] == container(torchserve)[key]
