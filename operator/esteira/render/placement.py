"""GPU and MIG placement: extended resources, node selectors and tolerations."""

from __future__ import annotations

from typing import Any

from esteira.api.spec import GPU, GPU_TAINT_KEY, ResourceRequirements

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def container_resources(resources: ResourceRequirements, gpu: GPU) -> dict[str, Any]:
    """Requests and limits with the GPU resource set in both (extended resources cannot overcommit)."""
    requests = dict(resources.requests)
    limits = dict(resources.limits)
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
