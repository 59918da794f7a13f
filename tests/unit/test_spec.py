"""The spec model: defaults, field-level validation and cross-field rules, with precise messages."""

from __future__ import annotations

from typing import Any

import pytest

from esteira.api.errors import InvalidSpec
from esteira.api.spec import NOTHING_TO_COMPARE, ModelDeploymentSpec
from tests.support.specs import model, spec


def problems(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as caught:
        ModelDeploymentSpec.parse(body)
    return {p.path: p.reason for p in caught.value.problems}


def test_defaults_are_documented_values() -> None:
    parsed = ModelDeploymentSpec.parse(spec())
    assert parsed.deployment_mode == "Standard"
    assert parsed.model.protocol == "v1"
    assert parsed.rollout.strategy == "Canary"
    assert parsed.rollout.steps == [10, 25, 50, 100]
    assert parsed.autoscaling.effective_metric("Standard") == "cpu"
    assert parsed.autoscaling.effective_metric("Knative") == "concurrency"
    assert parsed.autoscaling.effective_target("Standard") == 80
    assert parsed.gpu.count == 0
    assert parsed.batching.max_batch_size is None and parsed.batching.max_batch_delay_ms is None  # the archive's


def test_missing_model_field_is_named() -> None:
    found = problems({"model": {"name": "iris", "version": "1"}})
    assert found == {"spec.model.storageUri": "Field required"}


def test_unknown_field_is_rejected_by_path() -> None:
    found = problems(spec(autoscaling={"minReplica": 1}))
    assert found == {"spec.autoscaling.minReplica": "unknown field"}


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        (spec(model=model(name="Iris")), "spec.model.name", "pattern"),
        (spec(model=model(protocol="v3")), "spec.model.protocol", "'v1' or 'v2'"),
        (spec(model=model(storageUri="/tmp/model")), "spec.model.storageUri", "pattern"),
        (spec(deploymentMode="Serverless"), "spec.deploymentMode", "'Standard' or 'Knative'"),
        (spec(gpu={"count": -1}), "spec.gpu.count", "greater than or equal to 0"),
        (spec(gpu={"count": 1, "resourceName": "GPU"}), "spec.gpu.resourceName", "pattern"),
        (spec(autoscaling={"metric": "gpu"}), "spec.autoscaling.metric", "'concurrency'"),
        (spec(batching={"maxBatchSize": 0}), "spec.batching.maxBatchSize", "greater than or equal to 1"),
        (spec(rollout={"interval": "soon"}), "spec.rollout.interval", "pattern"),
    ],
)
def test_field_errors_name_the_field(body: dict[str, Any], path: str, fragment: str) -> None:
    found = problems(body)
    assert path in found, found
    assert fragment in found[path]


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            spec(autoscaling={"minReplicas": 3, "maxReplicas": 2}),
            "spec.autoscaling",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            spec(autoscaling={"metric": "cpu", "target": 150, "maxReplicas": 2}),
            "spec.autoscaling",
            "autoscaling.target is a utilization percentage (1-100) for cpu, memory and gpu-utilization",
        ),
        (spec(rollout={"steps": [10, 50]}), "spec.rollout", "rollout.steps must end at 100"),
        (spec(rollout={"steps": [50, 10, 100]}), "spec.rollout", "rollout.steps must be strictly increasing"),
        (spec(rollout={"steps": [10, 10, 100]}), "spec.rollout", "rollout.steps must be strictly increasing"),
        (spec(rollout={"steps": [0, 100]}), "spec.rollout", "rollout.steps are traffic percentages between 1 and 100"),
        (
            spec(rollout={"steps": [100], "analysis": {"accuracy": {"labelDelay": "1m"}}}),
            "spec.rollout",
            NOTHING_TO_COMPARE,
        ),
        (
            spec(rollout={"steps": [10, 100], "pauseBefore": [50]}),
            "spec.rollout",
            "rollout.pauseBefore may only name weights listed in rollout.steps",
        ),
        (spec(gpu={"product": "Tesla-T4"}), "spec.gpu", "gpu.product needs gpu.count > 0"),
        (
            spec(logging={"mode": "all", "logger": "KServe"}),
            "spec.logging",
            "logging.url is required when logging.logger is KServe",
        ),
        (
            spec(logging={"mode": "all", "logger": "KServe", "url": "http://x", "sampleRate": 0.5}),
            "spec.logging",
            "KServe's logger neither samples nor redacts: use logger Esteira, or sampleRate 1 and no redact",
        ),
        (
            spec(rollout={"analysis": {"custom": [{"name": "x", "query": "up"}]}}),
            "spec.rollout.analysis.custom[0]",
            "a custom check needs min or max",
        ),
    ],
)
def test_cross_field_rules(body: dict[str, Any], path: str, message: str) -> None:
    assert problems(body) == {path: message}


def test_every_problem_is_reported_at_once() -> None:
    found = problems(spec(model=model(name="Bad Name"), batching={"maxBatchSize": 5000}, gpu={"count": 99}))
    assert set(found) == {"spec.model.name", "spec.batching.maxBatchSize", "spec.gpu.count"}


def test_accepts_every_field_of_a_full_spec() -> None:
    parsed = ModelDeploymentSpec.parse(
        spec(
            model=model(protocol="v2", runtime="esteira-torchserve", runtimeVersion="0.12.0"),
            deploymentMode="Knative",
            serviceAccountName="models",
            resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 2147483648}},
            gpu={
                "count": 2,
                "resourceName": "nvidia.com/mig-3g.20gb",
                "product": "NVIDIA-A100-SXM4-40GB",
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
            autoscaling={"minReplicas": 0, "maxReplicas": 5, "metric": "rps", "target": 200},
            batching={"maxBatchSize": 32, "maxBatchDelayMs": 20},
            rollout={
                "strategy": "Canary",
                "steps": [5, 50, 100],
                "interval": "30s",
                "threshold": 3,
                "pauseBefore": [100],
                "router": "KServe",  # GatewayAPI is for Standard mode
                "analysis": {
                    "minRequests": 20,
                    "lowTrafficDeadline": "15m",
                    "lowTrafficAction": "Fail",
                    "errorRate": {"max": 0.02, "maxIncrease": 0.01},
                    "latency": {"p95MaxSeconds": 0.3, "maxIncreaseRatio": 1.5},
                    "predictionShift": {"method": "PSI", "max": 0.2},
                    "dataDrift": {"max": 0.3},
                    "custom": [{"name": "gpu-mem", "query": "sum(x{ns='{{namespace}}'})", "max": 0.9}],
                },
            },
            monitoring={"prometheusUrl": "http://prometheus:9090", "scrape": False},
            logging={"mode": "all", "url": "http://logger/events"},
        )
    )
    assert parsed.gpu.is_mig
    assert parsed.rollout.analysis.custom[0].max == 0.9
    assert parsed.resources.limits["memory"] == 2147483648


def test_every_mistake_is_reported_at_once() -> None:
    body = spec(autoscaling={"minReplicas": 0, "target": "x"}, batching={"maxBatchSize": 8, "maxBatchDelayMs": 0})
    body["bogus"] = 1
    with pytest.raises(InvalidSpec) as caught:
        ModelDeploymentSpec.parse(body)
    paths = [p.path for p in caught.value.problems]
    assert paths == [
        "spec.autoscaling.target",  # the field checks first
        "spec.bogus",
        "spec.autoscaling.minReplicas",  # then the spec's own rules on what is left
        "spec.batching.maxBatchDelayMs",
    ]
