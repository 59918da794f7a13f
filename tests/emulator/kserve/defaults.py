"""KServe v0.20.0's defaulting webhook with the stock ``inferenceservice-config`` (``inference_service_defaults.go``).

The stock ConfigMap (config/configmap/inferenceservice.yaml at v0.20.0) sets ``deploy.defaultDeploymentMode:
Serverless`` (read as Knative, so no mode annotation is added), ``localModel.enabled: false``,
``security.autoMountServiceAccountToken: true`` and ``inferenceService.resource`` below.
"""

from __future__ import annotations

from typing import Any

from . import components
from .autoscaling import DEPLOYMENT_MODE
from .values import Obj, items, obj, text

# config/configmap/inferenceservice.yaml: inferenceService.resource (requests and limits alike)
DEFAULT_RESOURCES = {"cpu": "1", "memory": "2Gi"}
MODEL_FORMAT_ANNOTATION = "modelFormat"  # constants.go: ModelFormatAnnotationKey
# constants.go: LocalModelLabel, LocalModelNamespaceLabel; LocalModelSourceUri/PVCName annotation keys
LOCAL_MODEL_LABELS = ("internal.serving.kserve.io/localmodel", "internal.serving.kserve.io/localmodel-namespace")
LOCAL_MODEL_ANNOTATIONS = (
    "internal.serving.kserve.io/localmodel-sourceuri",
    "internal.serving.kserve.io/localmodel-pvc-name",
)
_LEGACY_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}  # constants.go: Legacy* modes
_V2_BY_DEFAULT = ("triton", "onnx", "huggingface")  # assignTritonRuntime, assignONNXRuntime, ...
_V2_MODEL_FORMATS = ("triton", "vLLM")  # setPredictorModelDefaults
_ASSIGN_ORDER = (
    "sklearn",
    "tensorflow",
    "xgboost",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)


def default_inference_service(isvc: Obj) -> None:
    """InferenceService.DefaultInferenceService, in place."""
    meta = isvc.setdefault("metadata", {})
    annotations = meta.get("annotations")
    spec = isvc.setdefault("spec", {})
    mode = annotations.get(DEPLOYMENT_MODE) if isinstance(annotations, dict) else None
    if isinstance(annotations, dict) and mode in _LEGACY_MODES:
        mode = annotations[DEPLOYMENT_MODE] = _LEGACY_MODES[mode]
    kinds: list[components.ComponentKind] = ["transformer", "explainer"]
    if mode != "ModelMesh":
        _set_predictor_model_defaults(meta, spec.setdefault("predictor", {}))
        kinds.append("predictor")
    for kind in kinds:
        component = obj(spec.get(kind))
        if component is None:
            continue
        found = components.implementations(kind, component)
        if len(found) == 1 and found[0].field == "custom":
            _default_custom(component)  # Model, frameworks, ART and extensions default nothing
    _clear_local_model_metadata(meta, obj(spec.get("predictor")) or {})


def _set_predictor_model_defaults(meta: Obj, predictor: Obj) -> None:
    """setPredictorModelDefaults: a framework field becomes ``model`` with that format; formats become annotations."""
    for framework in _ASSIGN_ORDER:
        if _convert(predictor, framework):
            break
    model = obj(predictor.get("model"))
    if model is None:
        return
    format_name = text(obj(model.get("modelFormat")), "name")
    if model.get("protocolVersion") is None and format_name in _V2_MODEL_FORMATS:
        model["protocolVersion"] = "v2"
    if format_name:
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = meta["annotations"] = {}
        annotations.setdefault(MODEL_FORMAT_ANNOTATION, format_name)


def _convert(predictor: Obj, framework: str) -> bool:
    """assign<Framework>Runtime: the framework's fields move under ``model`` and the framework field goes."""
    body = obj(predictor.get(framework))
    if body is None:
        return False
    if framework in _V2_BY_DEFAULT and body.get("protocolVersion") is None:
        body["protocolVersion"] = "v2"
    predictor["model"] = {**body, "modelFormat": {"name": framework}}
    del predictor[framework]
    return True


def _default_custom(component: Obj) -> None:
    """CustomPredictor/CustomTransformer/CustomExplainer.Default: name the container, default its resources."""
    containers = items(component, "containers")
    if not containers:
        containers = component["containers"] = [{}]
    first = containers[0]
    if len(containers) == 1 or not text(first, "name"):
        first["name"] = components.CONTAINER_NAME
    resources: dict[str, Any] = first.setdefault("resources", {})
    for part in ("requests", "limits"):  # setResourceRequirementDefaults
        current = resources.get(part)
        if not isinstance(current, dict):
            current = resources[part] = {}
        for name, value in DEFAULT_RESOURCES.items():
            current.setdefault(name, value)


def _clear_local_model_metadata(meta: Obj, predictor: Obj) -> None:
    """setLocalModelLabel with the local model cache disabled: deleteLocalModelMetadata when a storageUri is set."""
    found = components.implementations("predictor", predictor)
    if not found or found[0].storage_uri() is None:
        return
    for key, names in (("labels", LOCAL_MODEL_LABELS), ("annotations", LOCAL_MODEL_ANNOTATIONS)):
        values = meta.get(key)
        if isinstance(values, dict):
            for name in names:
                values.pop(name, None)
