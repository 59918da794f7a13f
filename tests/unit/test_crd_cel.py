"""Every CEL rule in the CRD is evaluated on a passing and a failing value, and Python agrees with it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.api.crd import build_crd
from esteira.api.errors import InvalidSpec
from esteira.api.spec import (
    DRAIN_WITHIN_GRACE,
    MAX_NAME_LENGTH,
    NODE_SELECTOR_KEYS,
    NOT_OVERCOMMITTED,
    NOTHING_TO_COMPARE,
    REQUEST_OVER_LIMIT,
    RESOURCE_NAMES,
    SPEC_RULES,
    WHOLE_UNITS,
    ZERO_PROGRESS_DEADLINE,
    ZERO_WINDOWS,
    ModelDeploymentSpec,
    check_name,
)
from tests.support.schemas import (
    CelRule,
    ManifestError,
    cel_errors,
    cel_rules,
    evaluate_cel_rule,
    validate_custom_resource,
)
from tests.support.specs import document, model, spec

# rule path -> (message, passing value at that path, failing value at that path, spec section for Python)
CASES: list[tuple[str, str, Any, Any, str | None]] = [
    (
        ".spec.gpu",
        "gpu.product needs gpu.count > 0",
        {"count": 1, "product": "Tesla-T4"},
        {"count": 0, "product": "Tesla-T4"},
        "gpu",
    ),
    (
        ".spec.autoscaling",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        {"minReplicas": 2, "maxReplicas": 2},
        {"minReplicas": 3, "maxReplicas": 2},
        "autoscaling",
    ),
    (
        ".spec.autoscaling",
        "autoscaling.target is a utilization percentage (1-100) for cpu, memory and gpu-utilization",
        {"minReplicas": 1, "maxReplicas": 2, "metric": "cpu", "target": 100},
        {"minReplicas": 1, "maxReplicas": 2, "metric": "memory", "target": 500},
        "autoscaling",
    ),
    (
        ".spec.rollout.analysis.custom[*]",
        "a custom check needs min or max",
        {"name": "q", "query": "up", "max": 1.0},
        {"name": "q", "query": "up"},
        None,
    ),
    (
        ".spec.rollout",
        "rollout.steps are traffic percentages between 1 and 100",
        {"steps": [1, 100], "pauseBefore": []},
        {"steps": [0, 100], "pauseBefore": []},
        "rollout",
    ),
    (
        ".spec.rollout",
        ZERO_PROGRESS_DEADLINE,
        {"steps": [10, 100], "pauseBefore": [], "progressDeadline": "30s"},
        {"steps": [10, 100], "pauseBefore": [], "progressDeadline": "0m00s"},
        "rollout",
    ),
    (
        ".spec.rollout",
        ZERO_WINDOWS["rollout.interval"],
        {"steps": [10, 100], "pauseBefore": [], "interval": "30s"},
        {"steps": [10, 100], "pauseBefore": [], "interval": "0s"},
        "rollout",
    ),
    (
        ".spec.rollout",
        "rollout.steps must end at 100",
        {"steps": [10, 100], "pauseBefore": []},
        {"steps": [10, 90], "pauseBefore": []},
        "rollout",
    ),
    (
        ".spec.rollout",
        "rollout.steps must be strictly increasing",
        {"steps": [10, 20, 100], "pauseBefore": []},
        {"steps": [20, 20, 100], "pauseBefore": []},
        "rollout",
    ),
    (
        ".spec.rollout",
        NOTHING_TO_COMPARE,
        {"steps": [100], "pauseBefore": [], "analysis": {"latency": {"p95MaxSeconds": 1}}},
        {"steps": [100], "pauseBefore": [], "analysis": {"predictionShift": {"max": 0.1}}},
        "rollout",
    ),
    (
        ".spec.rollout",
        NOTHING_TO_COMPARE,
        {"steps": [10, 100], "pauseBefore": [], "analysis": {"errorRate": {"max": 0.1, "maxIncrease": 0.01}}},
        {"steps": [100], "pauseBefore": [], "analysis": {"errorRate": {"max": 0.1, "maxIncrease": 0.01}}},
        "rollout",
    ),
    (  # the copies before the first step are judged against stable's answers to the same requests
        ".spec.rollout",
        NOTHING_TO_COMPARE,
        {"steps": [100], "pauseBefore": [], "mirror": True, "router": "GatewayAPI", "analysis": {"accuracy": {}}},
        {"steps": [100], "pauseBefore": [], "mirror": True, "analysis": {"accuracy": {}}},  # KServe's: no copies
        "rollout",
    ),
    (
        ".spec.rollout",
        "rollout.pauseBefore may only name weights listed in rollout.steps",
        {"steps": [10, 100], "pauseBefore": [100]},
        {"steps": [10, 100], "pauseBefore": [50]},
        "rollout",
    ),
    (
        ".spec.logging",
        "logging.url is required when logging.logger is KServe",
        {"mode": "all", "logger": "KServe", "url": "http://x"},
        {"mode": "all", "logger": "KServe"},
        "logging",
    ),
    (
        ".spec.logging",
        "KServe's logger neither samples nor redacts: use logger Esteira, or sampleRate 1 and no redact",
        {"mode": "all", "logger": "KServe", "url": "http://x", "sampleRate": 1.0, "redact": []},
        {"mode": "all", "logger": "KServe", "url": "http://x", "redact": ["ssn"]},
        "logging",
    ),
    (
        ".spec.gpu.tolerations[*]",
        "a toleration with operator Exists must not set value",
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "present"},
        None,
    ),
    (
        ".spec.gpu.tolerations[*]",
        "a toleration without a key must use operator Exists (it then tolerates every taint)",
        {"operator": "Exists"},
        {"operator": "Equal", "value": "x"},
        None,
    ),
    (
        ".spec.gpu.tolerations[*]",
        "tolerationSeconds is for effect NoExecute only",
        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30},
        None,
    ),
    (
        ".spec.gpu.nodeSelector",
        NODE_SELECTOR_KEYS,
        {"pool": "gpu", "example.com/zone": "a"},
        {"pool": "gpu", "a" * 64: "x"},
        None,
    ),
    (
        ".spec.resources.requests",
        "resources.requests keys must be resource names (at most 253 characters) such as cpu, memory or "
        "example.com/device",
        {"cpu": "1", "example.com/fpga": 1},
        {"cpu": "1", "not a resource!": 1},
        None,
    ),
    (
        ".spec.resources.limits",
        "resources.limits keys must be resource names (at most 253 characters) such as cpu, memory or "
        "example.com/device",
        {"memory": "1Gi"},
        {"example.com/" + "a" * 242: "1"},
        None,
    ),
    *[
        (f".spec.resources.{section}", f"resources.{section} {RESOURCE_NAMES}", good, bad, None)
        for section, good, bad in [
            ("requests", {"cpu": 1, "hugepages-2Mi": "2Mi", "example.com/fpga": 1}, {"cpus": 1}),
            ("limits", {"ephemeral-storage": "1Gi", "kubernetes.io/x": 1}, {"requests.example.com/fpga": 1}),
            ("limits", {"a" * 240 + ".io/x": 1}, {"a" * 245 + ".io/x": 1}),
        ]
    ],
    *[
        (f".spec.resources.{section}", f"resources.{section}: {WHOLE_UNITS}", good, bad, None)
        for section, good, bad in [
            ("requests", {"cpu": "500m", "example.com/fpga": "2"}, {"example.com/fpga": "1500m"}),
            ("limits", {"nvidia.com/gpu": "+2", "kubernetes.io/x": "0.5"}, {"nvidia.com/gpu": "1.0"}),
        ]
    ],
    (
        ".spec.resources",
        REQUEST_OVER_LIMIT,
        {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1024Mi"}},
        {"requests": {"cpu": "1.5", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        None,
    ),
    (
        ".spec.resources",
        NOT_OVERCOMMITTED,
        {"requests": {"cpu": 2, "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": 1}},
        {"requests": {"nvidia.com/gpu": 1}, "limits": {"cpu": 1}},
        None,
    ),
]

RETRAIN = {"triggers": {"drift": True}, "command": ["train"]}
CASES += [
    (
        ".spec.retraining",
        "retraining needs a job template, a webhook or a command to run",
        RETRAIN,
        {"triggers": {"drift": True}},
        "retraining",
    ),
    (
        ".spec.retraining",
        "retraining needs at least one trigger",
        RETRAIN,
        {"command": ["train"]},
        "retraining",
    ),
]

CASES += [
    (
        ".spec.termination",
        DRAIN_WITHIN_GRACE,
        {"drainSeconds": 59, "gracePeriodSeconds": 60},
        {"drainSeconds": 60, "gracePeriodSeconds": 60},
        "termination",
    ),
    (
        ".spec.termination",
        DRAIN_WITHIN_GRACE,
        {"drainSeconds": 29},
        {"drainSeconds": 30},
        "termination",
    ),
]

DRIFT = {"window": "1h", "interval": "1m", "actions": ["Alert"], "features": [{"name": "a"}, {"name": "b"}]}
CASES += [
    (
        ".spec.monitoring.drift",
        "monitoring.drift.features: each feature may be named once",
        DRIFT,
        {**DRIFT, "features": [{"name": "a"}, {"name": "a", "threshold": 0.2}]},
        None,
    ),
    (
        ".spec.monitoring.drift",
        ZERO_WINDOWS["monitoring.drift.window"],
        DRIFT,
        {**DRIFT, "window": "0m"},
        None,
    ),
    (
        ".spec.monitoring.drift",
        ZERO_WINDOWS["monitoring.drift.interval"],
        DRIFT,
        {**DRIFT, "interval": "0s"},
        None,
    ),
]

# Rules across sections, on the whole spec: (message, passing spec, failing spec).
SPEC_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (SPEC_RULES[0].message, spec(autoscaling={"minReplicas": 1}), spec(autoscaling={"minReplicas": 0})),
    (
        SPEC_RULES[1].message,
        spec(deploymentMode="Knative", autoscaling={"metric": "rps"}),
        spec(autoscaling={"metric": "rps"}),
    ),
    (
        SPEC_RULES[2].message,
        spec(gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"}),
        spec(deploymentMode="Knative", gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"}),
    ),
    (
        SPEC_RULES[3].message,
        spec(deploymentMode="Knative", autoscaling={"metric": "concurrency", "minReplicas": 0}),
        spec(deploymentMode="Knative", autoscaling={"metric": "cpu", "minReplicas": 0}),
    ),
    (
        SPEC_RULES[4].message,
        spec(gpu={"count": 1}, autoscaling={"metric": "gpu-utilization"}),
        spec(autoscaling={"metric": "gpu-utilization"}),
    ),
    (
        SPEC_RULES[5].message,
        spec(model=model(runtime="esteira-torchserve"), batching={"maxBatchSize": 4, "maxBatchDelayMs": 0}),
        spec(batching={"maxBatchSize": 4, "maxBatchDelayMs": 0}),
    ),
    (
        SPEC_RULES[5].message,
        spec(model=model(runtime="esteira-kserve"), batching={"maxBatchSize": 4, "maxBatchDelayMs": 0}),
        spec(model=model(runtime="kserve-torchserve"), batching={"maxBatchSize": 4, "maxBatchDelayMs": 0}),
    ),
    (
        SPEC_RULES[5].message,
        spec(batching={"maxBatchSize": 4}),
        spec(batching={"maxBatchSize": 4, "maxBatchDelayMs": 0}),
    ),
    (
        SPEC_RULES[5].message,
        spec(batching={"maxBatchDelayMs": 0}),
        spec(batching={"maxBatchSize": 2, "maxBatchDelayMs": 0}),
    ),
    (
        SPEC_RULES[6].message,
        spec(termination={"drainSeconds": 20, "gracePeriodSeconds": 60}),
        spec(deploymentMode="Knative", termination={"drainSeconds": 20, "gracePeriodSeconds": 60}),
    ),
    (
        SPEC_RULES[7].message,
        spec(monitoring={"drift": {"actions": ["Retrain"]}}, retraining=RETRAIN),
        spec(monitoring={"drift": {"actions": ["Retrain"]}}),
    ),
    (
        SPEC_RULES[8].message,
        spec(model=model(runtime="esteira-kserve", workers=4)),
        spec(model=model(runtime="kserve-torchserve", workers=4)),
    ),
    (SPEC_RULES[8].message, spec(model=model(runtime="esteira-torchserve", workers=2)), spec(model=model(workers=2))),
    (SPEC_RULES[9].message, spec(autoscaling={"target": 100}), spec(autoscaling={"target": 500})),
    (
        SPEC_RULES[9].message,
        spec(deploymentMode="Knative", autoscaling={"target": 500}),  # concurrency: no percentage
        spec(autoscaling={"maxReplicas": 3, "target": 101}),
    ),
    (
        SPEC_RULES[10].message,
        spec(deploymentMode="Knative", autoscaling={"metric": "cpu"}),
        spec(deploymentMode="Knative", autoscaling={"metric": "memory"}),
    ),
    (
        SPEC_RULES[11].message,
        spec(rollout={"router": "GatewayAPI"}),
        spec(deploymentMode="Knative", rollout={"router": "GatewayAPI"}),
    ),
    (
        SPEC_RULES[12].message,
        spec(logging={"logger": "KServe", "url": "http://sink"}, rollout={"steps": [10, 100]}),
        spec(
            logging={"logger": "KServe", "url": "http://sink"},
            rollout={"steps": [10, 100], "analysis": {"accuracy": {"metric": "accuracy"}}},
        ),
    ),
    (
        SPEC_RULES[12].message,
        spec(logging={"logger": "Esteira"}, retraining={"triggers": {"accuracyBelow": 0.9}, "command": ["train"]}),
        spec(
            logging={"logger": "KServe", "url": "http://sink"},
            retraining={"triggers": {"accuracyBelow": 0.9}, "command": ["train"]},
        ),
    ),
]


NAME_MESSAGE = next(r.message for r in cel_rules(build_crd()) if r.path == ".")


def _rules() -> dict[tuple[str, str], CelRule]:
    return {(r.path, r.message): r for r in cel_rules(build_crd()) if "oldSelf" not in r.rule}


def test_every_rule_has_a_case() -> None:
    cases = {(path, message) for path, message, *_ in CASES}
    cases |= {(".spec", message) for message, *_ in SPEC_CASES} | {(".", NAME_MESSAGE)}
    assert set(_rules()) == cases


@pytest.mark.parametrize(("message", "good", "bad"), SPEC_CASES, ids=[c[0][:60] for c in SPEC_CASES])
def test_spec_rule_in_cel_and_python(message: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    rule = _rules()[(".spec", message)]
    assert evaluate_cel_rule(rule.rule, good, schema=rule.schema) is True
    assert evaluate_cel_rule(rule.rule, bad, schema=rule.schema) is False
    ModelDeploymentSpec.parse(good)
    with pytest.raises(InvalidSpec) as caught:
        ModelDeploymentSpec.parse(bad)
    assert message in [p.reason for p in caught.value.problems]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("iris", True),
        ("a" * MAX_NAME_LENGTH, True),
        ("iris-2", True),
        ("9lives", False),
        ("a" * 46, False),
        ("iris-", False),
        ("Iris", False),
    ],
)
def test_name_rule_in_cel_and_python(name: str, valid: bool) -> None:
    rule = _rules()[(".", NAME_MESSAGE)]
    assert evaluate_cel_rule(rule.rule, {"metadata": {"name": name}, "spec": spec()}, schema=rule.schema) is valid
    if valid:
        check_name(name)
    else:
        with pytest.raises(InvalidSpec, match=r"metadata\.name"):
            check_name(name)


def test_toleration_rules_agree_with_python() -> None:
    for _, message, good, bad, _ in [c for c in CASES if c[0].endswith("tolerations[*]")]:
        ModelDeploymentSpec.parse(spec(gpu={"count": 1, "tolerations": [good]}))
        with pytest.raises(InvalidSpec, match=re.escape(message)):
            ModelDeploymentSpec.parse(spec(gpu={"count": 1, "tolerations": [bad]}))


@pytest.mark.parametrize("quantity", ["-1", "-500m", -5])
def test_a_negative_quantity_is_refused_on_both_sides(quantity: str | int) -> None:
    """The API server refuses a pod asking for less than nothing: the predictor's pods were never made."""
    body = spec(resources={"requests": {"cpu": quantity}})
    with pytest.raises(ManifestError, match=r"spec\.resources\.requests"):
        validate_custom_resource(document(body))
    with pytest.raises(InvalidSpec, match=r"spec\.resources\.requests\.cpu"):
        ModelDeploymentSpec.parse(body)


@pytest.mark.parametrize("section", ["requests", "limits"])
def test_resource_rules_agree_with_python(section: str) -> None:
    ModelDeploymentSpec.parse(spec(resources={section: {"cpu": "500m", "ephemeral-storage": "1Gi"}}))
    with pytest.raises(InvalidSpec, match=rf"spec\.resources\.{section}"):
        ModelDeploymentSpec.parse(spec(resources={section: {"not a resource!": 1}}))
    with pytest.raises(InvalidSpec, match=rf"spec\.resources\.{section}\.cpu"):
        ModelDeploymentSpec.parse(spec(resources={section: {"cpu": "lots"}}))


SPEC_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
CROSS_FIELD = st.fixed_dictionaries(
    {
        "deploymentMode": st.sampled_from(["Standard", "Knative"]),
        "autoscaling": st.fixed_dictionaries(
            {"minReplicas": st.integers(0, 2), "maxReplicas": st.just(3)},
            optional={"metric": st.sampled_from(["concurrency", "rps", "cpu", "memory", "gpu-utilization"])},
        ),
        "gpu": st.fixed_dictionaries({"count": st.integers(0, 1)}),
        "batching": st.fixed_dictionaries(
            {}, optional={"maxBatchSize": st.sampled_from([1, 8]), "maxBatchDelayMs": st.integers(0, 1)}
        ),
        "runtime": st.sampled_from([None, "esteira-torchserve", "esteira-kserve", "kserve-torchserve"]),
    }
)


@settings(max_examples=150, deadline=None)
@given(CROSS_FIELD)
def test_api_server_and_operator_refuse_the_same_specs(fields: dict[str, Any]) -> None:
    runtime = fields.pop("runtime")
    body = spec(**fields, model=model(runtime=runtime) if runtime else model())
    cel_refused = cel_errors(body, SPEC_SCHEMA)
    try:
        ModelDeploymentSpec.parse(body)
        python_refused = False
    except InvalidSpec:
        python_refused = True
    assert python_refused == bool(cel_refused), cel_refused


@pytest.mark.parametrize(("path", "message", "good", "bad", "section"), CASES, ids=[c[1] for c in CASES])
def test_rule_passes_good_and_fails_bad(path: str, message: str, good: Any, bad: Any, section: str | None) -> None:
    rule = _rules()[(path, message)]
    assert evaluate_cel_rule(rule.rule, good, schema=rule.schema) is True
    assert evaluate_cel_rule(rule.rule, bad, schema=rule.schema) is False


@pytest.mark.parametrize(
    ("path", "message", "good", "bad", "section"), [c for c in CASES if c[4]], ids=[c[1] for c in CASES if c[4]]
)
def test_python_agrees_with_cel(path: str, message: str, good: Any, bad: Any, section: str) -> None:
    ModelDeploymentSpec.parse(spec(**{section: good}))
    with pytest.raises(InvalidSpec) as caught:
        ModelDeploymentSpec.parse(spec(**{section: bad}))
    assert message in [p.reason for p in caught.value.problems]


def test_drift_rules_agree_with_python() -> None:
    for _, message, good, bad, _ in [c for c in CASES if c[0] == ".spec.monitoring.drift"]:
        ModelDeploymentSpec.parse(spec(monitoring={"drift": good}))
        with pytest.raises(InvalidSpec) as caught:
            ModelDeploymentSpec.parse(spec(monitoring={"drift": bad}))
        assert message in [p.reason for p in caught.value.problems]


def test_custom_check_rule_agrees_with_python() -> None:
    _, message, good, bad, _ = next(c for c in CASES if c[0].endswith("custom[*]"))
    ModelDeploymentSpec.parse(spec(rollout={"analysis": {"custom": [good]}}))
    with pytest.raises(InvalidSpec, match=message):
        ModelDeploymentSpec.parse(spec(rollout={"analysis": {"custom": [bad]}}))


def test_deployment_mode_is_immutable() -> None:
    (rule,) = [r for r in cel_rules(build_crd()) if "oldSelf" in r.rule]
    assert rule.path == ".spec.deploymentMode"
    assert evaluate_cel_rule(rule.rule, "Standard", old_self="Standard") is True
    assert evaluate_cel_rule(rule.rule, "Knative", old_self="Standard") is False


@pytest.mark.parametrize(
    ("duration", "valid"),
    [
        ("1h30m", True),
        ("90s", True),
        ("500ms", True),
        ("1m30s500ms", True),
        ("2h", True),
        ("30s1m", False),  # Prometheus refuses units out of order ...
        ("1m1m", False),  # ... or twice: the range of every analysis query
        ("1.5m", False),
        ("5", False),
        ("", False),
    ],
)
def test_durations_are_prometheus_s_on_both_sides(duration: str, valid: bool) -> None:
    """``rollout.interval`` is the range of every analysis query: a form Prometheus cannot read stopped every
    analysis, though the API server and the operator both took it."""
    body = spec(rollout={"interval": duration})
    if valid:
        validate_custom_resource(document(body))
        ModelDeploymentSpec.parse(body)
        return
    with pytest.raises(ManifestError, match=r"spec\.rollout\.interval"):
        validate_custom_resource(document(body))
    with pytest.raises(InvalidSpec, match=r"spec\.rollout\.interval"):
        ModelDeploymentSpec.parse(body)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"autoscaling": {"maxReplicas": "4"}}, r"spec\.autoscaling\.maxReplicas"),
        ({"gpu": {"count": True}}, r"spec\.gpu\.count"),
        ({"rollout": {"mirror": "yes"}}, r"spec\.rollout\.mirror"),
        ({"rollout": {"steps": ["10", "100"]}}, r"spec\.rollout\.steps"),
        ({"logging": {"mode": "all", "sampleRate": "0.5"}}, r"spec\.logging\.sampleRate"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_on_both_sides(fields: dict[str, Any], path: str) -> None:
    """The operator (and `esteira render`, and `esteira up`) took "4" for 4 and "yes" for true, which the API
    server refuses: a manifest checked locally then failed `kubectl apply`."""
    body = spec(**fields)
    with pytest.raises(ManifestError, match=path):
        validate_custom_resource(document(body))
    with pytest.raises(InvalidSpec, match=path):
        ModelDeploymentSpec.parse(body)


@pytest.mark.parametrize(
    "selector",
    [{"a" * 64: "x"}, {"bad key!": "x"}, {"example.com/" + "a" * 64: "x"}, {"pool": "a" * 64}, {"pool": "-x"}],
)
def test_a_node_selector_the_api_server_would_refuse_in_a_pod_is_refused_on_both_sides(
    selector: dict[str, str],
) -> None:
    body = spec(gpu={"count": 1, "nodeSelector": selector})
    with pytest.raises(ManifestError, match=r"spec\.gpu\.nodeSelector"):
        validate_custom_resource(document(body))
    with pytest.raises(InvalidSpec, match=r"spec\.gpu\.nodeSelector"):
        ModelDeploymentSpec.parse(body)


RESOURCE_NAME_POOL = st.sampled_from(
    [
        *("cpu", "memory", "ephemeral-storage", "hugepages-2Mi", "kubernetes.io/x"),
        *("nvidia.com/gpu", "example.com/fpga", "cpus", "requests.example.com/fpga"),
    ]
)
QUANTITY_POOL = st.sampled_from([0, 1, 2, "500m", "1", "1.5", "2e0", "1Gi", "1024Mi", "2Gi", "0.5"])
RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "requests": st.dictionaries(RESOURCE_NAME_POOL, QUANTITY_POOL, max_size=3),
        "limits": st.dictionaries(RESOURCE_NAME_POOL, QUANTITY_POOL, max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(RESOURCES)
def test_api_server_and_operator_refuse_the_same_resources(resources: dict[str, Any]) -> None:
    """Names, whole units, requests within limits, no overcommitted devices: the API server refuses a pod that
    breaks one, so the ModelDeployment is refused on both sides, and only then."""
    body = spec(resources=resources)
    cel_refused = cel_errors(body, SPEC_SCHEMA)
    paths: list[str] = []
    try:
        ModelDeploymentSpec.parse(body)
    except InvalidSpec as refused:
        paths = [p.path for p in refused.problems]
    assert bool(paths) == bool(cel_refused), cel_refused
    assert all(path.startswith("spec.resources") for path in paths), paths
