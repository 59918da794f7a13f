"""Autoscaling per KServe deployment mode, and the combinations a mode cannot honour.

Knative scales on concurrency or rps (cpu/memory through Knative's HPA class, which cannot scale to zero);
Standard mode scales with an HPA on cpu or memory, or with KEDA on an external Prometheus query, which is
how GPU utilization (DCGM) drives replicas. HPA never goes below one replica, so scale to zero is Knative's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esteira.api.errors import FieldProblem, InvalidSpec
from esteira.api.spec import GPU, ModelDeploymentSpec

KNATIVE_HPA_CLASS = "hpa.autoscaling.knative.dev"
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
# On MIG slices DCGM_FI_DEV_GPU_UTIL reports the whole GPU; the graphics-engine activity is per slice (0-1).
DCGM_MIG_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"


@dataclass
class AutoscalingFields:
    """What autoscaling contributes to the InferenceService: annotations and predictor fields."""

    annotations: dict[str, str] = field(default_factory=dict)
    predictor: dict[str, Any] = field(default_factory=dict)


def gpu_utilization_query(namespace: str, isvc_name: str, gpu: GPU) -> str:
    """Average GPU utilization (percent) over the predictor's pods, from dcgm-exporter."""
    selector = f'namespace="{namespace}",pod=~"{isvc_name}-predictor-.*"'
    if gpu.is_mig:
        return f"avg({DCGM_MIG_ACTIVE}{{{selector}}}) * 100"
    return f"avg({DCGM_GPU_UTIL}{{{selector}}})"


def check_mode(spec: ModelDeploymentSpec, prometheus_url: str | None) -> None:
    """Reject what the deployment mode cannot do, saying why and what to use instead."""
    mode = spec.deployment_mode
    scaling = spec.autoscaling
    metric = scaling.effective_metric(mode)
    problems: list[FieldProblem] = []
    if mode == "Knative":
        if metric == "gpu-utilization":
            problems.append(
                FieldProblem(
                    "spec.autoscaling.metric",
                    "gpu-utilization needs KEDA, which KServe offers in Standard mode only: use deploymentMode "
                    "Standard, or scale on concurrency or rps in Knative mode",
                )
            )
        if metric in ("cpu", "memory") and scaling.min_replicas == 0:
            problems.append(
                FieldProblem(
                    "spec.autoscaling.minReplicas",
                    f"Knative's HPA class (used for {metric}) cannot scale to zero: set minReplicas >= 1, or "
                    "scale on concurrency or rps",
                )
            )
    else:
        if metric in ("concurrency", "rps"):
            problems.append(
                FieldProblem(
                    "spec.autoscaling.metric",
                    f"{metric} scaling needs Knative: use deploymentMode Knative, or scale on cpu, memory or "
                    "gpu-utilization in Standard mode",
                )
            )
        if scaling.min_replicas == 0:
            problems.append(
                FieldProblem(
                    "spec.autoscaling.minReplicas",
                    "Standard mode keeps at least one replica (the HPA raises 0 to 1): use deploymentMode "
                    "Knative with metric concurrency or rps to scale to zero",
                )
            )
    if metric == "gpu-utilization":
        if spec.gpu.count == 0:
            problems.append(
                FieldProblem("spec.autoscaling.metric", "gpu-utilization needs gpu.count > 0 (no GPU to measure)")
            )
        if not prometheus_url:
            problems.append(
                FieldProblem(
                    "spec.monitoring.prometheusUrl",
                    "gpu-utilization scaling reads DCGM metrics from Prometheus: set monitoring.prometheusUrl "
                    "or the operator's --prometheus-url",
                )
            )
    if problems:
        raise InvalidSpec(problems)


def autoscaling_fields(
    spec: ModelDeploymentSpec, namespace: str, isvc_name: str, prometheus_url: str | None
) -> AutoscalingFields:
    check_mode(spec, prometheus_url)
    mode = spec.deployment_mode
    scaling = spec.autoscaling
    metric = scaling.effective_metric(mode)
    target = scaling.effective_target(mode)
    out = AutoscalingFields(predictor={"minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas})
    if metric == "gpu-utilization":
        out.annotations["serving.kserve.io/autoscalerClass"] = "keda"
        out.predictor["autoScaling"] = {
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "backend": "prometheus",
                            "serverAddress": prometheus_url,
                            "query": gpu_utilization_query(namespace, isvc_name, spec.gpu),
                        },
                        "target": {"type": "Value", "value": str(target)},
                    },
                }
            ]
        }
        return out
    out.predictor["scaleMetric"] = metric
    out.predictor["scaleTarget"] = target
    if metric in ("cpu", "memory"):
        out.predictor["scaleMetricType"] = "Utilization"
        if mode == "Knative":
            out.annotations["autoscaling.knative.dev/class"] = KNATIVE_HPA_CLASS
        else:
            out.annotations["serving.kserve.io/autoscalerClass"] = "hpa"
    return out
