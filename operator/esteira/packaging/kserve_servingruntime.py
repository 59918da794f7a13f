"""The esteira-kserve runtime as a KServe ClusterServingRuntime: Esteira's handler on KServe's Python model server.

The same handler core as esteira-torchserve (parsing, validation, metrics, drift, logging), served in-process
by ``kserve.ModelServer`` (``python -m model_handlers.kserve_server``, the Dockerfile's ``model-server-kserve``
image): no Java, no worker hop, and adaptive batching in the server. The ports are esteira-torchserve's: 8080
for inference (KServe v1 and Open Inference Protocol v2) and health, 8082 for Prometheus, so the chart's
PodMonitor scrapes both runtimes alike. The operator's ESTEIRA_BATCH_SIZE caps a batch; ESTEIRA_IDLE_POLL_US
(the chart's ``kserveRuntime.idlePollMicroseconds``, 0: off) is the longest poll after a lone request;
ESTEIRA_WORKERS (``kserveRuntime.workers``, default 1; ``auto``: one per CPU of the pod's limit) is how many
server processes share the pod's CPUs. Pod
hardening and the /tmp emptyDir are esteira-torchserve's too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esteira.packaging.config import DEFAULT_MODEL_DIR
from esteira.packaging.entrypoint import DEFAULT_RUNTIME_DIR, ENV_MODEL_DIR, ENV_RUNTIME_DIR
from esteira.packaging.servingruntime import (
    HTTP_PORT,
    METRICS_PORT,
    TMP_PATH,
    TMP_VOLUME,
    RuntimeOptions,
    cluster_serving_runtime,
    restricted_security_context,
)
from esteira.vocabulary import ENV_IDLE_POLL_US, ENV_WORKERS, ESTEIRA_KSERVE_RUNTIME, MODEL_CONTAINER

ENTRYPOINT = ["python", "-m", "model_handlers.kserve_server"]
READY_PATH = "/v2/health/ready"  # answers once the handler is initialized: the server starts after loading


@dataclass(frozen=True)
class KServeRuntimeOptions(RuntimeOptions):
    """esteira-torchserve's options, named for this runtime, its idle poll (``ESTEIRA_IDLE_POLL_US``) and its
    server processes (``ESTEIRA_WORKERS``)."""

    name: str = ESTEIRA_KSERVE_RUNTIME
    idle_poll_us: int | str = 0
    workers: int | str = 1


def _env(options: KServeRuntimeOptions) -> list[dict[str, Any]]:
    return [
        {"name": ENV_MODEL_DIR, "value": DEFAULT_MODEL_DIR},
        {"name": ENV_RUNTIME_DIR, "value": DEFAULT_RUNTIME_DIR},
        {"name": ENV_IDLE_POLL_US, "value": str(options.idle_poll_us)},
        {"name": ENV_WORKERS, "value": str(options.workers)},
        # Torch sizes its thread pools from the node's CPUs, not the container's limit.
        {
            "name": "OMP_NUM_THREADS",
            "valueFrom": {"resourceFieldRef": {"containerName": MODEL_CONTAINER, "resource": "limits.cpu"}},
        },
    ]


def render_kserve_serving_runtime(options: KServeRuntimeOptions) -> dict[str, Any]:
    """The esteira-kserve ClusterServingRuntime."""
    container: dict[str, Any] = {
        "name": MODEL_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ENTRYPOINT,
        "args": [f"--http-port={HTTP_PORT}", f"--metrics-port={METRICS_PORT}"],
        "env": _env(options),
        "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": HTTP_PORT},
            "initialDelaySeconds": 2,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": restricted_security_context(),
        "resources": {"requests": dict(options.requests), "limits": dict(options.limits)},
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": TMP_PATH}],
    }
    return cluster_serving_runtime(options, container, server_type="kserve", metrics_port=METRICS_PORT)
