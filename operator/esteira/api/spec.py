"""The ModelDeployment spec: the single source of truth for the CRD schema and the operator's parsing.

The CRD's openAPIV3Schema is generated from these models (see `esteira.api.crd`), and every
cross-field rule exists twice on purpose: as a CEL rule the API server enforces at admission and as a
Python check the operator and `esteira render` enforce. Tests evaluate both on the same objects.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from esteira.api.errors import FieldProblem, InvalidSpec
from esteira.api.quantity import (
    MAX_EXTENDED_DOMAIN,
    MAX_QUANTITY_LENGTH,
    QUANTITY_PATTERN,
    WHOLE_NUMBER_PATTERN,
    container_resource_name_problem,
    is_extended,
    is_whole_number,
    overcommit_allowed,
    parse_quantity,
)
from esteira.vocabulary import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_GRACE_PERIOD_SECONDS,
    DEFAULT_INGRESS_DOMAIN,
    ESTEIRA_KSERVE_RUNTIME,
    ESTEIRA_RUNTIME,
    ESTEIRA_RUNTIMES,
    MAX_REQUEST_TIMEOUT_SECONDS,
    MAX_WORKERS,
    is_esteira_runtime,
)

# Prometheus's (and Go's) form: units from the largest down, each once. Any other order ("30s1m", "1m1m") made a
# PromQL range that Prometheus refuses, and no analysis could run.
DURATION_PATTERN = (
    r"^([0-9]+h([0-9]+m)?([0-9]+s)?([0-9]+ms)?|[0-9]+m([0-9]+s)?([0-9]+ms)?|[0-9]+s([0-9]+ms)?|[0-9]+ms)$"
)
ZERO_DURATION_PATTERN = r"^(0+(ms|s|m|h))+$"
ZERO_PROGRESS_DEADLINE = "rollout.progressDeadline must be longer than 0s: every canary starts not ready"
DEFAULT_STEPS = (10, 25, 50, 100)
NOTHING_TO_COMPARE = (
    "rollout.steps [100] leaves the stable revision no traffic to compare the canary with: errorRate.maxIncrease, "
    "latency.maxIncreaseRatio, predictionShift and accuracy need a step below 100 (or rollout.mirror with router "
    "GatewayAPI)"
)
# A PromQL range of 0s is refused by Prometheus, and analyses 0s apart would run on every reconcile.
ZERO_WINDOWS = {
    "rollout.interval": "rollout.interval must be longer than 0s: it is the window each analysis reads",
    "monitoring.drift.window": "monitoring.drift.window must be longer than 0s: it is the traffic each evaluation reads",
    "monitoring.drift.interval": "monitoring.drift.interval must be longer than 0s: evaluations would run without pause",
}
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Labels of 63 characters at most, as DNS and KServe's host names (IsFullyQualifiedDomainName) have them.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
# KServe's validateInferenceServiceName wants a leading letter (IsvcNameFmt); the InferenceService keeps our name.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# KServe appends up to "-rev-<n>-predictor" (and Knative "-predictor-00001") to the name; Kubernetes caps a
# Service or Knative revision name at 63 characters, which leaves 45 for revisions up to 999.
MAX_NAME_LENGTH = 45
# The delay KServe's request batcher gets when the spec asks for batches and leaves the delay out; KServe's own
# default (maxLatency 0 means 5000 ms) would hold a lone request for five seconds.
KSERVE_BATCHER_DELAY_MS = 10
RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-zA-Z0-9]([-._a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$"
GPU_TAINT_KEY = "nvidia.com/gpu"
# A label key (an optional DNS-subdomain prefix and "/", then a name of at most 63 characters) and value, as the API
# server checks a pod's nodeSelector (apimachinery's IsQualifiedName, IsValidLabelValue): another one made a pod
# the API server refused, and the revision never became ready.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-._A-Za-z0-9]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
NODE_SELECTOR_KEYS = (
    "gpu.nodeSelector keys must be label keys: an optional DNS prefix and '/', then a name of at most 63 "
    "characters (letters, digits, '-', '_', '.'), starting and ending with a letter or digit"
)
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
MAX_STEPS = 20
MAX_RESOURCES = 16
MAX_TOLERATIONS = 16
MAX_NODE_SELECTOR = 16

JsonDict = dict[str, JsonValue]
# A Kubernetes quantity, never below zero: the string form is checked by the pattern the API server's schema
# applies, the integer form by its minimum (which a string ignores).
Quantity = Annotated[
    Annotated[int, Field(ge=0)]
    | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY_LENGTH)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "minimum": 0, "maxLength": MAX_QUANTITY_LENGTH}),
]
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
# Gateway API's Hostname (HTTPRoute spec.hostnames): a DNS name, or a wildcard label before one; the labels of 63
# characters at most (the route's own pattern takes longer ones, which no DNS name has).
HOSTNAME_PATTERN = r"^(\*\.)?" + DNS_SUBDOMAIN_PATTERN.removeprefix("^")
Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME_PATTERN, min_length=1, max_length=253)]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `fieldPath` points kubectl's error at the offending field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class SpecModel(BaseModel):
    """Base for every spec object: camelCase on the wire, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        strict=True,
    )


class ModelSource(SpecModel):
    """Which model artifact to serve and how clients talk to it."""

    name: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Model name in inference URLs (`/v1/models/<name>:predict`); the key in TorchServe's model snapshot.",
    )
    version: str = Field(
        min_length=1,
        max_length=63,
        description="Version label of this model build. A change of version or storageUri starts a new revision.",
    )
    storage_uri: str = Field(
        min_length=1,
        pattern=r"^(s3|gs|pvc|https?|hf|oci|file|azure)://.+$",
        description="Where the packaged model lies (`config/config.properties` and `model-store/*.mar`).",
    )
    format: Literal["pytorch"] = Field(
        default="pytorch", description="KServe model format. Default: pytorch (TorchServe)."
    )
    protocol: Literal["v1", "v2"] = Field(
        default="v1",
        description="Inference protocol: v1 (KServe `instances`/`predictions`) or v2 (Open Inference Protocol). Default: v1.",
    )
    runtime: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the (Cluster)ServingRuntime. Default: KServe picks one that supports the format; "
        f"`{ESTEIRA_RUNTIME}` selects Esteira's TorchServe 0.12 runtime, `{ESTEIRA_KSERVE_RUNTIME}` Esteira's handler "
        "on KServe's Python model server; both batch inside the server as `batching` says.",
    )
    runtime_version: str | None = Field(default=None, description="Runtime image tag override.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_WORKERS,
        description="Esteira's runtimes only: model processes in each pod, each with the model loaded "
        f"(`{ESTEIRA_RUNTIME}`: TorchServe's workers for each model version, written over the archive's "
        f"`minWorkers`/`maxWorkers`; `{ESTEIRA_KSERVE_RUNTIME}`: server processes sharing the port). Each gets its "
        f"share of the pod's CPUs for torch. Default: the archive's workers (`{ESTEIRA_RUNTIME}`), the runtime's "
        f"setting (`{ESTEIRA_KSERVE_RUNTIME}`, chart value `kserveRuntime.workers`) but 1 where `gpu.count` > 0, "
        "so a runtime-wide `auto` (one per CPU) never loads a copy of the model per CPU into GPU memory.",
    )
    card: ModelCard | None = Field(
        default=None,
        description="Where this build came from and what it was validated on (`esteira package` writes it into "
        "the archive and prints it for here). Kept per revision in status.history.",
    )


class ValidationBaseline(SpecModel):
    """Another version's score on the very rows this build was validated on. Two builds' own cards may score
    different rows (each its own held-out share); a baseline measured on the same rows compares like with like."""

    version: str = Field(
        min_length=1, max_length=63, description="The version scored: the stable one this build would replace."
    )
    score: float = Field(allow_inf_nan=False)  # NaN compares with nothing, and JSON carries neither


class Validation(SpecModel):
    """The score a build got on held-out data, which a retrained candidate must match."""

    metric: str = Field(min_length=1, max_length=63, description="e.g. accuracy, f1, mae.")
    score: float = Field(allow_inf_nan=False)
    better: Literal["higher", "lower"] = Field(default="higher", description="Default: higher (accuracy-like).")
    baseline: ValidationBaseline | None = Field(
        default=None,
        description="The stable version's score on these same rows, same metric. When it names the version serving "
        "as stable, the retraining gate compares with it instead of the stable card's own score.",
    )


class TrainingData(SpecModel):
    fingerprint: str = Field(min_length=1, max_length=128, description="A hash of the training data.")
    size: int = Field(ge=0, description="Rows (or images) trained on.")


class ModelCard(SpecModel):
    """A build's lineage: version, parent, data, validation, who built it and how."""

    parent_version: str | None = Field(default=None, max_length=63, description="The version it was trained from.")
    training_data: TrainingData | None = None
    validation: Validation | None = None
    built_by: str | None = Field(default=None, max_length=1024, description="The command that built it.")
    owner: str | None = Field(default=None, max_length=253)
    retraining_run: int | None = Field(
        default=None,
        ge=1,
        description="The retraining run that built it (`esteira package` reads ESTEIRA_RETRAIN_RUN): that run, not "
        "the newest open one, learns what became of the build.",
    )


# CEL for the readings of esteira.api.quantity, on a resource name `k`.
_NATIVE_CEL = "(!k.contains('/') || k.contains('kubernetes.io/'))"
_OVERCOMMIT_CEL = f"({_NATIVE_CEL} && !k.startsWith('hugepages-'))"
_EXTENDED_CEL = f"(!{_NATIVE_CEL} && !k.startsWith('requests.'))"
RESOURCE_NAMES = (
    "keys without a domain must be cpu, memory, ephemeral-storage or hugepages-<page size> (a device's resource "
    f"carries its domain, of {MAX_EXTENDED_DOMAIN} characters at most, such as nvidia.com/gpu), and no key may be a "
    "quota's (requests.*)"
)
WHOLE_UNITS = (
    "a device's resource (a name with a domain, such as nvidia.com/gpu) counts whole units: write a whole number "
    "such as 1"
)
REQUEST_OVER_LIMIT = (
    "resources.requests must not exceed resources.limits for the same resource: the API server refuses such a pod"
)
NOT_OVERCOMMITTED = (
    "a device's resource (such as nvidia.com/gpu) and hugepages cannot be overcommitted: a request needs a limit "
    "of the same amount; set the limit alone (the request defaults to it), or gpu.count for GPUs"
)


def _resource_names_rule(field: str) -> JsonDict:
    """CEL for a resource map's keys and values: structural schemas cannot constrain map keys any other way.
    The API server checks the same when KServe makes the predictor's Deployment or revision: a pod it refuses
    is never made, and the revision never becomes ready."""
    return {
        "x-kubernetes-validations": [
            cel(
                f"self.all(k, size(k) <= 253 && k.matches('{RESOURCE_NAME_PATTERN}'))",
                f"resources.{field} keys must be resource names (at most 253 characters) such as cpu, memory or "
                "example.com/device",
            ),
            cel(
                "self.all(k, k.contains('/') ? (k.contains('kubernetes.io/') || (!k.startsWith('requests.') && "
                f"k.indexOf('/') <= {MAX_EXTENDED_DOMAIN})) : "
                "(k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-')))",
                f"resources.{field} {RESOURCE_NAMES}",
            ),
            cel(
                f"self.all(k, !{_EXTENDED_CEL} || string(self[k]).matches('{WHOLE_NUMBER_PATTERN}'))",
                f"resources.{field}: {WHOLE_UNITS}",
            ),
        ]
    }


class ResourceRequirements(SpecModel):
    """Container resources per model server replica (Kubernetes quantities)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.requests) || self.requests.all(k, !{_OVERCOMMIT_CEL} || !has(self.limits) || "
                    "!(k in self.limits) || "
                    "!quantity(string(self.requests[k])).isGreaterThan(quantity(string(self.limits[k]))))",
                    REQUEST_OVER_LIMIT,
                    ".requests",
                ),
                cel(
                    f"!has(self.requests) || self.requests.all(k, {_OVERCOMMIT_CEL} || (has(self.limits) && "
                    "k in self.limits && "
                    "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) == 0))",
                    NOT_OVERCOMMITTED,
                    ".requests",
                ),
            ]
        }
    )

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=MAX_RESOURCES,
        json_schema_extra=_resource_names_rule("requests"),
        description="Resource requests, e.g. cpu: '1'. A cpu or memory request without a limit gets a limit of "
        "the same amount: KServe merges these into the serving runtime's resources key by key (1 CPU and 2Gi in "
        "Esteira's runtimes), and the runtime's limit was below a larger request.",
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=dict,
        max_length=MAX_RESOURCES,
        json_schema_extra=_resource_names_rule("limits"),
        description="Resource limits, e.g. memory: 4Gi. A cpu or memory limit without a request gets a request of "
        "the same amount, as Kubernetes gives a pod.",
    )

    @field_validator("requests", "limits")
    @classmethod
    def _container_resources(cls, values: dict[str, Quantity]) -> dict[str, Quantity]:
        problems = [problem for name in values if (problem := container_resource_name_problem(name))]
        problems += [
            f"{name}: {WHOLE_UNITS}"
            for name, value in values.items()
            if is_extended(name) and not is_whole_number(value)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        problems = []
        for name, value in self.requests.items():
            limit = self.limits.get(name)
            if overcommit_allowed(name):
                if limit is not None and parse_quantity(value) > parse_quantity(limit):
                    problems.append(f"{name}: the request {value} exceeds the limit {limit}; {REQUEST_OVER_LIMIT}")
            elif limit is None or parse_quantity(value) != parse_quantity(limit):
                problems.append(f"{name}: the request {value}, the limit {limit or 'not set'}; {NOT_OVERCOMMITTED}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


TOLERATION_WITHOUT_KEY = "a toleration without a key must use operator Exists (it then tolerates every taint)"
TOLERATION_SECONDS_EFFECT = "tolerationSeconds is for effect NoExecute only"


class Toleration(SpecModel):
    """A Kubernetes toleration (same fields as in a Pod spec)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "a toleration with operator Exists must not set value",
                    ".value",
                ),
                # The API server refuses a pod with either (core/v1 validateTolerations): the predictor's pods
                # were never made, and the revision never became ready.
                cel(
                    "(has(self.key) && self.key != '') || self.operator == 'Exists'",
                    TOLERATION_WITHOUT_KEY,
                    ".key",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    TOLERATION_SECONDS_EFFECT,
                    ".tolerationSeconds",
                ),
            ]
        }
    )

    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists must not set value")
        if not self.key and self.operator != "Exists":
            raise ValueError(TOLERATION_WITHOUT_KEY)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(TOLERATION_SECONDS_EFFECT)
        return self


class GPU(SpecModel):
    """Accelerator placement. `count: 0` keeps the model on CPU."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.count > 0 || !has(self.product)",
                    "gpu.product needs gpu.count > 0",
                    ".product",
                ),
            ]
        }
    )

    count: int = Field(default=0, ge=0, le=16, description="GPUs (or MIG slices) per replica. Default: 0.")
    resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
        description="Extended resource to request: nvidia.com/gpu, or a MIG profile such as "
        "nvidia.com/mig-1g.5gb (mixed strategy). Default: nvidia.com/gpu.",
    )
    product: str | None = Field(
        default=None,
        pattern=LABEL_VALUE_PATTERN,
        max_length=63,
        description="GPU product; becomes node selector nvidia.com/gpu.product (e.g. NVIDIA-A100-SXM4-40GB).",
    )
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_NODE_SELECTOR,
        description="Extra node selector labels.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))", NODE_SELECTOR_KEYS)
            ]
        },
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=MAX_TOLERATIONS,
        description="Tolerations. Default when count > 0: tolerate the nvidia.com/gpu taint (operator Exists).",
    )

    @model_validator(mode="after")
    def _product_needs_gpu(self) -> GPU:
        if self.product and self.count == 0:
            raise ValueError("gpu.product needs gpu.count > 0")
        return self

    @property
    def is_mig(self) -> bool:
        return self.resource_name.startswith("nvidia.com/mig-")


ScaleMetric = Literal["concurrency", "rps", "cpu", "memory", "gpu-utilization"]
UTILIZATION_METRICS = ("cpu", "memory", "gpu-utilization")
DEFAULT_TARGETS: dict[str, int] = {
    "concurrency": 10,
    "rps": 100,
    "cpu": 80,
    "memory": 80,
    "gpu-utilization": 70,
}


class Autoscaling(SpecModel):
    """Replica bounds and the signal to scale on."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                    ".minReplicas",
                ),
                cel(
                    "!has(self.metric) || !has(self.target) || "
                    "!(self.metric in ['cpu', 'memory', 'gpu-utilization']) || self.target <= 100",
                    "autoscaling.target is a utilization percentage (1-100) for cpu, memory and gpu-utilization",
                    ".target",
                ),
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Minimum replicas; 0 scales to zero. Default: 1.")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Maximum replicas. Default: 1.")
    metric: ScaleMetric | None = Field(
        default=None,
        description="Scaling signal: concurrency or rps (Knative), cpu or memory (HPA), gpu-utilization "
        "(KEDA on DCGM metrics from Prometheus). Default: concurrency in Knative mode, cpu in Standard mode.",
    )
    target: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="Target per replica: in-flight requests, requests/s, or utilization percent. "
        "Default: 10 for concurrency, 100 for rps, 80 for cpu and memory, 70 for gpu-utilization.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.metric in UTILIZATION_METRICS and self.target is not None and self.target > 100:
            raise ValueError(
                "autoscaling.target is a utilization percentage (1-100) for cpu, memory and gpu-utilization"
            )
        return self

    def effective_metric(self, deployment_mode: str) -> ScaleMetric:
        if self.metric is not None:
            return self.metric
        return "concurrency" if deployment_mode == "Knative" else "cpu"

    def effective_target(self, deployment_mode: str) -> int:
        if self.target is not None:
            return self.target
        return DEFAULT_TARGETS[self.effective_metric(deployment_mode)]


class Batching(SpecModel):
    """Server-side dynamic batching; a field left out keeps what the archive was packaged with."""

    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Largest batch; 1 disables batching. Default: the archive's own batchSize (`esteira package "
        "--batch-size`) on Esteira's runtimes; other runtimes get KServe's request batcher only when this is "
        "above 1.",
    )
    max_batch_delay_ms: int | None = Field(
        default=None,
        ge=0,
        le=10000,
        description="How long a request waits for others to fill a batch (ms). Runtimes other than Esteira's: "
        "KServe's request batcher's delay. esteira-torchserve: how long a request that TorchServe has room for "
        "waits for others to join it, trading that wait for TorchServe's CPU (left out: not at all). "
        "esteira-kserve never waits (a batch is what queued while the previous one ran). Default: "
        f"{KSERVE_BATCHER_DELAY_MS} for KServe's request batcher, none on Esteira's runtimes.",
    )


DRAIN_WITHIN_GRACE = (
    f"termination.drainSeconds must be below termination.gracePeriodSeconds ({DEFAULT_GRACE_PERIOD_SECONDS} when "
    "left out): the drain runs inside the grace period, and the server needs the rest to stop"
)


class Termination(SpecModel):
    """How a Standard mode model server pod stops: it keeps serving while its endpoints go, then the server stops
    (answering what it holds, posting its queued inference records) within the grace period."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.drainSeconds < (has(self.gracePeriodSeconds) ? self.gracePeriodSeconds : "
                    f"{DEFAULT_GRACE_PERIOD_SECONDS})",
                    DRAIN_WITHIN_GRACE,
                )
            ]
        }
    )

    drain_seconds: int = Field(
        default=DEFAULT_DRAIN_SECONDS,
        ge=0,
        le=600,
        description="Seconds a stopping pod keeps serving before its server is signalled (a preStop sleep), while "
        "the Service's endpoints and the gateway stop sending to it; as long as your gateway or load balancer "
        f"takes to drop an endpoint. 0: none. Default: {DEFAULT_DRAIN_SECONDS}.",
    )
    grace_period_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="The pod's terminationGracePeriodSeconds: the drain, then the server's own stop. Default: "
        f"Kubernetes' {DEFAULT_GRACE_PERIOD_SECONDS}.",
    )

    @model_validator(mode="after")
    def _drain_within_grace(self) -> Termination:
        if self.drain_seconds >= (self.grace_period_seconds or DEFAULT_GRACE_PERIOD_SECONDS):
            raise ValueError(DRAIN_WITHIN_GRACE)
        return self


class ErrorRateCheck(SpecModel):
    """Canary error rate: an absolute ceiling and a ceiling relative to stable."""

    max: float = Field(default=0.01, ge=0, le=1, description="Highest canary error ratio (0-1). Default: 0.01.")
    max_increase: float | None = Field(
        default=None, ge=0, le=1, description="Highest canary-minus-stable error ratio. Default: unchecked."
    )


class LatencyCheck(SpecModel):
    """Canary p95 latency: each request's time in the model server, arrival to answer (queueing included)."""

    p95_max_seconds: float = Field(default=1.0, gt=0, description="Highest canary p95 (seconds). Default: 1.")
    max_increase_ratio: float | None = Field(
        default=None, gt=0, description="Highest canary p95 / stable p95. Default: unchecked."
    )


class PredictionShiftCheck(SpecModel):
    """Distance between canary and stable predicted-class distributions."""

    method: Literal["PSI", "JensenShannon"] = Field(default="JensenShannon", description="Distance measure.")
    max: float = Field(default=0.1, ge=0, description="Highest allowed distance. Default: 0.1.")


class DataDriftCheck(SpecModel):
    """Input drift of the canary's traffic against the model's reference profile, judged per feature as
    `monitoring.drift` says (its defaults when it is absent) over the analysis interval."""

    max: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Highest allowed share of drifted input features (0-1). Default: 0.2.",
    )


class CustomCheck(SpecModel):
    """A PromQL query; `{{namespace}}`, `{{name}}`, `{{revision}}` and `{{interval}}` are filled in."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.min) || has(self.max)", "a custom check needs min or max", ".query")
            ]
        }
    )

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    query: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> CustomCheck:
        if self.min is None and self.max is None:
            raise ValueError("a custom check needs min or max")
        return self


class AccuracyCheck(SpecModel):
    """The canary's quality against stable's on labelled predictions (ground truth sent to the collector)."""

    metric: Literal["accuracy", "mae"] = Field(
        default="accuracy", description="accuracy (classifiers) or mae (regression). Default: accuracy."
    )
    tolerance: float = Field(
        default=0.02,
        ge=0,
        description="How much worse than stable the canary may be: accuracy lower by, or MAE higher by. Default: 0.02.",
    )
    min_labels: int = Field(
        default=100, ge=30, le=1000000, description="Labelled predictions each arm needs before it is judged."
    )
    significance: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="A worse canary fails only when a difference this large is this unlikely by chance. Default: 0.05.",
    )
    label_delay: str = Field(
        default="0s",
        pattern=DURATION_PATTERN,
        description="How long labels take to arrive: each step waits this long before judging, and labels "
        "are counted over interval + labelDelay. Default: 0s.",
    )


class Analysis(SpecModel):
    """Evidence required at every canary step."""

    min_requests: int = Field(
        default=50,
        ge=0,
        description="Requests the canary must serve in an interval before it is judged. Default: 50.",
    )
    low_traffic_deadline: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description="How long a step may wait for minRequests before lowTrafficAction applies. Default: 10m.",
    )
    low_traffic_action: Literal["Pause", "Fail"] = Field(
        default="Pause",
        description="What to do when the deadline passes without enough traffic. Default: Pause.",
    )
    error_rate: ErrorRateCheck = Field(default_factory=ErrorRateCheck)
    latency: LatencyCheck | None = None
    prediction_shift: PredictionShiftCheck | None = None
    data_drift: DataDriftCheck | None = None
    accuracy: AccuracyCheck | None = None
    custom: list[CustomCheck] = Field(default_factory=list, max_length=16)

    def compares_with_stable(self) -> bool:
        """Whether a check judges the canary against the stable revision's traffic (none runs at 100%)."""
        relative = (
            self.error_rate.max_increase,
            self.latency and self.latency.max_increase_ratio,
            self.prediction_shift,
            self.accuracy,
        )
        return any(check is not None for check in relative)


class GatewayRef(SpecModel):
    """The Gateway that the GatewayAPI router attaches its HTTPRoute to, and the hosts the route answers for."""

    name: str = Field(default="kserve-ingress-gateway", pattern=DNS_LABEL_PATTERN, max_length=63)
    namespace: str = Field(default="kserve", pattern=DNS_LABEL_PATTERN, max_length=63)
    hostnames: list[Hostname] = Field(
        default_factory=list,
        max_length=16,
        description="Hosts the HTTPRoute answers for, as clients call them (a DNS name, or `*.` before one); the "
        "first that is no wildcard is status.url. Default: `<name>-<namespace>.<ingress domain>`, as KServe names "
        f"an InferenceService's host (the operator's `--ingress-domain`, default {DEFAULT_INGRESS_DOMAIN}). A route "
        "without hosts would answer for every host on the Gateway, the requests of another ModelDeployment's route "
        "on it among them.",
    )


class Rollout(SpecModel):
    """How a new revision reaches traffic."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.all(w, w > 0 && w <= 100)",
                    "rollout.steps are traffic percentages between 1 and 100",
                    ".steps",
                ),
                cel(
                    "size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100",
                    "rollout.steps must end at 100",
                    ".steps",
                ),
                cel(
                    "self.steps.isSorted() && self.steps.all(w, self.steps.exists_one(v, v == w))",
                    "rollout.steps must be strictly increasing",
                    ".steps",
                ),
                cel(
                    "self.pauseBefore.all(w, w in self.steps)",
                    "rollout.pauseBefore may only name weights listed in rollout.steps",
                    ".pauseBefore",
                ),
                cel(
                    "size(self.steps) != 1 || (has(self.strategy) && self.strategy == 'Immediate') "
                    "|| (has(self.mirror) && self.mirror && has(self.router) && self.router == 'GatewayAPI') "
                    "|| !has(self.analysis) || (!has(self.analysis.predictionShift) && !has(self.analysis.accuracy) "
                    "&& !(has(self.analysis.errorRate) && has(self.analysis.errorRate.maxIncrease)) "
                    "&& !(has(self.analysis.latency) && has(self.analysis.latency.maxIncreaseRatio)))",
                    NOTHING_TO_COMPARE,
                    ".steps",
                ),
                cel(
                    f"!has(self.progressDeadline) || !self.progressDeadline.matches('{ZERO_DURATION_PATTERN}')",
                    ZERO_PROGRESS_DEADLINE,
                    ".progressDeadline",
                ),
                cel(
                    f"!has(self.interval) || !self.interval.matches('{ZERO_DURATION_PATTERN}')",
                    ZERO_WINDOWS["rollout.interval"],
                    ".interval",
                ),
            ]
        }
    )

    strategy: Literal["Canary", "Immediate"] = Field(
        default="Canary",
        description="Canary: shift traffic step by step on passing analysis. Immediate: replace at once. "
        "Default: Canary.",
    )
    steps: list[int] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        max_length=MAX_STEPS,
        description="Canary traffic percentages, strictly increasing, ending at 100. Default: [10, 25, 50, 100].",
    )
    interval: str = Field(default="1m", pattern=DURATION_PATTERN, description="Time between analyses. Default: 1m.")
    threshold: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Failing analyses at one step that roll the canary back (an analysis without enough data "
        "between them neither passes nor resets the count). Default: 2.",
    )
    progress_deadline: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        max_length=32,
        description="How long the canary may stay not ready (from its creation or from when it stops being "
        "ready), or the router not sending it the weight asked for, before it is rolled back; longer than 0s. "
        "Default: 10m.",
    )
    pause_before: list[int] = Field(
        default_factory=list, max_length=MAX_STEPS, description="Steps (weights) that wait for a manual promote."
    )
    router: Literal["KServe", "GatewayAPI"] = Field(
        default="KServe",
        description="KServe: the InferenceService's own traffic split. GatewayAPI: one InferenceService per "
        "revision behind an HTTPRoute. Default: KServe.",
    )
    gateway: GatewayRef = Field(default_factory=GatewayRef, description="Gateway for router GatewayAPI.")
    mirror: bool = Field(
        default=False,
        description="Router GatewayAPI (and esteira up): once ready, the canary first gets a copy of every request "
        "stable answers (its answers ignored) and no traffic of its own, until an analysis of those copies passes; "
        "the copies stop as it takes its first step, so no request reaches it twice. KServe's split cannot copy "
        "requests: with router KServe the canary takes its first step without them (Warning event "
        "MirrorUnsupported). Default: false.",
    )
    analysis: Analysis = Field(default_factory=Analysis)

    @model_validator(mode="after")
    def _steps(self) -> Rollout:
        if any(w <= 0 or w > 100 for w in self.steps):
            raise ValueError("rollout.steps are traffic percentages between 1 and 100")
        if self.steps and self.steps[-1] != 100:
            raise ValueError("rollout.steps must end at 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("rollout.steps must be strictly increasing")
        if any(w not in self.steps for w in self.pause_before):
            raise ValueError("rollout.pauseBefore may only name weights listed in rollout.steps")
        copies = self.mirror and self.router == "GatewayAPI"  # judged against stable on the same requests
        if self.steps == [100] and self.strategy == "Canary" and not copies and self.analysis.compares_with_stable():
            raise ValueError(NOTHING_TO_COMPARE)
        if re.fullmatch(ZERO_DURATION_PATTERN, self.progress_deadline):
            raise ValueError(ZERO_PROGRESS_DEADLINE)
        if re.fullmatch(ZERO_DURATION_PATTERN, self.interval):
            raise ValueError(ZERO_WINDOWS["rollout.interval"])
        return self


class SecretRef(SpecModel):
    """A Secret in the ModelDeployment's own namespace."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)


class PrometheusAuth(SpecModel):
    """Credentials for Prometheus, from a Secret the operator reads at each analysis.

    Keys: `token` (bearer), `username` and `password` (basic auth), `ca.crt` (TLS CA, PEM). The Secret must
    carry the label `serving.esteira.io/prometheus-auth: "true"`, so only a person who may label Secrets can
    let the operator send one to a Prometheus URL.
    """

    secret_ref: SecretRef


DriftMethod = Literal["Auto", "PSI", "JensenShannon", "Wasserstein"]
DriftAction = Literal["Alert", "BlockRollouts", "Retrain"]


class DriftFeatureOverride(SpecModel):
    """A different method or threshold for one input feature."""

    name: str = Field(min_length=1, max_length=200)
    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, gt=0)


class DriftMonitoring(SpecModel):
    """Input drift of the stable revision's traffic against the model's reference profile, and what to do.

    Each feature drifts when its distance passes the threshold and a chi-square test on the binned counts
    says the difference is not chance; the deployment drifts when the share of drifted features reaches
    datasetShare. Too few instances in the window give NoData, never an alarm.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.features.all(f, self.features.exists_one(g, g.name == f.name))",
                    "monitoring.drift.features: each feature may be named once",
                    ".features",
                ),
                *(
                    cel(
                        f"!has(self.{field}) || !self.{field}.matches('{ZERO_DURATION_PATTERN}')",
                        ZERO_WINDOWS[f"monitoring.drift.{field}"],
                        f".{field}",
                    )
                    for field in ("window", "interval")
                ),
            ]
        }
    )

    window: str = Field(default="1h", pattern=DURATION_PATTERN, description="Traffic judged each time. Default: 1h.")
    interval: str = Field(default="1m", pattern=DURATION_PATTERN, description="Time between evaluations. Default: 1m.")
    method: DriftMethod = Field(
        default="Auto",
        description="Distance per feature: Auto (normed Wasserstein for numeric, Jensen-Shannon for categorical "
        "features), PSI, JensenShannon or Wasserstein. Default: Auto.",
    )
    threshold: float | None = Field(
        default=None, gt=0, description="Distance above which a feature may drift. Default: 0.1 for every method."
    )
    features: list[DriftFeatureOverride] = Field(
        default_factory=list, max_length=64, description="Per-feature method or threshold."
    )
    min_sample: int = Field(
        default=100, ge=1, le=10_000_000, description="Instances a window needs before it is judged. Default: 100."
    )
    dataset_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of drifted features at which the deployment drifts. Default: 0.5.",
    )
    actions: list[DriftAction] = Field(
        default_factory=lambda: list[DriftAction](["Alert"]),
        max_length=3,
        description="Alert: condition DataDrifted, a Warning event naming the top features, metrics. "
        "BlockRollouts: a canary does not advance while inputs drift (failing its checks, it is still rolled back). Retrain: the incident, with its evidence, "
        "triggers spec.retraining (as retraining.triggers.drift does). Default: [Alert].",
    )
    clear_after: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Evaluations in a row without drift before an incident ends: a score wavering about its "
        "threshold is one incident (one alert, one retraining, one hold), not one per interval. Default: 3.",
    )

    @model_validator(mode="after")
    def _supported(self) -> DriftMonitoring:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("monitoring.drift.features: each feature may be named once")
        for field, value in (("window", self.window), ("interval", self.interval)):
            if re.fullmatch(ZERO_DURATION_PATTERN, value):
                raise ValueError(ZERO_WINDOWS[f"monitoring.drift.{field}"])
        return self


class Monitoring(SpecModel):
    """Where metrics come from and whether the model server is scraped."""

    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://.+$",
        description="Prometheus base URL for analysis and KEDA. Default: the operator's --prometheus-url.",
    )
    prometheus_auth: PrometheusAuth | None = Field(
        default=None,
        description="Credentials for Prometheus from a labelled Secret. Never put credentials in prometheusUrl: "
        "they would be stored in the spec in clear.",
    )
    scrape: bool = Field(default=True, description="Annotate pods for Prometheus scraping. Default: true.")
    drift: DriftMonitoring | None = Field(
        default=None, description="Watch the stable revision's inputs for drift from the reference profile."
    )


class Logging(SpecModel):
    """Inference logging: what each revision was asked and answered, as CloudEvents in KServe's format.

    `logger: Esteira` (the default) logs from Esteira's handlers: sampled by request id, redacted before the
    record leaves the pod, never blocking inference; records go to Esteira's collector unless `url` names
    another CloudEvents endpoint. `logger: KServe` configures KServe's own logger (every request, no redaction).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.mode == 'none' || self.logger != 'KServe' || has(self.url)",
                    "logging.url is required when logging.logger is KServe",
                    ".url",
                ),
                cel(
                    "self.logger != 'KServe' || ((!has(self.sampleRate) || self.sampleRate == 1.0) && "
                    "(!has(self.redact) || size(self.redact) == 0))",
                    "KServe's logger neither samples nor redacts: use logger Esteira, or sampleRate 1 and no redact",
                    ".logger",
                ),
            ]
        }
    )

    mode: Literal["none", "all", "request", "response"] = Field(
        default="none", description="Which payloads to log. Default: none."
    )
    logger: Literal["Esteira", "KServe"] = Field(
        default="Esteira",
        description="Who logs: Esteira's handlers (sampling, redaction, Esteira's collector by default) or "
        "KServe's logger (every request, to url). Default: Esteira.",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://.+$",
        description="Where records are posted (a CloudEvents endpoint). Default for logger Esteira: Esteira's "
        "collector (the operator's ESTEIRA_COLLECTOR_URL, set by the chart's collector.enabled).",
    )
    sample_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of requests logged, chosen by request id so every revision logs the same requests. "
        "Default: 1.",
    )
    redact: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=64,
        description="Field names whose values are replaced before a record leaves the model server, at any depth "
        "(also a v2 input tensor of that name).",
    )
    token_secret: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
        description="Secret in this namespace whose key `token` authenticates the model server to the collector.",
    )

    @model_validator(mode="after")
    def _kserve_logger(self) -> Logging:
        if self.logger == "KServe" and self.mode != "none" and not self.url:
            raise ValueError("logging.url is required when logging.logger is KServe")
        if self.logger == "KServe" and (self.sample_rate != 1.0 or self.redact):
            raise ValueError(
                "KServe's logger neither samples nor redacts: use logger Esteira, or sampleRate 1 and no redact"
            )
        return self


@dataclass(frozen=True)
class SpecRule:
    """A rule across spec sections, written twice on purpose: CEL for the API server, Python for the operator.

    `rule` sees the defaulted spec as `self`; `field` is the path (under `spec`) the error points at.
    """

    rule: str
    message: str
    field: str
    broken: Callable[[ModelDeploymentSpec], bool]

    def entry(self) -> JsonDict:
        return cel(self.rule, self.message, self.field)


def _metric(spec: ModelDeploymentSpec) -> str | None:
    return spec.autoscaling.metric


SPEC_RULES: tuple[SpecRule, ...] = (
    SpecRule(
        "self.deploymentMode != 'Standard' || self.autoscaling.minReplicas > 0",
        "Standard mode keeps at least one replica (the HPA raises 0 to 1): use deploymentMode Knative with "
        "metric concurrency or rps to scale to zero",
        ".autoscaling.minReplicas",
        lambda s: s.deployment_mode == "Standard" and s.autoscaling.min_replicas == 0,
    ),
    SpecRule(
        "self.deploymentMode != 'Standard' || !has(self.autoscaling.metric) || "
        "!(self.autoscaling.metric in ['concurrency', 'rps'])",
        "concurrency and rps scaling need Knative: use deploymentMode Knative, or scale on cpu, memory or "
        "gpu-utilization in Standard mode",
        ".autoscaling.metric",
        lambda s: s.deployment_mode == "Standard" and _metric(s) in ("concurrency", "rps"),
    ),
    SpecRule(
        "self.deploymentMode != 'Knative' || !has(self.autoscaling.metric) || "
        "self.autoscaling.metric != 'gpu-utilization'",
        "gpu-utilization needs KEDA, which KServe offers in Standard mode only: use deploymentMode Standard, or "
        "scale on concurrency or rps in Knative mode",
        ".autoscaling.metric",
        lambda s: s.deployment_mode == "Knative" and _metric(s) == "gpu-utilization",
    ),
    SpecRule(
        "self.deploymentMode != 'Knative' || !has(self.autoscaling.metric) || "
        "!(self.autoscaling.metric in ['cpu', 'memory']) || self.autoscaling.minReplicas > 0",
        "Knative's HPA class (used for cpu and memory) cannot scale to zero: set minReplicas >= 1, or scale on "
        "concurrency or rps",
        ".autoscaling.minReplicas",
        lambda s: (
            s.deployment_mode == "Knative" and _metric(s) in ("cpu", "memory") and s.autoscaling.min_replicas == 0
        ),
    ),
    SpecRule(
        "!has(self.autoscaling.metric) || self.autoscaling.metric != 'gpu-utilization' || self.gpu.count > 0",
        "gpu-utilization needs gpu.count > 0 (no GPU to measure)",
        ".autoscaling.metric",
        lambda s: _metric(s) == "gpu-utilization" and s.gpu.count == 0,
    ),
    SpecRule(
        "!has(self.batching.maxBatchSize) || self.batching.maxBatchSize == 1 || "
        "!has(self.batching.maxBatchDelayMs) || self.batching.maxBatchDelayMs > 0 || "
        f"(has(self.model.runtime) && self.model.runtime in {list(ESTEIRA_RUNTIMES)})",
        "KServe's request batcher replaces a maxLatency of 0 with its 5000 ms default: set "
        f"batching.maxBatchDelayMs to at least 1, or use runtime {' or '.join(ESTEIRA_RUNTIMES)}, which batch "
        "in the model server",
        ".batching.maxBatchDelayMs",
        lambda s: (
            (s.batching.max_batch_size or 1) > 1
            and s.batching.max_batch_delay_ms == 0
            and not is_esteira_runtime(s.model.runtime)
        ),
    ),
    SpecRule(
        "self.deploymentMode != 'Knative' || !has(self.termination)",
        "termination is for Standard mode: Knative drains a pod through its queue-proxy and sets its grace period "
        "from the revision's timeout; remove spec.termination",
        ".termination",
        lambda s: s.deployment_mode == "Knative" and s.termination is not None,
    ),
    SpecRule(
        "!has(self.monitoring.drift) || !self.monitoring.drift.actions.exists(a, a == 'Retrain') || "
        "has(self.retraining)",
        "monitoring.drift.actions: Retrain hands the incident to spec.retraining: set spec.retraining (what runs "
        "it), or use Alert and BlockRollouts",
        ".monitoring.drift.actions",
        lambda s: s.monitoring.drift is not None and "Retrain" in s.monitoring.drift.actions and s.retraining is None,
    ),
    SpecRule(
        f"!has(self.model.workers) || (has(self.model.runtime) && self.model.runtime in {list(ESTEIRA_RUNTIMES)})",
        "model.workers sets how many model processes Esteira's runtimes run: set model.runtime to "
        f"{' or '.join(ESTEIRA_RUNTIMES)}, or remove model.workers",
        ".model.workers",
        lambda s: s.model.workers is not None and not is_esteira_runtime(s.model.runtime),
    ),
    SpecRule(
        "self.deploymentMode != 'Standard' || has(self.autoscaling.metric) || !has(self.autoscaling.target) || "
        "self.autoscaling.target <= 100",
        "autoscaling.target is a utilization percentage (1-100): Standard mode scales on cpu when "
        "autoscaling.metric is left out",
        ".autoscaling.target",
        lambda s: s.deployment_mode == "Standard" and _metric(s) is None and (s.autoscaling.target or 0) > 100,
    ),
    SpecRule(
        "self.deploymentMode != 'Knative' || !has(self.autoscaling.metric) || self.autoscaling.metric != 'memory'",
        "memory scaling in Knative mode reads the target as MiB a pod, not a percentage (Knative's HPA class): use "
        "deploymentMode Standard for memory, or scale on concurrency, rps or cpu",
        ".autoscaling.metric",
        lambda s: s.deployment_mode == "Knative" and _metric(s) == "memory",
    ),
    SpecRule(
        "self.deploymentMode != 'Knative' || !has(self.rollout.router) || self.rollout.router != 'GatewayAPI'",
        "rollout.router GatewayAPI is for Standard mode: in Knative mode a predictor's Service points at Knative's "
        "own ingress, which an HTTPRoute cannot weigh; use router KServe, or deploymentMode Standard",
        ".rollout.router",
        lambda s: s.deployment_mode == "Knative" and s.rollout.router == "GatewayAPI",
    ),
    SpecRule(
        "!has(self.logging) || !has(self.logging.logger) || self.logging.logger != 'KServe' || "
        "((!has(self.rollout.analysis) || !has(self.rollout.analysis.accuracy)) && (!has(self.retraining) || "
        "!has(self.retraining.triggers) || !has(self.retraining.triggers.accuracyBelow)))",
        "rollout.analysis.accuracy and retraining.triggers.accuracyBelow judge each revision on its own labelled "
        "answers, and KServe's logger does not say which revision answered: use logging.logger Esteira",
        ".logging.logger",
        lambda s: (
            s.logging.logger == "KServe"
            and (
                s.rollout.analysis.accuracy is not None
                or (s.retraining is not None and s.retraining.triggers.accuracy_below is not None)
            )
        ),
    ),
)


def _spec_rules_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("x-kubernetes-validations", []).extend(rule.entry() for rule in SPEC_RULES)


class RetrainingTriggers(SpecModel):
    """What starts a retraining run; each incident starts at most one."""

    drift: bool = Field(default=False, description="A DataDrifted incident (monitoring.drift).")
    data_quality: bool = Field(
        default=False,
        description="A data-quality incident: one kind of violation on one feature in 5% or more of a "
        "monitoring.drift evaluation's window (one a stable revision).",
    )
    accuracy_below: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Stable's labelled accuracy over accuracyWindow below this, on 100 labelled predictions or "
        "more (one incident a stable revision).",
    )
    accuracy_window: str = Field(default="1h", pattern=DURATION_PATTERN, description="Default: 1h.")
    schedule: str | None = Field(default=None, pattern=DURATION_PATTERN, description="Retrain at least this often.")


class Retraining(SpecModel):
    """Closing the loop: what triggers retraining, what runs it, and what a candidate must beat."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.job) || has(self.webhook) || (has(self.command) && size(self.command) > 0)",
                    "retraining needs a job template, a webhook or a command to run",
                ),
                cel(
                    "self.triggers.drift || self.triggers.dataQuality || has(self.triggers.accuracyBelow) || "
                    "has(self.triggers.schedule)",
                    "retraining needs at least one trigger",
                    ".triggers",
                ),
            ]
        }
    )

    triggers: RetrainingTriggers = Field(default_factory=RetrainingTriggers)
    job: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="A batch/v1 JobSpec the operator runs for each trigger, with the trigger's evidence in "
        "ESTEIRA_RETRAIN_EVIDENCE (JSON).",
    )
    webhook: str | None = Field(
        default=None, pattern=r"^https?://.+$", description="A CloudEvent with the trigger's evidence is POSTed here."
    )
    command: list[str] | None = Field(
        default=None, max_length=64, description="`esteira up` only: the command to run, evidence in its environment."
    )
    min_interval: str = Field(
        default="6h", pattern=DURATION_PATTERN, description="Least time between two triggers. Default: 6h."
    )
    candidate_margin: float = Field(
        default=0.0,
        ge=0,
        description="How much worse than stable's validation score a new build's card may be and still roll out.",
    )

    @model_validator(mode="after")
    def _runnable(self) -> Retraining:
        if self.job is None and self.webhook is None and not self.command:
            raise ValueError("retraining needs a job template, a webhook or a command to run")
        t = self.triggers
        if not (t.drift or t.data_quality or t.accuracy_below is not None or t.schedule is not None):
            raise ValueError("retraining needs at least one trigger")
        return self


class ModelDeploymentSpec(SpecModel):
    """What an ops engineer declares: the model, where and how it runs, and how new versions roll out."""

    model_config = ConfigDict(json_schema_extra=_spec_rules_schema)

    model: ModelSource
    deployment_mode: Literal["Standard", "Knative"] = Field(
        default="Standard",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "deploymentMode cannot change after creation (KServe forbids it): create a new "
                    "ModelDeployment instead",
                )
            ]
        },
        description="KServe deployment mode: Standard (Deployment + HPA/KEDA) or Knative (serverless, scale to "
        "zero). Immutable. Default: Standard.",
    )
    service_account_name: str | None = Field(
        default=None, pattern=DNS_LABEL_PATTERN, description="Service account for the model server pods."
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    gpu: GPU = Field(default_factory=GPU)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    batching: Batching = Field(default_factory=Batching)
    rollout: Rollout = Field(default_factory=Rollout)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    logging: Logging = Field(default_factory=Logging)
    retraining: Retraining | None = None
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REQUEST_TIMEOUT_SECONDS,
        description="Seconds a request may take from the gateway to its answer: KServe's predictor timeout (the "
        "Knative revision's, in Knative mode) and, with rollout.gateway, the HTTPRoute's request timeout. The "
        "gateway's Envoy tells the model server how long it waits, and esteira-kserve refuses at once (503) a "
        "request it could not answer in time instead of running it for nobody. At most "
        f"{MAX_REQUEST_TIMEOUT_SECONDS} (Knative's default max-revision-timeout-seconds). Default: the gateway's "
        "and KServe's own.",
    )
    termination: Termination | None = Field(
        default=None,
        description="Standard mode: how a model server pod stops (drain, grace period). Default: a "
        f"{DEFAULT_DRAIN_SECONDS} s drain within Kubernetes' {DEFAULT_GRACE_PERIOD_SECONDS} s grace period.",
    )

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> ModelDeploymentSpec:
        """Validate a raw `spec` dict; raises `InvalidSpec` naming each offending field."""
        try:
            parsed = cls.model_validate(spec)
        except ValidationError as exc:
            # Report every mistake at once: the spec's own rules still run on what is left once the
            # fields already reported are dropped (their defaults stand in), when that much parses.
            problems = list(InvalidSpec.from_validation_error(exc).problems)
            try:
                rest = cls.model_validate(_without(spec, [error["loc"] for error in exc.errors()]))
            except ValidationError:
                raise InvalidSpec(problems) from None
            reported = {p.path for p in problems}
            problems += [p for p in _rule_problems(rest) if p.path not in reported]
            raise InvalidSpec(problems) from None
        problems = _rule_problems(parsed)
        if problems:
            raise InvalidSpec(problems)
        return parsed


def _rule_problems(spec: ModelDeploymentSpec) -> list[FieldProblem]:
    return [FieldProblem(f"spec{rule.field}", rule.message) for rule in SPEC_RULES if rule.broken(spec)]


def _without(document: dict[str, Any], paths: list[tuple[int | str, ...]]) -> dict[str, Any]:
    """A copy of `document` with the value at each path removed (a list item or a mapping key)."""
    result = copy.deepcopy(document)
    for path in paths:
        if not path:
            continue
        parent: Any = result
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
            parent[path[-1]] = None
    return result


def check_name(name: object) -> None:
    """The ModelDeployment's own name: it names the InferenceService, so KServe's rules apply to it."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not re.match(NAME_PATTERN, name):
        raise InvalidSpec.single(
            "metadata.name",
            f"must start with a letter, contain only lowercase letters, digits and '-', end with a letter or digit "
            f"and be at most {MAX_NAME_LENGTH} characters (it names the InferenceService; KServe adds suffixes), "
            f"got {name!r}",
        )
