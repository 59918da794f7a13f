"""Pure helpers of the emulator: URL parsing, patches, selectors, fault plans, schemas."""

from __future__ import annotations

import pytest

from tests.emulator.faults import FaultInjector, FaultPlan
from tests.emulator.patches import PatchError, PatchTestFailed, json_patch, merge_patch
from tests.emulator.paths import ApiPath, parse_api_path
from tests.emulator.schemas import StructuralSchema
from tests.emulator.selectors import SelectorError, field_predicate, label_predicate


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/api/v1/namespaces", ApiPath("", "v1", "namespaces")),
        ("/api/v1/namespaces/ns1", ApiPath("", "v1", "namespaces", None, "ns1")),
        ("/api/v1/namespaces/ns1/status", ApiPath("", "v1", "namespaces", None, "ns1", "status")),
        ("/api/v1/namespaces/ns1/events", ApiPath("", "v1", "events", "ns1")),
        ("/apis/g.io/v1/namespaces/ns/things/a/status", ApiPath("g.io", "v1", "things", "ns", "a", "status")),
        ("/apis/g.io/v1/things", ApiPath("g.io", "v1", "things")),
        ("/apis/g.io/v1", None),
        ("/api", None),
        ("/version", None),
    ],
)
def test_parse_api_path(url: str, expected: ApiPath | None) -> None:
    assert parse_api_path(url) == expected


def test_merge_patch_merges_dicts_deletes_nulls_and_replaces_lists() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}
    result = merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]})
    assert result == {"a": {"c": 2, "d": 3}, "l": [3], "keep": True}
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}  # the input is untouched


def test_json_patch_operations_and_pointer_escapes() -> None:
    doc = {"metadata": {"annotations": {"a/b": "x"}, "finalizers": ["f1", "f2"]}, "spec": {"n": 1}}
    ops = [
        {"op": "test", "path": "/spec/n", "value": 1},
        {"op": "remove", "path": "/metadata/finalizers/0"},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "y"},
        {"op": "add", "path": "/spec/list", "value": []},
        {"op": "add", "path": "/spec/list/-", "value": 5},
        {"op": "copy", "from": "/spec/n", "path": "/spec/m"},
        {"op": "move", "from": "/spec/m", "path": "/spec/k"},
    ]
    assert json_patch(doc, ops) == {
        "metadata": {"annotations": {"a/b": "y"}, "finalizers": ["f2"]},
        "spec": {"n": 1, "list": [5], "k": 1},
    }


def test_json_patch_failures() -> None:
    with pytest.raises(PatchTestFailed):
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(PatchError):
        json_patch({"a": 1}, {"op": "add"})


def test_label_selectors() -> None:
    obj = {"metadata": {"labels": {"app": "web", "tier": "front"}}}
    assert label_predicate("app=web,tier")(obj)
    assert label_predicate("app==web,!missing")(obj)
    assert label_predicate("app in (db, web),tier notin (back)")(obj)
    assert not label_predicate("app!=web")(obj)
    assert not label_predicate("missing")(obj)
    assert label_predicate("")(obj)
    with pytest.raises(SelectorError):
        label_predicate("a b c")


def test_field_selectors() -> None:
    obj = {"metadata": {"name": "x", "namespace": "ns"}, "spec": {"on": True}}
    assert field_predicate("metadata.name=x,metadata.namespace!=other")(obj)
    assert field_predicate("spec.on=true")(obj)
    assert not field_predicate("metadata.name=y")(obj)


def test_fault_plan_validates_rates() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultPlan(error_rate=1.5)


def test_fault_injector_targets_only_listed_agents_and_is_seeded() -> None:
    injector = FaultInjector(FaultPlan(error_rate=0.5, seed=3))
    untargeted = [injector.decide(user_agent="esteira-tests", method="GET", watch=False) for _ in range(50)]
    assert not any(decision.error for decision in untargeted)
    first = [injector.decide(user_agent="kopf/1.45", method="GET", watch=False).error for _ in range(40)]
    injector.plan = FaultPlan(error_rate=0.5, seed=3)
    again = [injector.decide(user_agent="kopf/1.45", method="GET", watch=False).error for _ in range(40)]
    assert first == again
    assert 5 < sum(first) < 35
    assert injector.injected["error"] == 2 * sum(first)


def test_structural_schema_defaults_prunes_and_validates() -> None:
    schema = StructuralSchema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "size": {"x-kubernetes-int-or-string": True},
                        "replicas": {"type": "integer", "default": 1, "minimum": 0},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                }
            },
        }
    )
    body = {"metadata": {"name": "x"}, "spec": {"size": "1Gi", "junk": 1, "free": {"a": 1}, "labels": {"k": "v"}}}
    prepared = schema.prepare(body)
    assert prepared == {
        "metadata": {"name": "x"},
        "spec": {"size": "1Gi", "replicas": 1, "free": {"a": 1}, "labels": {"k": "v"}},
    }
    assert schema.errors(prepared) == []
    assert schema.errors({"spec": {"size": 1.5, "replicas": -1}}) == [
        "spec.replicas: -1 is less than the minimum of 0",
        "spec.size: 1.5 is not valid under any of the given schemas",
    ]
