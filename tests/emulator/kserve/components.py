"""Per-component rules of KServe v0.20.0 (``pkg/apis/serving/v1beta1``): implementations, extensions, storage.

Each function names the Go function it follows; messages are KServe's own format strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from .values import Obj, go_list, go_quote, has, items, number, obj, sub, text

ComponentKind = Literal["predictor", "transformer", "explainer"]

CONTAINER_NAME = "kserve-container"  # constants.go: InferenceServiceContainerName
TRANSFORMER_CONTAINER_NAME = "transformer-container"  # constants.go: TransformerContainerName
STORAGE_URI_ENV = "STORAGE_URI"  # constants.go: CustomSpecStorageUriEnvVarKey
PROTOCOL_ENV = "PROTOCOL"  # constants.go: CustomSpecProtocolEnvVarKey
BLOCKED_ENV_VARS = ("PYTHONPATH",)  # pkg/validation/env_policy.go: DefaultBlockedEnvVars
DEFAULT_MIN_REPLICAS = 1  # constants.go: DefaultMinReplicas
# predictor.go: GetImplementations checks the framework fields in this order, then model.
FRAMEWORKS = (
    "xgboost",
    "pytorch",
    "triton",
    "sklearn",
    "tensorflow",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
    "huggingface",
)
PREDICTOR_IMPLEMENTATIONS = (*FRAMEWORKS, "model")
# component.go: ExactlyOneErrorFor lists every field of the Go struct but the last (ComponentExtensionSpec).
_STRUCT_FIELDS: dict[ComponentKind, tuple[str, str]] = {
    "predictor": (
        "PredictorSpec",
        "Name, SKLearn, XGBoost, Tensorflow, PyTorch, Triton, ONNX, HuggingFace, PMML, LightGBM, Paddle, "
        "Model, StorageUris, StorageContainerName, WorkerSpec, PodSpec",
    ),
    "transformer": ("TransformerSpec", "PodSpec"),
    "explainer": ("ExplainerSpec", "ART, PodSpec"),
}
# component.go constants
MIN_REPLICAS_ABOVE_MAX = "'MinReplicas' cannot be greater than MaxReplicas"
MIN_REPLICAS_NEGATIVE = "'MinReplicas' cannot be less than 0"
MAX_REPLICAS_NEGATIVE = "'MaxReplicas' cannot be less than 0"
PARALLELISM_NEGATIVE = "parallelism cannot be less than 0"
INVALID_LOGGER_TYPE = "invalid logger type"
INVALID_LOGGER_STORAGE = "invalid logger storage configuration"
INVALID_PROTOCOL = "invalid protocol %s. Must be one of [%s]"
NAME_NOT_ALLOWED = "the 'name' field is not allowed in standard predictor"
# inference_service_validation.go constants
STORAGE_URI_IN_TRANSFORMER = "storage uri should not be specified in transformer container"
STORAGE_URI_AND_URIS = "Setting both StorageURI and StorageURIs is not supported."
# component.go: multi-node messages
MISSING_STORAGE_URI = "the InferenceService %s is invalid: StorageURI must be set for multinode enabled"
INVALID_AUTOSCALER = "the InferenceService %s is invalid: Multinode only supports 'none' autoscaler(%s)"
UNSUPPORTED_PROTOCOL = (
    "the InferenceService %s is invalid: Multinode only supports 'pvc' and 'oci' Storage Protocol(%s)"
)
UNKNOWN_GPU = (
    "the InferenceService %s is invalid: Unknown GPU resource type. "
    "Set 'serving.kserve.io/gpu-resource-types' annotation to use custom gpu resource type"
)
PIPELINE_SIZE_BELOW_ONE = (
    "the InferenceService %s is invalid: WorkerSpec.PipelineParallelSize cannot be less than 1(%s)"
)
TENSOR_SIZE_BELOW_ONE = "the InferenceService %s is invalid: WorkerSpec.TensorParallelSize cannot be less than 1(%s)"
MULTIPLE_WORKER_CONTAINERS = (
    "the InferenceService %s is invalid: setting multiple containers in workerSpec is not allowed"
)
PIPELINE_SIZE_ENV = (
    "the InferenceService %s is invalid: setting PIPELINE_PARALLEL_SIZE in environment variables is not allowed"
)
TENSOR_SIZE_ENV = (
    "the InferenceService %s is invalid: setting TENSOR_PARALLEL_SIZE in environment variables is not allowed"
)
# constants.go: DefaultGPUResourceTypeList and the annotation that extends it
GPU_RESOURCE_TYPES = ("nvidia.com/gpu", "amd.com/gpu", "intel.com/gpu", "habana.ai/gaudi")
GPU_TYPES_ANNOTATION = "serving.kserve.io/gpu-resource-types"
_BASIC_RESOURCES = frozenset({"cpu", "memory", "storage", "ephemeral-storage"})
_KBS_RESOURCE_ID = re.compile(r"^kbs:///[a-zA-Z0-9_.-]+/[a-zA-Z0-9_.-]+/[a-zA-Z0-9_.-]+$")


class Refused(Exception):
    """One rule failed; ``str()`` is KServe's message."""


@dataclass(frozen=True)
class Implementation:
    """A non-nil implementation of a component: its field (``model``, ``pytorch``, ``custom``, ``art``) and body."""

    field: str
    body: Obj

    def storage_uri(self) -> str | None:
        """GetStorageUri(): the field for frameworks and models; STORAGE_URI of kserve-container for custom ones."""
        if self.field == "custom":
            return _custom_storage_uri(self.body)
        if self.field == "art":
            return text(self.body, "storageUri") or None  # explainer.go: an empty string is nil
        value = self.body.get("storageUri")
        return value if isinstance(value, str) else None


def implementations(kind: ComponentKind, spec: Obj) -> list[Implementation]:
    """GetImplementations() of predictor.go, transformer.go and explainer.go."""
    containers = items(spec, "containers")
    if kind == "transformer":
        return [Implementation("custom", spec)] if containers else []
    if kind == "explainer":
        found = [Implementation("art", art)] if (art := obj(spec.get("art"))) is not None else []
        return found + ([Implementation("custom", spec)] if containers else [])
    found = [Implementation(name, body) for name in PREDICTOR_IMPLEMENTATIONS if (body := obj(spec.get(name)))]
    found += [Implementation("custom", spec) for c in containers if text(obj(c), "name") == CONTAINER_NAME]
    if containers and not found:
        found.append(Implementation("custom", spec))
    return found


def validate_exactly_one(kind: ComponentKind, spec: Obj) -> None:
    """component.go: validateExactlyOneImplementation and ExactlyOneErrorFor."""
    if len(implementations(kind, spec)) != 1:
        struct, fields = _STRUCT_FIELDS[kind]
        raise Refused(f"exactly one of [{fields}] must be specified in {struct}")


def validate_implementation(kind: ComponentKind, spec: Obj) -> None:
    """The implementation's Validate(): ModelSpec and frameworks check nothing in v0.20 (predictor.go:
    PredictorExtensionSpec.Validate has its storage-spec check commented out); a custom predictor checks
    its PROTOCOL variable (predictor_custom.go: validateCustomProtocol)."""
    implementation = implementations(kind, spec)[0]
    if kind != "predictor" or implementation.field != "custom":
        return
    first = obj(items(spec, "containers")[0]) or {}
    for env in items(first, "env"):
        if text(obj(env), "name") == PROTOCOL_ENV:
            value = text(obj(env), "value")
            if value in ("v1", "v2"):
                return
            raise Refused(INVALID_PROTOCOL % ("v1, v2", value))  # KServe passes the arguments in this order


def validate_extensions(spec: Obj) -> None:
    """component.go: ComponentExtensionSpec.Validate (containerConcurrency, replicas, logger, in this order)."""
    concurrency = spec.get("containerConcurrency")
    if isinstance(concurrency, int) and concurrency < 0:  # validateContainerConcurrency
        raise Refused(PARALLELISM_NEGATIVE)
    validate_replicas(spec)
    logger = obj(spec.get("logger"))
    if logger is not None:  # validateLogger
        if text(logger, "mode") not in ("all", "request", "response"):
            raise Refused(INVALID_LOGGER_TYPE)
        storage = obj(logger.get("storage"))
        if storage is not None and not all(has(storage, key) for key in ("path", "parameters", "key")):
            raise Refused(INVALID_LOGGER_STORAGE)


def validate_replicas(spec: Obj) -> None:
    """component.go: validateReplicas (an unset minReplicas counts as DefaultMinReplicas, 1)."""
    min_replicas = spec.get("minReplicas")
    minimum = min_replicas if isinstance(min_replicas, int) else DEFAULT_MIN_REPLICAS
    maximum = number(spec, "maxReplicas")
    if minimum < 0:
        raise Refused(MIN_REPLICAS_NEGATIVE)
    if maximum < 0:
        raise Refused(MAX_REPLICAS_NEGATIVE)
    if minimum > maximum and maximum != 0:
        raise Refused(MIN_REPLICAS_ABOVE_MAX)


def validate_no_model_name(predictor: Obj) -> None:
    """inference_service_validation.go: validatePredictor refuses ``name`` on any framework or ``model``."""
    for field_name in PREDICTOR_IMPLEMENTATIONS:
        body = obj(predictor.get(field_name))
        if body is not None and text(body, "name"):
            raise Refused(NAME_NOT_ALLOWED)


def validate_blocked_env_vars(name: str, spec: Obj) -> None:
    """inference_service_validation.go: validateBlockedEnvVars over every container a user can write."""
    predictor = sub(spec, "predictor")
    groups: list[list[Obj]] = [_containers(predictor, "containers"), _containers(predictor, "initContainers")]
    framework = predictor_framework_container(predictor)
    if framework is not None:
        groups.append([framework])
    worker = obj(predictor.get("workerSpec"))
    if worker is not None:
        groups += [_containers(worker, "containers"), _containers(worker, "initContainers")]
    for component in ("transformer", "explainer"):
        body = obj(spec.get(component))
        if body is not None:
            groups += [_containers(body, "containers"), _containers(body, "initContainers")]
    art = obj(sub(spec, "explainer").get("art"))
    if art is not None:
        groups.append([art])
    for containers in groups:
        for container in containers:  # pkg/validation/env_policy.go: ValidateBlockedEnvVars
            for env in items(container, "env"):
                if text(obj(env), "name") in BLOCKED_ENV_VARS:
                    why = (
                        f"setting {text(obj(env), 'name')} in container {go_quote(text(container, 'name'))} "
                        "is not allowed for security reasons"
                    )
                    raise Refused(f"the InferenceService {go_quote(name)} is invalid: {why}")


def predictor_framework_container(predictor: Obj) -> Obj | None:
    """inference_service_validation.go: predictorFrameworkContainer (model first, then the frameworks)."""
    order = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml")
    for field_name in (*order, "lightgbm", "paddle"):
        if (body := obj(predictor.get(field_name))) is not None:
            return body
    return None


def validate_multi_node(name: str, annotations: dict[str, str], predictor: Obj) -> None:
    """inference_service_validation.go: validateMultiNodeVariables (only when ``workerSpec`` is set)."""
    worker = obj(predictor.get("workerSpec"))
    if worker is None:
        return
    quoted = go_quote(name)
    if len(items(worker, "containers")) > 1:
        raise Refused(MULTIPLE_WORKER_CONTAINERS % quoted)
    model = obj(predictor.get("model"))
    if model is not None:
        env_names = {text(obj(env), "name") for env in items(model, "env")}
        if "PIPELINE_PARALLEL_SIZE" in env_names:
            raise Refused(PIPELINE_SIZE_ENV % quoted)
        if "TENSOR_PARALLEL_SIZE" in env_names:
            raise Refused(TENSOR_SIZE_ENV % quoted)
        if _unknown_gpu(sub(model, "resources"), annotations):
            raise Refused(UNKNOWN_GPU % quoted)
        uri = model.get("storageUri")
        if not isinstance(uri, str):
            raise Refused(MISSING_STORAGE_URI % quoted)
        scheme = uri.split("://")[0]
        if scheme not in ("pvc", "oci"):
            raise Refused(UNSUPPORTED_PROTOCOL % (quoted, scheme))
        autoscaler = annotations.get("serving.kserve.io/autoscalerClass", "")
        if autoscaler != "none":
            raise Refused(INVALID_AUTOSCALER % (quoted, autoscaler))
    for key, message in (
        ("pipelineParallelSize", PIPELINE_SIZE_BELOW_ONE),
        ("tensorParallelSize", TENSOR_SIZE_BELOW_ONE),
    ):
        size = worker.get(key)
        if isinstance(size, int) and size < 1:
            raise Refused(message % (quoted, size))
    for container in _containers(worker, "containers"):
        if _unknown_gpu(sub(container, "resources"), annotations):
            raise Refused(UNKNOWN_GPU % quoted)


def validate_collocation_storage_uri(predictor: Obj) -> None:
    """inference_service_validation.go: validateCollocationStorageURI."""
    for container in _containers(predictor, "containers"):
        if text(container, "name") == TRANSFORMER_CONTAINER_NAME:
            if any(text(obj(env), "name") == STORAGE_URI_ENV for env in items(container, "env")):
                raise Refused(STORAGE_URI_IN_TRANSFORMER)
            break


def validate_storage_uris(spec: Obj) -> None:
    """inference_service_validation.go: validateMultipleStorageURIs (transformer, explainer, then predictor)."""
    kinds: tuple[ComponentKind, ...] = ("transformer", "explainer", "predictor")
    for kind in kinds:
        component = obj(spec.get(kind))
        if component is None:
            continue
        found = implementations(kind, component)
        uri = found[0].storage_uri() if found else None
        if uri is not None and has(component, "storageUris"):
            raise Refused(STORAGE_URI_AND_URIS)
        _validate_storage_uri_specs([obj(item) or {} for item in items(component, "storageUris")])


def validate_confidential(predictor: Obj) -> list[str]:
    """inference_service_validation.go: validateConfidential and pkg/validation/confidential.go."""
    confidential: Obj | None = None
    for field_name in PREDICTOR_IMPLEMENTATIONS:  # GetConfidentialSpecFromPredictor
        if (body := obj(predictor.get(field_name))) is not None:
            confidential = obj(body.get("confidential"))
            break
    if confidential is None or confidential.get("enabled") is not True:
        return []
    found = implementations("predictor", predictor)
    uri = found[0].storage_uri() if found else None
    if not uri:
        raise Refused("confidential model serving requires storageUri to be set")
    warnings = []
    if uri.startswith("oci://"):
        warnings.append(
            "confidential has no effect with OCI URIs; OCI image decryption is handled by the container "
            "runtime via runtimeClassName"
        )
    if uri.startswith("pvc://"):
        warnings.append(
            "confidential has no effect with PVC URIs; the storage-initializer is not injected for PVC volumes"
        )
    resource_id = text(confidential, "resourceId")
    if resource_id and not _KBS_RESOURCE_ID.match(resource_id):
        raise Refused(
            f"spec.predictor.confidential.resourceId: Invalid value: {go_quote(resource_id)}: "
            "must be in the format kbs:///<repo>/<type>/<tag>"
        )
    return warnings


def _validate_storage_uri_specs(specs: list[Obj]) -> None:
    """inference_service_validation.go: validateMultipleStorageURIsSpec and validateStorageURISpec."""
    paths: list[str] = []
    pvc_paths: list[str] = []
    for spec in specs:
        uri, mount = text(spec, "uri"), text(spec, "mountPath")
        if not uri:
            raise Refused("storage URI cannot be empty")
        if mount == "/":
            raise Refused("storage path cannot be empty")
        if not mount.startswith("/"):
            raise Refused(f"storage path must be absolute: {mount}")
        if ".." in mount:
            raise Refused(f"storage path cannot contain '..' for security reasons: {mount}")
        (pvc_paths if uri.startswith("pvc://") else paths).append(mount)
    if len(paths) <= 1:
        return
    if len(pvc_paths) > 1 and len(set(pvc_paths)) != len(pvc_paths):
        raise Refused("PVC storage paths must be unique")
    if _common_parent(paths) == "/":
        raise Refused(
            f"storage paths must have a common parent directory. Current paths: {go_list(paths)} "
            "have no common parent beyond root"
        )


def _common_parent(paths: list[str]) -> str:
    """pkg/utils/storage.go: FindCommonParentPath."""
    parts = [path.strip("/").split("/") if path.strip("/") else [] for path in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/" + "/".join(common) if common else "/"


def _unknown_gpu(resources: Obj, annotations: dict[str, str]) -> bool:
    """pkg/utils/utils.go: HasUnknownGpuResourceType with UpdateGPUResourceTypeListByAnnotation."""
    names = {key for part in ("limits", "requests") for key in sub(resources, part)} - _BASIC_RESOURCES
    allowed = set(GPU_RESOURCE_TYPES)
    custom = annotations.get(GPU_TYPES_ANNOTATION, "")
    if custom:
        extra = _custom_gpu_types(custom)
        if extra is None:
            raise Refused(
                f"invalid GPU format({custom}) for {GPU_TYPES_ANNOTATION} annotation: must be a valid JSON array"
            )
        allowed |= set(extra)
    return bool(names - allowed)


def _custom_gpu_types(value: str) -> list[str] | None:
    """pkg/utils/utils.go: IsValidCustomGPUArray."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(item, str) and item for item in parsed):
        return None
    return parsed


def _custom_storage_uri(spec: Obj) -> str | None:
    """predictor_custom.go: CustomPredictor.GetStorageUri reads STORAGE_URI of kserve-container."""
    for container in _containers(spec, "containers"):
        if text(container, "name") == CONTAINER_NAME:
            for env in items(container, "env"):
                if text(obj(env), "name") == STORAGE_URI_ENV:
                    return text(obj(env), "value")
            break
    return None


def _containers(spec: Obj, key: str) -> list[Obj]:
    return [item for item in items(spec, key) if isinstance(item, dict)]
