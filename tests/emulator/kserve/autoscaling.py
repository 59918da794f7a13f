"""KServe v0.20.0's autoscaling rules per mode and autoscaler class (``inference_service_validation.go``).

Standard mode checks HPA or KEDA settings only when ``serving.kserve.io/autoscalerClass`` names them;
every other mode is Knative, checked as KPA unless Knative's own class annotation selects HPA.
"""

from __future__ import annotations

from decimal import Decimal

from .components import Refused
from .values import Obj, items, obj, quantity, sub, text

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"  # constants.go: DeploymentMode
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"  # constants.go: AutoscalerClass
KNATIVE_CLASS = "autoscaling.knative.dev/class"  # knative.dev/serving autoscaling.ClassAnnotationKey
KNATIVE_HPA = "hpa.autoscaling.knative.dev"  # knative.dev/serving autoscaling.HPA
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")  # constants.go: AutoscalerAllowedClassList
HPA_METRICS = ("cpu", "memory")  # constants.go: AutoscalerAllowedHPAMetricsList
KPA_METRICS = ("concurrency", "rps")  # constants.go: AutoscalerAllowedKPAMetricsList
TARGET_UTILIZATION = "the target utilization percentage should be a [1-100] integer"
_ONE_MIB = Decimal(2**20)
# KEDA metric types with a query: (field, name in messages, word in messages)
_SOURCES = {"External": ("external", "External", "external"), "PodMetric": ("podmetric", "PodMetric", "pod")}


def validate_autoscaler_class(annotations: dict[str, str]) -> None:
    """inference_service_validation.go: validateInferenceServiceAutoscaler."""
    if AUTOSCALER_CLASS in annotations and annotations[AUTOSCALER_CLASS] not in AUTOSCALER_CLASSES:
        raise Refused(f"[{annotations[AUTOSCALER_CLASS]}] is not a supported autoscaler class type")


def validate_component(annotations: dict[str, str], extensions: Obj) -> None:
    """inference_service_validation.go: validateAutoScalingCompExtension."""
    if annotations.get(DEPLOYMENT_MODE, "") == "Standard":
        autoscaler = annotations.get(AUTOSCALER_CLASS, "")
        if autoscaler == "hpa":
            _validate_hpa(extensions)
        elif autoscaler == "keda":
            _validate_keda(extensions)
        return
    if annotations.get(KNATIVE_CLASS, "") == KNATIVE_HPA:
        _validate_hpa(extensions)
    else:
        _validate_kpa(extensions)


def _validate_hpa(extensions: Obj) -> None:
    """inference_service_validation.go: validateScalingHPACompExtension."""
    metric = text(extensions, "scaleMetric") or "cpu"
    if metric not in HPA_METRICS:  # validateHPAMetrics
        raise Refused(f"[{metric}] is not a supported metric")
    target = extensions.get("scaleTarget")
    if isinstance(target, int):
        # KServe writes `metric == cpu && target < 1 || target > 100`: Go binds && first, so any
        # metric above 100 fails with the utilization message.
        if (metric == "cpu" and target < 1) or target > 100:
            raise Refused(TARGET_UTILIZATION)
        if metric == "memory" and target < 1:
            raise Refused("the target memory should be greater than 1 MiB")
    for spec in _metrics(extensions):
        kind = text(spec, "type")
        if kind != "Resource":
            raise Refused(f"invalid HPA metric source type with value [{kind}],valid metric source types are Resource")
        if obj(spec.get("resource")) is None:
            raise Refused("metricSpec.Resource is not set for resource metric source type")


def _validate_keda(extensions: Obj) -> None:
    """inference_service_validation.go: validateScalingKedaCompExtension."""
    if extensions.get("scaleMetric") is not None:
        raise Refused("ScaleMetric is not supported for KEDA")
    for spec in _metrics(extensions):
        kind = text(spec, "type")
        if kind == "Resource":
            resource = obj(spec.get("resource"))
            if resource is None:
                raise Refused("metricSpec.Resource is not set for resource metric source type")
            target = sub(resource, "target")
            name, target_type = text(resource, "name"), text(target, "type")
            if name == "cpu":
                if target_type != "Utilization":
                    raise Refused("the cpu target value type should be Utilization")
            elif name == "memory":
                if target_type not in ("AverageValue", "Utilization"):
                    raise Refused("the memory target value type should be AverageValue or Utilization")
                if target_type == "AverageValue" and quantity(target.get("averageValue")) < _ONE_MIB:
                    raise Refused("the memory target value should be greater than 1 MiB")
            else:
                raise Refused(f"resource type {name} is not supported")
            _validate_target(target)
        elif kind in _SOURCES:
            field_name, label, word = _SOURCES[kind]
            source = obj(spec.get(field_name))
            if source is None:
                raise Refused(f"metricSpec.{label} is not set for {word} metric source type")
            if not text(sub(source, "metric"), "query"):
                raise Refused("the query should not be empty")
            target = sub(source, "target")
            if target.get("value") is None:
                raise Refused("the target threshold value should not be empty")
            _validate_target(target)
        else:
            raise Refused(f"unknown KEDA metric type with value [{kind}].Valid types are Resource,External,PodMetric")


def _validate_target(target: Obj) -> None:
    """inference_service_validation.go: validateScaleTarget and validateTargetUtilization."""
    kind = text(target, "type")
    if kind == "Utilization":
        utilization = target.get("averageUtilization")
        if not isinstance(utilization, int):
            raise Refused("the AverageUtilization type should be set")
        if utilization < 1 or utilization > 100:
            raise Refused(TARGET_UTILIZATION)
    elif kind == "AverageValue" and target.get("averageValue") is None:
        raise Refused("the AverageValue type should be set")
    elif kind == "Value" and target.get("value") is None:
        raise Refused("the Value type should be set")


def _validate_kpa(extensions: Obj) -> None:
    """inference_service_validation.go: validateScalingKPACompExtension."""
    if extensions.get("deploymentStrategy") is not None:
        raise Refused("customizing deploymentStrategy is only supported for raw deployment mode")
    metric = text(extensions, "scaleMetric") or "concurrency"
    if metric not in KPA_METRICS:  # validateKPAMetrics
        raise Refused(f"[{metric}] is not a supported metric")
    target = extensions.get("scaleTarget")
    if metric == "rps" and isinstance(target, int) and target < 1:
        raise Refused("the target for rps should be greater than 1")


def _metrics(extensions: Obj) -> list[Obj]:
    autoscaling = obj(extensions.get("autoScaling"))
    return [spec for spec in items(autoscaling, "metrics") if isinstance(spec, dict)]
