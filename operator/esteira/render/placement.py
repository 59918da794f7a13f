"""GPU and MIG placement: extended resources, node selectors and tolerations."""

from __future__ import annotations

from typing import Any

from esteira.api.quantity import KSERVE_DEFAULTED
from esteira.api.spec import GPU, GPU_TAINT_KEY, ResourceRequirements

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def container_resources(resources: ResourceRequirements, gpu: GPU) -> dict[str, Any]:
    """Requests and limits with the GPU resource set in both (extended resources cannot overcommit), and cpu and
    memory in both where the spec sets one: KServe merges the predictor's resources key by key into the serving
    runtime's (1 CPU and 2Gi in Esteira's runtimes; its defaulting webhook adds the same to a custom container),
    and a request of 4 CPUs beside the runtime's limit of 1 made a pod the API server refuses. A request alone is
    its own limit; a limit alone is its request, as Kubernetes reads a pod's."""
    requests = dict(resources.requests)
    limits = dict(resources.limits)
    for name in KSERVE_DEFAULTED:
        value = requests.get(name, limits.get(name))
        if value is not None:
            requests.setdefault(name, value)
            limits.setdefault(name, value)
    if gpu.count:
        requests[gpu.resource_name] = gpu.count
        limits[gpu.resource_name] = gpu.count
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def node_selector(gpu: GPU) -> dict[str, str]:
    selector = dict(gpu.node_selector)
    if gpu.product:
        selector[GPU_PRODUCT_LABEL] = gpu.product
    return selector


def tolerations(gpu: GPU) -> list[dict[str, Any]]:
    """Explicit tolerations win; otherwise a GPU pod tolerates the usual nvidia.com/gpu taint, any value."""
    if gpu.tolerations is not None:
        return [t.model_dump(by_alias=True, exclude_none=True) for t in gpu.tolerations]
    if gpu.count:
        return [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    return []
