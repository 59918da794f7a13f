"""Esteira's TorchServe runtime as a KServe ClusterServingRuntime (serving.kserve.io/v1alpha1).

How it differs from KServe's stock ``kserve-torchserve``:

* No KServe wrapper: TorchServe's own frontend listens on 8080, the port KServe sends traffic to. It serves
  ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>/infer`` itself, and with
  ``TS_OPEN_INFERENCE_PROTOCOL=oip`` also the Open Inference Protocol's health and metadata routes. Requests
  reach the handler unchanged, so TorchServe's dynamic batching sees every request (the wrapper's
  ``kserve``/``kservev2`` envelopes read only the first request of a batch) and one hop is saved.
* The entrypoint writes the operator's ESTEIRA_BATCH_SIZE / ESTEIRA_MAX_BATCH_DELAY_MS into the model snapshot.
* Readiness means the model's workers are up (``esteira.packaging.healthcheck``), not just that Java answers.
* Non-root with a read-only root filesystem; TorchServe's logs, unpacked archives and the adjusted config
  go to an emptyDir at /tmp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esteira.packaging.config import DEFAULT_MODEL_DIR
from esteira.packaging.entrypoint import DEFAULT_RUNTIME_DIR, ENV_MODEL_DIR, ENV_RUNTIME_DIR
from esteira.vocabulary import ESTEIRA_RUNTIME, MODEL_CONTAINER

SERVING_RUNTIME_API_VERSION = "serving.kserve.io/v1alpha1"
HTTP_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
MODEL_SERVER_UID = 1000
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"
ENTRYPOINT = ["python", "-m", "esteira.packaging.entrypoint"]
HEALTHCHECK = ["python", "-m", "esteira.packaging.healthcheck"]


@dataclass(frozen=True)
class RuntimeOptions:
    """What a cluster may want to change about the runtime; the rest is fixed by Esteira's image."""

    image: str
    name: str = ESTEIRA_RUNTIME
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    tmp_size_limit: str | None = None  # emptyDir limit; archives are unpacked there, so size it for the model
    image_pull_policy: str = "IfNotPresent"

    def __post_init__(self) -> None:
        if not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r}: expected a container image reference")


def _env() -> list[dict[str, Any]]:
    return [
        # The public inference and metrics addresses, where the entrypoint's front listens (TorchServe moves to
        # loopback behind it); the management API stays on loopback (token auth is off).
        {"name": "TS_INFERENCE_ADDRESS", "value": f"http://0.0.0.0:{HTTP_PORT}"},
        {"name": "TS_MANAGEMENT_ADDRESS", "value": f"http://127.0.0.1:{MANAGEMENT_PORT}"},
        {"name": "TS_METRICS_ADDRESS", "value": f"http://0.0.0.0:{METRICS_PORT}"},
        {"name": "TS_METRICS_MODE", "value": "prometheus"},
        {"name": "TS_DISABLE_TOKEN_AUTHORIZATION", "value": "true"},
        {"name": "TS_ENABLE_MODEL_API", "value": "false"},
        {"name": "TS_OPEN_INFERENCE_PROTOCOL", "value": "oip"},
        {"name": ENV_MODEL_DIR, "value": DEFAULT_MODEL_DIR},
        {"name": ENV_RUNTIME_DIR, "value": DEFAULT_RUNTIME_DIR},
        # Torch sizes its thread pools from the node's CPUs, not the container's limit.
        {
            "name": "OMP_NUM_THREADS",
            "valueFrom": {"resourceFieldRef": {"containerName": MODEL_CONTAINER, "resource": "limits.cpu"}},
        },
    ]


def tmp_volume(options: RuntimeOptions) -> dict[str, Any]:
    """The writable /tmp both runtimes need under a read-only root filesystem."""
    volume: dict[str, Any] = {"name": TMP_VOLUME, "emptyDir": {}}
    if options.tmp_size_limit:
        volume["emptyDir"]["sizeLimit"] = options.tmp_size_limit
    return volume


def restricted_security_context() -> dict[str, Any]:
    """Non-root, no privileges, read-only root: Kubernetes' restricted Pod Security profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": MODEL_SERVER_UID,
        "runAsGroup": MODEL_SERVER_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def cluster_serving_runtime(
    options: RuntimeOptions, container: dict[str, Any], *, server_type: str, metrics_port: int
) -> dict[str, Any]:
    """The ClusterServingRuntime around one model container (cluster-scoped: no namespace)."""
    return {
        "apiVersion": SERVING_RUNTIME_API_VERSION,
        "kind": "ClusterServingRuntime",
        "metadata": {
            "name": options.name,
            "labels": {"app.kubernetes.io/part-of": "esteira", "app.kubernetes.io/component": "model-server"},
            "annotations": {"serving.kserve.io/server-type": server_type},
        },
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(metrics_port), "prometheus.kserve.io/path": "/metrics"},
            # Not auto-selected: ModelDeployments name this runtime, and other pytorch models keep theirs.
            "supportedModelFormats": [{"name": "pytorch", "version": "1", "autoSelect": False}],
            "protocolVersions": ["v1", "v2"],
            "containers": [container],
            "volumes": [tmp_volume(options)],
        },
    }


def render_serving_runtime(options: RuntimeOptions) -> dict[str, Any]:
    """The esteira-torchserve ClusterServingRuntime."""
    container: dict[str, Any] = {
        "name": MODEL_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ENTRYPOINT,
        "env": _env(),
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "exec": {"command": HEALTHCHECK},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": restricted_security_context(),
        "resources": {"requests": dict(options.requests), "limits": dict(options.limits)},
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": TMP_PATH}],
    }
    return cluster_serving_runtime(options, container, server_type="torchserve", metrics_port=METRICS_PORT)
