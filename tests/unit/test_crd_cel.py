"""Every CEL rule in the CRD is evaluated on a passing and a failing value, and Python agrees with it."""

from __future__ import annotations

from typing import Any

import pytest

from esteira.api.crd import build_crd
from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from tests.support.schemas import CelRule, cel_rules, evaluate_cel_rule
from tests.unit.specs import spec

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
        {"minReplicas": 1, "maxReplicas": 2, "metric": "rps", "target": 500},
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
        "rollout.pauseBefore may only name weights listed in rollout.steps",
        {"steps": [10, 100], "pauseBefore": [100]},
        {"steps": [10, 100], "pauseBefore": [50]},
        "rollout",
    ),
    (
        ".spec.logging",
        "logging.url is required when logging.mode is not none",
        {"mode": "all", "url": "http://x"},
        {"mode": "all"},
        "logging",
    ),
]


def _rules() -> dict[tuple[str, str], CelRule]:
    return {(r.path, r.message): r for r in cel_rules(build_crd()) if "oldSelf" not in r.rule}


def test_every_rule_has_a_case() -> None:
    assert set(_rules()) == {(path, message) for path, message, *_ in CASES}


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
