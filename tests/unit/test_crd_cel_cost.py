"""The CRD's CEL rules stay within the API server's cost budget, so the CRD itself installs.

kube-apiserver estimates each rule's worst-case cost when the CRD is created and refuses it when one rule
exceeds `StaticEstimatedCostLimit` (10,000,000) or all rules together, each multiplied by how often it can
run (once per list item or map value above it), exceed `StaticEstimatedCRDCostLimit` (100,000,000)
(k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel, `ValidationCostLimits`). A list or map without
`maxItems`/`maxProperties` is sized from the 3 MiB request limit, which is what makes unbounded lists
expensive. This estimate follows the same shape (comprehensions multiply by the size of what they walk,
regular expressions by the length of what they match) and errs high; it is not the server's estimator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from esteira.api.crd import build_crd

RULE_LIMIT = 10_000_000
CRD_LIMIT = 100_000_000
REQUEST_BYTES = 3 * 1024 * 1024
METADATA_NAME_MAX = 253  # the API server bounds metadata.name itself
COMPREHENSIONS = re.compile(r"\.(all|exists|exists_one|map|filter)\(")


@dataclass(frozen=True)
class PlacedRule:
    rule: str
    node: dict[str, Any]
    runs: int  # how many times the rule can run in one object (product of the bounds of lists/maps above it)
    path: str


def _bound(node: dict[str, Any]) -> int | None:
    if node.get("type") == "array":
        return node.get("maxItems")
    if isinstance(node.get("additionalProperties"), dict):
        return node.get("maxProperties")
    return 1


def _placed(node: dict[str, Any], path: str = "", runs: int = 1) -> Iterator[PlacedRule]:
    for entry in node.get("x-kubernetes-validations") or []:
        yield PlacedRule(entry["rule"], node, runs, path or ".")
    for name, sub in (node.get("properties") or {}).items():
        yield from _placed(sub, f"{path}.{name}", runs)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            bound = _bound(node) or REQUEST_BYTES
            yield from _placed(node[key], f"{path}[*]", runs * bound)


def _field(node: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    for part in dotted.split("."):
        if part == "metadata":
            return {"type": "string", "maxLength": METADATA_NAME_MAX}  # only name/generateName are visible
        node = (node.get("properties") or {}).get(part)
        if node is None:
            return None
    return node


def _walked(rule: PlacedRule) -> list[tuple[str, dict[str, Any]]]:
    """The collections a rule iterates, each with its schema (`self` itself when the rule sits on one)."""
    walked = []
    for match in re.finditer(r"(self(?:\.[A-Za-z_]+)*)" + COMPREHENSIONS.pattern, rule.rule):
        target = match.group(1)
        node = rule.node if target == "self" else _field(rule.node, target.removeprefix("self."))
        assert node is not None, f"{rule.path}: cannot find {target} in the schema"
        walked.append((target, node))
    return walked


def _conversions(rule: PlacedRule) -> int:
    """`string()` of a map's values, once per pass over the map: on a `dyn` value (an int-or-string) every overload
    is costed, bytes-to-string among them at a tenth of the value's size, which is the whole request without a
    `maxLength` (apiserver `cel/common/schemas.go` SchemaDeclType; cel-go `checker/cost.go` functionCost)."""
    cost = 0
    for match in re.finditer(r"string\((self(?:\.[A-Za-z_]+)*)\[k\]\)", rule.rule):
        target = match.group(1)
        node = rule.node if target == "self" else _field(rule.node, target.removeprefix("self."))
        assert node is not None, f"{rule.path}: cannot find {target} in the schema"
        values = node.get("additionalProperties") or {}
        size = values.get("maxLength") or REQUEST_BYTES
        cost += math.ceil(size * 0.1) * (_bound(node) or REQUEST_BYTES)
    return cost


def estimate(rule: PlacedRule) -> int:
    """Comprehension sizes multiply (nested ones square); each regular expression costs its input length, each
    conversion of a map's value to a string its value's size."""
    cost = 10 + len(rule.rule) + _conversions(rule)
    for _, node in _walked(rule):
        cost *= _bound(node) or REQUEST_BYTES
    for _ in re.finditer(r"\.matches\(", rule.rule):
        length = rule.node.get("maxLength") or METADATA_NAME_MAX
        if isinstance(rule.node.get("additionalProperties"), dict):
            length = REQUEST_BYTES // max(rule.node.get("maxProperties") or 1, 1)  # map keys are unbounded
        cost += math.ceil(length * 0.1) * len(rule.rule)
    return cost


RULES = list(_placed(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.path}:{r.rule[:40]}" for r in RULES])
def test_every_collection_a_rule_walks_is_bounded(rule: PlacedRule) -> None:
    for target, node in _walked(rule):
        assert _bound(node) is not None, f"{rule.path}: {target} has no maxItems/maxProperties"


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.path}:{r.rule[:40]}" for r in RULES])
def test_each_rule_is_under_the_per_rule_limit(rule: PlacedRule) -> None:
    assert estimate(rule) <= RULE_LIMIT


def test_rules_run_a_bounded_number_of_times() -> None:
    unbounded = [r.path for r in RULES if r.runs >= REQUEST_BYTES]
    assert not unbounded, f"rules under a list or map without a bound: {unbounded}"


def test_all_rules_together_are_under_the_crd_limit() -> None:
    assert sum(estimate(r) * r.runs for r in RULES) <= CRD_LIMIT


def test_the_estimate_catches_conversions_of_unbounded_values() -> None:
    """Two conversions a pass over 16 int-or-string values without maxLength: past the per-rule limit."""
    values = {"x-kubernetes-int-or-string": True}
    resources = {
        "type": "object",
        "properties": {
            part: {"type": "object", "maxProperties": 16, "additionalProperties": values} for part in ("a", "b")
        },
    }
    rule = "self.a.all(k, !(k in self.b) || string(self.a[k]) == string(self.b[k]))"
    assert estimate(PlacedRule(rule, resources, 1, ".x")) > RULE_LIMIT
    for part in ("a", "b"):
        resources["properties"][part]["additionalProperties"] = {**values, "maxLength": 64}
    assert estimate(PlacedRule(rule, resources, 1, ".x")) <= RULE_LIMIT


def test_the_estimate_catches_an_unbounded_list() -> None:
    unbounded = {"type": "array", "items": {"type": "integer"}}
    rule = PlacedRule("self.all(w, self.exists_one(v, v == w))", unbounded, 1, ".x")
    assert _bound(unbounded) is None
    bounded = PlacedRule(rule.rule, {**unbounded, "maxItems": 20}, 1, ".x")
    assert estimate(bounded) <= RULE_LIMIT < estimate(rule)
