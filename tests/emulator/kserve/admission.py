"""KServe v0.20.0's InferenceService admission webhooks as pure functions over plain dicts (no I/O).

KServe refuses objects its CRD schema accepts; an emulator that skipped these rules would let tests
pass with objects a cluster refuses. Sources, all under ``pkg/apis/serving/v1beta1`` unless named:
``inference_service_defaults.go`` (the mutating webhook ``inferenceservice.kserve-webhook-server.defaulter``)
and ``inference_service_validation.go`` (the validating webhook ``inferenceservice.kserve-webhook-server.validator``).
Each rule sits beside a comment naming the Go function it follows.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from . import autoscaling, canary, components, defaults
from .components import Refused
from .values import Obj, canonical_resources, obj, sub, text

VALIDATOR = "inferenceservice.kserve-webhook-server.validator"
DEFAULTER = "inferenceservice.kserve-webhook-server.defaulter"
ISVC_NAME_FORMAT = "[a-z]([-a-z0-9]*[a-z0-9])?"  # inference_service_validation.go: IsvcNameFmt
# component.go: InvalidISVCNameFormatError
INVALID_NAME = (
    'the InferenceService "%s" is invalid: a InferenceService name must consist of lower case alphanumeric '
    'characters or \'-\', and must start with alphabetical character. (e.g. "my-name" or "abc-123", regex used '
    "for validation is '%s')"
)
_COMPONENT_KINDS: tuple[components.ComponentKind, ...] = ("predictor", "transformer", "explainer")


class AdmissionDenied(Exception):
    """KServe's validating webhook refused the object; ``message`` is KServe's exact error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def default_inference_service(obj_: dict[str, Any]) -> dict[str, Any]:
    """Return a defaulted deep copy, as the defaulting webhook would patch it (InferenceServiceDefaulter.Default).

    controller-runtime's defaulter (pkg/webhook/admission/defaulter_custom.go: Handle) decodes the object into
    KServe's Go struct, defaults it and answers with the patch from the request's JSON to the struct marshalled
    again (PatchResponseFromRaw, dropping only removals): every resource quantity comes back in apimachinery's
    canonical form, a string (:func:`values.canonical_quantity`)."""
    result = copy.deepcopy(obj_)
    defaults.default_inference_service(result)
    if isinstance(result.get("spec"), dict):
        result["spec"] = canonical_resources(result["spec"])
    return result


def validate_create(obj_: dict[str, Any]) -> list[str]:
    """InferenceServiceValidator.ValidateCreate: the warnings, or AdmissionDenied with KServe's message."""
    return _guarded(lambda: _validate_inference_service(obj_))


def validate_update(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """InferenceServiceValidator.ValidateUpdate; ``old`` is the stored object, status included."""

    def run() -> list[str]:
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            return []  # an object being deleted is let through
        _validate_deployment_mode(new, old)
        _validate_predictor_name_change(new, old)
        return _validate_inference_service(new)

    return _guarded(run)


def admit(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Default, then validate (create when ``old`` is None); return the object to store."""
    defaulted = default_inference_service(new)
    if old is None:
        validate_create(defaulted)
    else:
        validate_update(old, defaulted)
    return defaulted


def _guarded(run: Any) -> list[str]:
    try:
        warnings: list[str] = run()
    except Refused as exc:
        raise AdmissionDenied(str(exc)) from None
    return warnings


def _validate_inference_service(isvc: Obj) -> list[str]:
    """validateInferenceService: the checks in KServe's order; the first failure is the answer."""
    meta, spec = sub(isvc, "metadata"), sub(isvc, "spec")
    name = text(meta, "name")
    annotations = {k: v for k, v in sub(meta, "annotations").items() if isinstance(v, str)}
    predictor = sub(spec, "predictor")
    _validate_name(name)
    autoscaling.validate_autoscaler_class(annotations)  # validateInferenceServiceAutoscaler
    components.validate_blocked_env_vars(name, spec)  # validateBlockedEnvVars
    components.validate_multi_node(name, annotations, predictor)  # validateMultiNodeVariables
    components.validate_collocation_storage_uri(predictor)  # validateCollocationStorageURI
    components.validate_no_model_name(predictor)  # validatePredictor
    components.validate_storage_uris(spec)  # validateMultipleStorageURIs
    warnings = components.validate_confidential(predictor)  # validateConfidential
    for kind in _COMPONENT_KINDS:
        component = predictor if kind == "predictor" else obj(spec.get(kind))
        if component is None:
            continue
        components.validate_exactly_one(kind, component)  # validateExactlyOneImplementation
        components.validate_implementation(kind, component)  # GetImplementation().Validate()
        components.validate_extensions(component)  # GetExtensions().Validate()
        autoscaling.validate_component(annotations, component)  # validateAutoScalingCompExtension
    canary.validate_canaries(annotations, spec)  # validateCanarySpecs
    return warnings


def _validate_name(name: str) -> None:
    """validateInferenceServiceName: a leading letter, then lower-case letters, digits and dashes."""
    if not re.fullmatch(ISVC_NAME_FORMAT, name):
        raise Refused(INVALID_NAME % (name, ISVC_NAME_FORMAT))


def _validate_deployment_mode(new: Obj, old: Obj) -> None:
    """validateDeploymentMode: the mode annotation may not differ from the mode the controller recorded."""
    recorded = text(sub(old, "status"), "deploymentMode")
    if not recorded:
        return  # the controller has not written a status yet
    recorded = {"RawDeployment": "Standard", "Serverless": "Knative"}.get(recorded, recorded)  # ParseDeploymentMode
    annotations = sub(sub(new, "metadata"), "annotations")
    wanted = annotations.get(autoscaling.DEPLOYMENT_MODE)
    if isinstance(wanted, str) and wanted != recorded:
        raise Refused(f"update rejected: deploymentMode cannot be changed from '{recorded}' to '{wanted}'")


def _validate_predictor_name_change(new: Obj, old: Obj) -> None:
    """validatePredictorNameChange: renaming the stable predictor needs a new model (storageUri)."""
    old_predictor, new_predictor = sub(sub(old, "spec"), "predictor"), sub(sub(new, "spec"), "predictor")
    if text(old_predictor, "name") == text(new_predictor, "name"):
        return
    if _predictor_storage_uri(old_predictor) == _predictor_storage_uri(new_predictor):
        raise Refused("predictor.name change requires a model change (e.g. storageUri)")


def _predictor_storage_uri(predictor: Obj) -> str:
    """getPredictorStorageURI: model.storageUri, else the implementation's, else ""."""
    model = obj(predictor.get("model"))
    if model is not None and isinstance(model.get("storageUri"), str):
        return str(model["storageUri"])
    found = components.implementations("predictor", predictor)
    uri = found[0].storage_uri() if found else None
    return uri or ""


__all__ = ["AdmissionDenied", "admit", "default_inference_service", "validate_create", "validate_update"]
