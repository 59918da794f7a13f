"""InferenceService rendering: mode rules, GPU placement, autoscaling, batching, canaries.

Every rendered object in the matrix is also validated against the KServe v0.20.0 CRD.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from esteira.api.errors import InvalidSpec
from esteira.api.quantity import parse_quantity
from esteira.api.spec import ModelDeploymentSpec
from esteira.render import Arm, RenderContext, TrafficPlan, render_inference_service
from tests.support.prerequisites import REPO_ROOT
from tests.support.schemas import validate_custom_resource
from tests.support.specs import model, spec

CTX = RenderContext(name="iris", namespace="models", prometheus_url="http://prometheus.monitoring:9090")
STABLE = Arm(3, "1.0.0", "s3://models/iris/1.0.0")
CANARY = Arm(4, "1.1.0", "s3://models/iris/1.1.0")


def render(body: dict[str, Any], plan: TrafficPlan | None = None, ctx: RenderContext = CTX) -> dict[str, Any]:
    return render_inference_service(ctx, ModelDeploymentSpec.parse(body), plan or TrafficPlan(STABLE))


def reject(body: dict[str, Any], ctx: RenderContext = CTX) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as caught:
        render(body, ctx=ctx)
    return {p.path: p.reason for p in caught.value.problems}


def env_of(model_block: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in model_block["env"]}


def test_standard_defaults() -> None:
    isvc = render(spec())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] == "cpu"
    assert predictor["scaleMetricType"] == "Utilization"
    assert predictor["scaleTarget"] == 80
    assert predictor["model"]["storageUri"] == STABLE.storage_uri
    assert predictor["model"]["modelFormat"] == {"name": "pytorch"}
    assert "tolerations" not in predictor
    assert "canary" not in isvc["spec"]


def test_revision_is_visible_to_metrics_and_owners() -> None:
    isvc = render(spec())
    predictor = isvc["spec"]["predictor"]
    assert predictor["labels"]["serving.esteira.io/revision"] == "3"
    assert env_of(predictor["model"])["ESTEIRA_REVISION"] == "3"
    assert env_of(predictor["model"])["ESTEIRA_MODEL_VERSION"] == "1.0.0"
    labels = isvc["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "esteira"
    assert labels["app.kubernetes.io/instance"] == "iris"
    assert labels["serving.esteira.io/deployment"] == "iris"


def test_gpu_placement_with_product_and_default_toleration() -> None:
    predictor = render(spec(gpu={"count": 2, "product": "Tesla-T4", "nodeSelector": {"pool": "a"}}))["spec"][
        "predictor"
    ]
    resources = predictor["model"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 2
    assert resources["requests"]["nvidia.com/gpu"] == 2
    assert predictor["nodeSelector"] == {"pool": "a", "nvidia.com/gpu.product": "Tesla-T4"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_mig_profile_and_explicit_tolerations_replace_the_default() -> None:
    predictor = render(
        spec(
            gpu={
                "count": 1,
                "resourceName": "nvidia.com/mig-1g.5gb",
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            }
        )
    )["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"] == {"nvidia.com/mig-1g.5gb": 1}
    assert predictor["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ]


def test_gpu_utilization_uses_keda_with_dcgm_query() -> None:
    isvc = render(spec(gpu={"count": 1}, autoscaling={"metric": "gpu-utilization", "target": 60, "maxReplicas": 3}))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    predictor = isvc["spec"]["predictor"]
    assert "scaleMetric" not in predictor
    external = predictor["autoScaling"]["metrics"][0]["external"]
    assert external["metric"]["backend"] == "prometheus"
    assert external["metric"]["serverAddress"] == CTX.prometheus_url
    # Summed over the pods: KEDA's AverageValue has the HPA want ceil(query / 60) replicas (8 pods at 100 % want
    # 14, capped at maxReplicas); an average, at most 100, wanted two at most.
    assert (
        external["metric"]["query"]
        == 'sum(avg by (pod) (DCGM_FI_DEV_GPU_UTIL{namespace="models",pod=~"iris-predictor-.*"}))'
    )
    assert external["target"] == {"type": "Value", "value": "60"}


def test_gpu_utilization_on_mig_reads_engine_activity() -> None:
    isvc = render(
        spec(
            gpu={"count": 1, "resourceName": "nvidia.com/mig-2g.10gb"},
            autoscaling={"metric": "gpu-utilization", "maxReplicas": 2},
        )
    )
    query = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    assert query.startswith("sum(avg by (pod) (DCGM_FI_PROF_GR_ENGINE_ACTIVE{") and query.endswith("* 100")


def test_knative_concurrency_and_scale_to_zero() -> None:
    isvc = render(spec(deploymentMode="Knative", autoscaling={"minReplicas": 0, "maxReplicas": 4, "target": 8}))
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert predictor["minReplicas"] == 0
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["scaleTarget"] == 8
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]


def test_knative_cpu_uses_the_hpa_class() -> None:
    isvc = render(spec(deploymentMode="Knative", autoscaling={"metric": "cpu", "maxReplicas": 2}))
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        (spec(autoscaling={"metric": "concurrency"}), "spec.autoscaling.metric", "use deploymentMode Knative"),
        (spec(autoscaling={"metric": "rps"}), "spec.autoscaling.metric", "need Knative"),
        (spec(autoscaling={"minReplicas": 0}), "spec.autoscaling.minReplicas", "use deploymentMode Knative"),
        (
            spec(deploymentMode="Knative", gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"}),
            "spec.autoscaling.metric",
            "use deploymentMode Standard",
        ),
        (
            spec(deploymentMode="Knative", autoscaling={"metric": "memory", "minReplicas": 0}),
            "spec.autoscaling.minReplicas",
            "cannot scale to zero",
        ),
        (spec(autoscaling={"metric": "gpu-utilization"}), "spec.autoscaling.metric", "needs gpu.count > 0"),
    ],
)
def test_combinations_a_mode_cannot_honour(body: dict[str, Any], path: str, fragment: str) -> None:
    found = reject(body)
    assert path in found, found
    assert fragment in found[path]


def test_gpu_utilization_without_prometheus_is_rejected() -> None:
    body = spec(gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"})
    found = reject(body, ctx=RenderContext("iris", "models"))
    assert "spec.monitoring.prometheusUrl" in found
    with_url = {**body, "monitoring": {"prometheusUrl": "http://p:9090"}}
    assert render(with_url, ctx=RenderContext("iris", "models"))["spec"]["predictor"]["autoScaling"]


@pytest.mark.parametrize("runtime", ["esteira-torchserve", "esteira-kserve"])
def test_batching_goes_to_the_server_on_esteira_runtimes_and_to_kserve_batcher_elsewhere(runtime: str) -> None:
    batching = {"maxBatchSize": 16, "maxBatchDelayMs": 7}
    esteira = render(spec(model=model(runtime=runtime), batching=batching))["spec"]["predictor"]
    assert env_of(esteira["model"])["ESTEIRA_BATCH_SIZE"] == "16"
    assert env_of(esteira["model"])["ESTEIRA_MAX_BATCH_DELAY_MS"] == "7"
    assert "batcher" not in esteira
    stock = render(spec(batching=batching))["spec"]["predictor"]
    assert stock["batcher"] == {"maxBatchSize": 16, "maxLatency": 7}
    assert "ESTEIRA_BATCH_SIZE" not in env_of(stock["model"])


@pytest.mark.parametrize("runtime", ["esteira-torchserve", "esteira-kserve"])
def test_batching_left_out_keeps_the_archives_on_esteira_runtimes(runtime: str) -> None:
    """No batching block: no variable, so the server keeps what `esteira package --batch-size` wrote."""
    for batching, expected in (
        ({}, {}),
        ({"maxBatchSize": 4}, {"ESTEIRA_BATCH_SIZE": "4"}),
        ({"maxBatchDelayMs": 3}, {"ESTEIRA_MAX_BATCH_DELAY_MS": "3"}),
    ):
        predictor = render(spec(model=model(runtime=runtime), batching=batching))["spec"]["predictor"]
        env = env_of(predictor["model"])
        assert {k: v for k, v in env.items() if "BATCH" in k} == expected, batching
        assert "batcher" not in predictor


@pytest.mark.parametrize(
    ("runtime", "workers", "gpu", "expected"),
    [
        ("esteira-kserve", 3, 0, "3"),
        ("esteira-kserve", 2, 1, "2"),  # asked for: several processes sharing a GPU
        ("esteira-kserve", None, 1, "1"),  # a runtime-wide `auto` must not load a copy per CPU into GPU memory
        ("esteira-kserve", None, 0, None),  # the runtime's own setting
        ("esteira-torchserve", 2, 1, "2"),  # written over the archive's workers at start-up
        ("esteira-torchserve", None, 1, None),  # the archive's workers: packaged for this model
    ],
)
def test_esteira_runtimes_model_processes(runtime: str, workers: int | None, gpu: int, expected: str | None) -> None:
    source = model(runtime=runtime) if workers is None else model(runtime=runtime, workers=workers)
    isvc = render(spec(model=source, gpu={"count": gpu}), TrafficPlan(STABLE, CANARY, 10))
    validate_custom_resource(isvc)
    for predictor in (isvc["spec"]["predictor"], isvc["spec"]["canary"][0]["predictor"]):
        assert env_of(predictor["model"]).get("ESTEIRA_WORKERS") == expected


def test_kserves_batcher_only_when_the_spec_asks_for_batches() -> None:
    for batching in ({}, {"maxBatchSize": 1}, {"maxBatchDelayMs": 5}):
        assert "batcher" not in render(spec(batching=batching))["spec"]["predictor"], batching
    predictor = render(spec(batching={"maxBatchSize": 8}))["spec"]["predictor"]
    assert predictor["batcher"] == {"maxBatchSize": 8, "maxLatency": 10}  # not KServe's 5000 ms for 0


def test_knative_canary_puts_the_canary_on_the_predictor() -> None:
    isvc = render(spec(deploymentMode="Knative"), TrafficPlan(STABLE, CANARY, 25))
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert predictor["model"]["storageUri"] == CANARY.storage_uri
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"


def test_standard_canary_names_only_the_canary_predictor() -> None:
    isvc = render(spec(autoscaling={"maxReplicas": 5}), TrafficPlan(STABLE, CANARY, 10))
    stable = isvc["spec"]["predictor"]
    # KServe refuses a named stable model container, and names the stable predictor's objects
    # `<isvc>-predictor` only while the predictor itself is unnamed.
    assert "name" not in stable
    assert "name" not in stable["model"]
    assert stable["model"]["storageUri"] == STABLE.storage_uri
    (canary,) = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["name"] == "rev-4"
    assert canary["predictor"]["model"]["name"] == "kserve-container"  # the v0.20 CRD requires it there
    assert canary["predictor"]["model"]["storageUri"] == CANARY.storage_uri
    forbidden = {"maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec"}
    assert not forbidden & set(canary["predictor"])


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_standard_pods_keep_serving_while_their_endpoints_go(mode: str) -> None:
    """Standard mode: every model container waits before its SIGTERM; Knative drains through its queue-proxy and
    refuses a container lifecycle."""
    isvc = render(spec(deploymentMode=mode), TrafficPlan(STABLE, CANARY, 10))
    predictors = [isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"].get("canary", []))]
    hooks = [p["model"].get("lifecycle") for p in predictors]
    if mode == "Standard":
        assert len(hooks) == 2 and all(hook == {"preStop": {"sleep": {"seconds": 5}}} for hook in hooks)
    else:
        assert hooks == [None]


def test_a_request_timeout_is_every_arm_s_predictor_timeout_and_is_bounded_as_knative_bounds_it() -> None:
    isvc = render(spec(timeoutSeconds=45), TrafficPlan(STABLE, CANARY, 10))
    predictors = [isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"]["canary"])]
    assert [p["timeout"] for p in predictors] == [45, 45]
    validate_custom_resource(isvc)
    for wrong in (0, 601):
        with pytest.raises(InvalidSpec, match="timeoutSeconds"):
            ModelDeploymentSpec.parse(spec(timeoutSeconds=wrong))


@pytest.mark.parametrize(
    ("termination", "hook", "grace"),
    [
        ({"drainSeconds": 20, "gracePeriodSeconds": 60}, {"preStop": {"sleep": {"seconds": 20}}}, 60),
        ({"drainSeconds": 0}, None, None),
        ({"gracePeriodSeconds": 120}, {"preStop": {"sleep": {"seconds": 5}}}, 120),
    ],
)
def test_the_drain_and_grace_period_are_the_specs(termination: dict, hook: dict | None, grace: int | None) -> None:
    """A gateway that takes longer to drop an endpoint gets a longer drain, and the pod the grace period for it,
    on every arm."""
    isvc = render(spec(termination=termination), TrafficPlan(STABLE, CANARY, 10))
    predictors = [isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"]["canary"])]
    assert [p["model"].get("lifecycle") for p in predictors] == [hook, hook]
    assert [p.get("terminationGracePeriodSeconds") for p in predictors] == [grace, grace]


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_stable_predictor_is_never_named(mode: str) -> None:
    for plan in (TrafficPlan(STABLE), TrafficPlan(STABLE, CANARY, 50), TrafficPlan(CANARY)):
        predictor = render(spec(deploymentMode=mode), plan)["spec"]["predictor"]
        assert "name" not in predictor
        assert "name" not in predictor["model"]


def test_gpu_utilization_query_selects_kserve_predictor_pods() -> None:
    body = spec(gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"}, monitoring={"prometheusUrl": "http://p"})
    isvc = render(body, TrafficPlan(STABLE, CANARY, 10))
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    # KServe names the stable predictor's Deployment `<isvc>-predictor`; its pods carry that prefix.
    assert 'pod=~"iris-predictor-.*"' in metric["external"]["metric"]["query"]


@pytest.mark.parametrize(
    ("name", "mode", "plan", "fits"),
    [
        ("a" * 45, "Standard", TrafficPlan(Arm(999, "1", "s3://m/1")), True),
        ("a" * 45, "Standard", TrafficPlan(STABLE, Arm(999, "2", "s3://m/2"), 10), True),
        ("a" * 45, "Standard", TrafficPlan(STABLE, Arm(1000, "2", "s3://m/2"), 10), False),
        ("a" * 47, "Knative", TrafficPlan(STABLE), True),
        ("a" * 48, "Knative", TrafficPlan(STABLE), False),
    ],
)
def test_names_kserve_derives_must_fit(name: str, mode: str, plan: TrafficPlan, fits: bool) -> None:
    ctx = RenderContext(name, "models")
    if fits:
        render(spec(deploymentMode=mode), plan, ctx=ctx)
    else:
        assert "over 63 characters" in reject_with(spec(deploymentMode=mode), plan, ctx)["metadata.name"]


def reject_with(body: dict[str, Any], plan: TrafficPlan, ctx: RenderContext) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as caught:
        render(body, plan, ctx=ctx)
    return {p.path: p.reason for p in caught.value.problems}


@pytest.mark.parametrize("runtime", ["esteira-torchserve", "esteira-kserve"])
def test_zero_batch_delay_is_refused_where_kserves_batcher_would_wait_five_seconds(runtime: str) -> None:
    found = reject(spec(batching={"maxBatchSize": 8, "maxBatchDelayMs": 0}))
    assert "5000 ms" in found["spec.batching.maxBatchDelayMs"]
    on_esteira = render(spec(model=model(runtime=runtime), batching={"maxBatchSize": 8, "maxBatchDelayMs": 0}))
    assert env_of(on_esteira["spec"]["predictor"]["model"])["ESTEIRA_MAX_BATCH_DELAY_MS"] == "0"


def test_logging_and_protocol() -> None:
    logging = {"mode": "response", "url": "http://log/events", "logger": "KServe"}
    isvc = render(spec(model=model(protocol="v2"), logging=logging))
    predictor = isvc["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "response", "url": "http://log/events"}
    assert predictor["model"]["protocolVersion"] == "v2"
    assert "ESTEIRA_LOG_URL" not in env_of(predictor["model"])


def test_esteira_logging_goes_to_the_handlers_as_env() -> None:
    logging = {"mode": "all", "sampleRate": 0.25, "redact": ["ssn", "email"], "tokenSecret": "collector-token"}
    ctx = RenderContext("iris", "models", collector_url="http://collector.esteira-system:8090/")
    isvc = render(spec(logging=logging), ctx=ctx)
    predictor = isvc["spec"]["predictor"]
    assert "logger" not in predictor  # KServe's logger stays off: the handlers log
    env = env_of(predictor["model"])
    assert env["ESTEIRA_LOG_URL"] == "http://collector.esteira-system:8090/v1/records"
    assert env["ESTEIRA_LOG_MODE"] == "all"
    assert env["ESTEIRA_LOG_SAMPLE_RATE"] == "0.25"
    assert json.loads(env["ESTEIRA_LOG_REDACT"]) == ["ssn", "email"]
    assert env["ESTEIRA_NAMESPACE"] == "models"
    token = next(e for e in predictor["model"]["env"] if e["name"] == "ESTEIRA_LOG_TOKEN")
    assert token["valueFrom"] == {"secretKeyRef": {"name": "collector-token", "key": "token"}}


def test_esteira_logging_without_a_sink_is_refused() -> None:
    assert "spec.logging.url" in reject(spec(logging={"mode": "all"}))


def test_traffic_plan_rejects_impossible_weights() -> None:
    with pytest.raises(ValueError, match="outside 0-100"):
        TrafficPlan(STABLE, CANARY, 101)
    with pytest.raises(ValueError, match="needs a canary"):
        TrafficPlan(STABLE, None, 10)


GPU_VARIANTS = [
    {},
    {"gpu": {"count": 1, "product": "NVIDIA-L4"}},
    {
        "gpu": {
            "count": 1,
            "resourceName": "nvidia.com/mig-1g.5gb",
            "nodeSelector": {"nvidia.com/mig.strategy": "mixed"},
        }
    },
]
SCALING_VARIANTS = {
    "Standard": [
        {"autoscaling": {"metric": "cpu", "minReplicas": 1, "maxReplicas": 3}},
        {"autoscaling": {"metric": "memory", "target": 70, "maxReplicas": 2}},
        {"autoscaling": {"metric": "gpu-utilization", "maxReplicas": 4}, "gpu": {"count": 1}},
    ],
    "Knative": [
        {"autoscaling": {"metric": "concurrency", "minReplicas": 0, "maxReplicas": 3}},
        {"autoscaling": {"metric": "rps", "target": 50, "maxReplicas": 3}},
        {"autoscaling": {"metric": "cpu", "maxReplicas": 2}},
    ],
}
PLANS = [TrafficPlan(STABLE), TrafficPlan(STABLE, CANARY, 0), TrafficPlan(STABLE, CANARY, 50)]
EXTRAS = [
    {},
    {
        "batching": {"maxBatchSize": 8},
        "logging": {"mode": "all", "url": "http://logger/x", "logger": "KServe"},
        "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}},
        "serviceAccountName": "models",
        "timeoutSeconds": 60,
    },
]


def _matrix() -> list[tuple[str, dict[str, Any], TrafficPlan]]:
    cases = []
    for mode, scalings in SCALING_VARIANTS.items():
        for gpu, scaling, plan, extra in itertools.product(GPU_VARIANTS, scalings, PLANS, EXTRAS):
            body = spec(deploymentMode=mode, **gpu, **extra)
            if mode == "Standard" and extra:
                body["termination"] = {"drainSeconds": 15, "gracePeriodSeconds": 45}
            body.update(scaling)
            if "gpu" in scaling and "gpu" in gpu:
                body["gpu"] = gpu["gpu"]
            cases.append((mode, body, plan))
    return cases


@pytest.mark.parametrize(("mode", "body", "plan"), _matrix())
def test_matrix_validates_against_kserve_crd(mode: str, body: dict[str, Any], plan: TrafficPlan) -> None:
    isvc = render(body, plan)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    validate_custom_resource(isvc)


def test_cpu_and_memory_come_in_pairs() -> None:
    """KServe merges the predictor's resources key by key into the serving runtime's (1 CPU, 2Gi): a request
    of 4 CPUs alone met the runtime's limit of 1, and the API server refused the pod."""
    resources = render(spec(resources={"requests": {"cpu": "4"}, "limits": {"memory": "4Gi"}}))["spec"]["predictor"][
        "model"
    ]["resources"]
    assert resources == {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "4Gi"}}


RUNTIME_RESOURCES = [
    yaml.safe_load((REPO_ROOT / "charts/esteira/values.yaml").read_text())[runtime]["resources"]
    for runtime in ("servingRuntime", "kserveRuntime")
]


def _api_server_refusals(resources: dict[str, dict[str, Any]]) -> list[str]:
    """core/v1 validation ValidateResourceRequirements on a container's requests and limits: a request above its
    limit, and for resources that cannot be overcommitted (helper.IsOvercommitAllowed: devices, hugepages) a
    request without an equal limit."""
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    refusals = []
    for name, value in requests.items():
        native = "/" not in name or "kubernetes.io/" in name
        if name in limits:
            if not (native and not name.startswith("hugepages-")):
                if parse_quantity(value) != parse_quantity(limits[name]):
                    refusals.append(f"requests[{name}]: must be equal to {name} limit of {limits[name]}")
            elif parse_quantity(value) > parse_quantity(limits[name]):
                refusals.append(f"requests[{name}]: must be less than or equal to {name} limit of {limits[name]}")
        elif not native or name.startswith("hugepages-"):
            refusals.append(f"limits[{name}]: Limit must be set for non overcommitable resources")
    return refusals


PAIR_NAMES = st.sampled_from(["cpu", "memory", "ephemeral-storage", "example.com/fpga"])
PAIR_QUANTITIES = st.sampled_from([1, 4, "500m", "1.5", "1Gi", "512Mi", "8Gi"])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(PAIR_NAMES, PAIR_QUANTITIES, max_size=3),
    st.dictionaries(PAIR_NAMES, PAIR_QUANTITIES, max_size=3),
    st.integers(0, 2),
    st.sampled_from(RUNTIME_RESOURCES),
)
def test_every_accepted_spec_makes_a_pod_the_api_server_takes(
    requests: dict[str, Any], limits: dict[str, Any], gpus: int, runtime: dict[str, dict[str, Any]]
) -> None:
    try:
        parsed = ModelDeploymentSpec.parse(
            spec(resources={"requests": requests, "limits": limits}, gpu={"count": gpus})
        )
    except InvalidSpec:
        assume(False)
        return
    rendered = render_inference_service(CTX, parsed, TrafficPlan(STABLE))["spec"]["predictor"]["model"]
    own = rendered.get("resources", {})
    # pkg/controller/v1beta1/inferenceservice/utils MergeRuntimeContainers: a strategic merge, map key by map key.
    merged = {part: {**runtime[part], **own.get(part, {})} for part in ("requests", "limits")}
    assert _api_server_refusals(merged) == []
