"""KServe v0.20.0's rules for ``spec.canary[]`` (``inference_service_validation.go``: validateCanarySpecs).

Canary predictors run beside the stable one in Standard mode only, with fixed replicas, so every
autoscaling field is refused on them and their traffic shares must fit in 100%.
"""

from __future__ import annotations

from . import components
from .components import Refused
from .values import Obj, go_quote, items, number, obj, sub, text


def validate_canaries(annotations: dict[str, str], spec: Obj) -> None:
    """validateCanarySpecs: mode, stable model, names, shares, and the fixed-replica fields."""
    canaries = [obj(item) or {} for item in items(spec, "canary")]
    if not canaries:
        return
    if annotations.get("serving.kserve.io/deploymentMode", "") != "Standard":
        raise Refused("canary is only supported in Standard deployment mode")
    stable = sub(spec, "predictor")
    stable_impls = components.implementations("predictor", stable)
    if stable_impls[0].storage_uri() is None and obj(stable.get("model")) is None:
        raise Refused(
            "canary requires a stable predictor with a model (multi-model serving is not supported with canary)"
        )
    seen: set[str] = set()
    total = 0
    for index, canary in enumerate(canaries):
        predictor = sub(canary, "predictor")
        name = text(predictor, "name")
        quoted = go_quote(name)
        if not name:
            raise Refused(f"canary[{index}] predictor.name is required")
        if name in seen:
            raise Refused(f"canary predictor.name {quoted} is duplicated")
        seen.add(name)
        if name == text(stable, "name"):
            raise Refused(f"canary predictor.name {quoted} conflicts with stable predictor name")
        percent = number(canary, "trafficPercent")
        if percent < 0 or percent > 100:
            raise Refused(f"canary {quoted} trafficPercent must be between 0 and 100, got {percent}")
        total += percent
        try:
            components.validate_exactly_one("predictor", predictor)
            components.validate_implementation("predictor", predictor)
            components.validate_extensions(predictor)
        except Refused as exc:
            raise Refused(f"canary {quoted} predictor: {exc}") from None
        if predictor.get("workerSpec") is not None:
            raise Refused(f"canary {quoted} must not set workerSpec (multi-node is not yet supported for canary)")
        for field_name, present in (
            ("maxReplicas", number(predictor, "maxReplicas") > 0),
            ("scaleTarget", predictor.get("scaleTarget") is not None),
            ("scaleMetric", predictor.get("scaleMetric") is not None),
            ("autoScaling", predictor.get("autoScaling") is not None),
        ):
            if present:
                raise Refused(f"canary {quoted} must not set {field_name} (canary uses fixed replicas)")
        minimum = predictor.get("minReplicas")
        if isinstance(minimum, int):
            stable_minimum = stable.get("minReplicas")
            stable_minimum = stable_minimum if isinstance(stable_minimum, int) else 1
            if minimum > stable_minimum:
                raise Refused(
                    f"canary {quoted} minReplicas ({minimum}) must not exceed stable predictor "
                    f"minReplicas ({stable_minimum})"
                )
    if total > 100:
        raise Refused(f"sum of canary trafficPercent values ({total}) must be <= 100")
