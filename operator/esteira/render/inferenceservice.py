"""ModelDeployment -> KServe InferenceService (serving.kserve.io/v1beta1), for Knative and Standard modes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from esteira.api.errors import InvalidSpec
from esteira.api.spec import KSERVE_BATCHER_DELAY_MS, ModelDeploymentSpec
from esteira.render.autoscaling import autoscaling_fields
from esteira.render.names import KNATIVE_REVISION_SUFFIX, check_derived_names, predictor_service_name
from esteira.render.placement import container_resources, node_selector, tolerations
from esteira.render.traffic import Arm, TrafficPlan
from esteira.vocabulary import (
    ANNOTATION_MODEL_VERSION,
    COLLECTOR_RECORDS_PATH,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_INGRESS_DOMAIN,
    ENV_BATCH_SIZE,
    ENV_DEPLOYMENT,
    ENV_LOG_MODE,
    ENV_LOG_REDACT,
    ENV_LOG_SAMPLE_RATE,
    ENV_LOG_TOKEN,
    ENV_LOG_URL,
    ENV_MAX_BATCH_DELAY_MS,
    ENV_MODEL_NAME,
    ENV_MODEL_VERSION,
    ENV_NAMESPACE,
    ENV_REVISION,
    ENV_WORKERS,
    ESTEIRA_KSERVE_RUNTIME,
    ISVC_API_VERSION,
    KSERVE_DEPLOYMENT_MODE,
    KSERVE_PROMETHEUS_SCRAPING,
    KSERVE_TAG_ROUTING,
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    MODEL_CONTAINER,
    is_esteira_runtime,
)


@dataclass(frozen=True)
class RenderContext:
    """Where the object goes and the operator-wide defaults the spec may leave out."""

    name: str
    namespace: str
    prometheus_url: str | None = None
    owner: str | None = None  # the ModelDeployment, when the object is named otherwise (one per revision)
    collector_url: str | None = None  # Esteira's collector, where the handlers' records go by default
    ingress_domain: str = DEFAULT_INGRESS_DOMAIN  # the domain of a host Esteira names (the GatewayAPI router's)

    @property
    def deployment(self) -> str:
        return self.owner or self.name

    def prometheus_for(self, spec: ModelDeploymentSpec) -> str | None:
        return spec.monitoring.prometheus_url or self.prometheus_url


def common_labels(name: str, spec: ModelDeploymentSpec) -> dict[str, str]:
    """Recommended app.kubernetes.io labels plus the owner label Esteira selects on."""
    return {
        "app.kubernetes.io/name": spec.model.name,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "esteira",
        "app.kubernetes.io/managed-by": "esteira",
        LABEL_DEPLOYMENT: name,
    }


def logging_env(ctx: RenderContext, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """What Esteira's handlers need to log (logger Esteira): mode, sink, sampling, redaction, credentials."""
    logging = spec.logging
    if logging.mode == "none" or logging.logger != "Esteira":
        return []
    url = logging.url or (ctx.collector_url.rstrip("/") + COLLECTOR_RECORDS_PATH if ctx.collector_url else None)
    if url is None:
        raise InvalidSpec.single(
            "spec.logging.url",
            "no sink for inference records: set logging.url, or install Esteira's collector (chart value "
            "collector.enabled; `esteira render --collector-url` renders as that operator would)",
        )
    env: list[dict[str, Any]] = [
        {"name": ENV_NAMESPACE, "value": ctx.namespace},
        {"name": ENV_LOG_MODE, "value": logging.mode},
        {"name": ENV_LOG_URL, "value": url},
        {"name": ENV_LOG_SAMPLE_RATE, "value": repr(logging.sample_rate)},
        {"name": ENV_LOG_REDACT, "value": json.dumps(logging.redact)},
    ]
    if logging.token_secret:
        env.append(
            {"name": ENV_LOG_TOKEN, "valueFrom": {"secretKeyRef": {"name": logging.token_secret, "key": "token"}}}
        )
    return env


def server_env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """What the spec tells Esteira's runtimes beyond the model: batching, which they do inside the server, and the
    model's processes (``model.workers``). TorchServe's entrypoint writes both into its model snapshot at start-up,
    esteira-kserve's batcher and supervisor read them. Only as far as the spec sets them, so whatever it leaves out
    stays as the archive was packaged; but esteira-kserve runs one process for a GPU model that does not say,
    whatever the runtime-wide default (``auto``, one per CPU, would load a copy per CPU into GPU memory)."""
    workers = spec.model.workers
    if workers is None and spec.gpu.count > 0 and spec.model.runtime == ESTEIRA_KSERVE_RUNTIME:
        workers = 1
    wanted = (
        (ENV_BATCH_SIZE, spec.batching.max_batch_size),
        (ENV_MAX_BATCH_DELAY_MS, spec.batching.max_batch_delay_ms),
        (ENV_WORKERS, workers),
    )
    return [{"name": name, "value": str(value)} for name, value in wanted if value is not None]


def server_variables(spec: ModelDeploymentSpec) -> dict[str, str]:
    """:func:`server_env` as a mapping, as ``esteira up`` hands it to the servers it runs."""
    return {str(entry["name"]): str(entry["value"]) for entry in server_env(spec)}


def _model(ctx: RenderContext, spec: ModelDeploymentSpec, arm: Arm, *, named: bool) -> dict[str, Any]:
    """The predictor's model container for one arm, tagged so metrics can be told apart per revision.

    `named`: KServe's CRD requires the container name inside `spec.canary[].predictor.model`, while its
    webhook refuses one on the stable predictor (validatePredictor: "the 'name' field is not allowed in
    standard predictor").
    """
    source = spec.model
    env = [
        {"name": ENV_DEPLOYMENT, "value": ctx.deployment},
        {"name": ENV_MODEL_NAME, "value": source.name},
        {"name": ENV_REVISION, "value": str(arm.revision)},
        {"name": ENV_MODEL_VERSION, "value": arm.model_version},
    ]
    env += logging_env(ctx, spec)
    if is_esteira_runtime(source.runtime):
        env += server_env(spec)
    model: dict[str, Any] = {
        "modelFormat": {"name": source.format},
        "protocolVersion": source.protocol,
        "storageUri": arm.storage_uri,
        "env": env,
    }
    if named:
        model = {"name": MODEL_CONTAINER, **model}
    if source.runtime:
        model["runtime"] = source.runtime
    if source.runtime_version:
        model["runtimeVersion"] = source.runtime_version
    resources = container_resources(spec.resources, spec.gpu)
    if resources:
        model["resources"] = resources
    drain = spec.termination.drain_seconds if spec.termination else DEFAULT_DRAIN_SECONDS
    if spec.deployment_mode == "Standard" and drain:
        # The kubelet signals a pod as its endpoints are removed, and the Service and gateway go on sending to it
        # for a moment: without the wait, those requests met a closed port (and their records a stopped worker).
        model["lifecycle"] = {"preStop": {"sleep": {"seconds": drain}}}
    return model


def _predictor(ctx: RenderContext, spec: ModelDeploymentSpec, arm: Arm, *, canary: bool = False) -> dict[str, Any]:
    """Pod-level predictor fields shared by every arm (placement, logging, batching, timeout, revision tags)."""
    predictor: dict[str, Any] = {
        "model": _model(ctx, spec, arm, named=canary),
        "labels": {LABEL_DEPLOYMENT: ctx.deployment, LABEL_REVISION: str(arm.revision)},
        "annotations": {ANNOTATION_MODEL_VERSION: arm.model_version},
    }
    if selector := node_selector(spec.gpu):
        predictor["nodeSelector"] = selector
    if tolerated := tolerations(spec.gpu):
        predictor["tolerations"] = tolerated
    if spec.service_account_name:
        predictor["serviceAccountName"] = spec.service_account_name
    if spec.timeout_seconds is not None:
        predictor["timeout"] = spec.timeout_seconds
    if spec.termination is not None and spec.termination.grace_period_seconds is not None:
        predictor["terminationGracePeriodSeconds"] = spec.termination.grace_period_seconds
    if spec.logging.mode != "none" and spec.logging.logger == "KServe":
        predictor["logger"] = {"mode": spec.logging.mode, "url": spec.logging.url}
    batching = spec.batching
    if (
        batching.max_batch_size is not None
        and batching.max_batch_size > 1
        and not is_esteira_runtime(spec.model.runtime)
    ):
        # Other runtimes get KServe's request batcher, which merges instances into one request;
        # Esteira's runtimes batch inside the model server instead (see _model).
        delay = batching.max_batch_delay_ms
        predictor["batcher"] = {
            "maxBatchSize": batching.max_batch_size,
            "maxLatency": KSERVE_BATCHER_DELAY_MS if delay is None else delay,
        }
    return predictor


def render_inference_service(
    ctx: RenderContext, spec: ModelDeploymentSpec, plan: TrafficPlan, *, pin_previous: bool = False
) -> dict[str, Any]:
    """The InferenceService that serves `plan`; raises InvalidSpec for what the mode cannot honour.

    `pin_previous` (Knative): all traffic stays on the last rolled-out revision (`canaryTrafficPercent: 0`).
    """
    scaling = autoscaling_fields(spec, ctx.namespace, ctx.name, ctx.prometheus_for(spec))
    annotations = {KSERVE_DEPLOYMENT_MODE: spec.deployment_mode, **scaling.annotations}
    if spec.monitoring.scrape:
        annotations[KSERVE_PROMETHEUS_SCRAPING] = "true"

    derived = [predictor_service_name(ctx.name)]
    if spec.deployment_mode == "Knative":
        derived.append(predictor_service_name(ctx.name) + KNATIVE_REVISION_SUFFIX)
    elif plan.canary is not None:
        derived.append(predictor_service_name(ctx.name, plan.canary.predictor_name))
    check_derived_names(derived)
    if spec.deployment_mode == "Knative":
        # Knative splits traffic between the latest revision and the last one rolled out, so the
        # predictor carries the canary while one exists; canaryTrafficPercent 0 pins traffic to stable.
        serving = plan.canary or plan.stable
        predictor = {**_predictor(ctx, spec, serving), **scaling.predictor}
        isvc_spec: dict[str, Any] = {"predictor": predictor}
        if plan.canary is not None:
            predictor["canaryTrafficPercent"] = plan.canary_weight
            annotations[KSERVE_TAG_ROUTING] = "true"
        elif pin_previous:
            predictor["canaryTrafficPercent"] = 0
    else:
        # The stable predictor stays unnamed, so KServe keeps its objects at `<isvc>-predictor` and a
        # promotion never renames it (validatePredictorNameChange refuses a rename without a new storageUri,
        # which a version-only change does not bring).
        predictor = {**_predictor(ctx, spec, plan.stable), **scaling.predictor}
        isvc_spec = {"predictor": predictor}
        if plan.canary is not None:
            # A canary predictor may not carry maxReplicas or scaling settings (validateCanarySpecs).
            canary = {
                **_predictor(ctx, spec, plan.canary, canary=True),
                "name": plan.canary.predictor_name,
                "minReplicas": max(spec.autoscaling.min_replicas, 1),
            }
            isvc_spec["canary"] = [{"trafficPercent": plan.canary_weight, "predictor": canary}]

    return {
        "apiVersion": ISVC_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": ctx.name,
            "namespace": ctx.namespace,
            "labels": common_labels(ctx.deployment, spec),
            "annotations": annotations,
        },
        "spec": isvc_spec,
    }
