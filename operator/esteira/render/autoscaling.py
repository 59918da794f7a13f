"""Autoscaling per KServe deployment mode, and the combinations a mode cannot honour.

Knative scales on concurrency or rps (cpu/memory through Knative's HPA class, which cannot scale to zero);
Standard mode scales with an HPA on cpu or memory, or with KEDA on an external Prometheus query, which is
how GPU utilization (DCGM) drives replicas. HPA never goes below one replica, so scale to zero is Knative's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esteira.api.errors import InvalidSpec
from esteira.api.spec import GPU, ModelDeploymentSpec
from esteira.render.names import predictor_service_name
from esteira.vocabulary import KNATIVE_AUTOSCALING_CLASS, KSERVE_AUTOSCALER_CLASS

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
    """The predictor's pods' GPU utilization (percent) summed over the pods, each pod's the average of its GPUs,
    from dcgm-exporter. Summed because KServe writes KEDA's Prometheus trigger with a threshold and KEDA's
    default metric type, AverageValue (keda_reconciler.go): the HPA divides the query's value by the threshold
    to get the replicas it wants. An average across pods (at most 100) over a threshold of 70 asked for two
    pods at most, however many were saturated."""
    selector = f'namespace="{namespace}",pod=~"{predictor_service_name(isvc_name)}-.*"'
    if gpu.is_mig:
        return f"sum(avg by (pod) ({DCGM_MIG_ACTIVE}{{{selector}}})) * 100"
    return f"sum(avg by (pod) ({DCGM_GPU_UTIL}{{{selector}}}))"


def check_mode(spec: ModelDeploymentSpec, prometheus_url: str | None) -> None:
    """What only the operator can judge: the spec's own mode rules are `SPEC_RULES` (CEL and Python), but
    whether a Prometheus URL exists depends on the operator's `--prometheus-url` as well."""
    if spec.autoscaling.effective_metric(spec.deployment_mode) == "gpu-utilization" and not prometheus_url:
        raise InvalidSpec.single(
            "spec.monitoring.prometheusUrl",
            "gpu-utilization scaling reads DCGM metrics from Prometheus: set monitoring.prometheusUrl "
            "or the operator's --prometheus-url",
        )


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
        out.annotations[KSERVE_AUTOSCALER_CLASS] = "keda"
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
            out.annotations[KNATIVE_AUTOSCALING_CLASS] = KNATIVE_HPA_CLASS
        else:
            out.annotations[KSERVE_AUTOSCALER_CLASS] = "hpa"
    return out
