"""The CRD is generated from the spec model; the committed file and the model must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from esteira.api.crd import build_crd
from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crds" / "serving.esteira.io_modeldeployments.yaml"


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_is_generated_from_the_model() -> None:
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == build_crd(), "run `make crd` and commit the result"


def _field_names(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> list[str]:
    """Every model field must be a schema property and vice versa, recursively through nested models."""
    mismatches = []
    properties = schema.get("properties", {})
    if set(properties) != _field_names(model):
        mismatches.append(f"{path}: model {_field_names(model)} != schema {set(properties)}")
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation = info.annotation
        nested = _nested_model(annotation)
        if nested is not None and key in properties:
            sub = properties[key]
            mismatches += _walk(nested, sub.get("items", sub), f"{path}.{key}")
    return mismatches


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        for inner in [candidate, *getattr(candidate, "__args__", ())]:
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def test_schema_properties_match_model_fields() -> None:
    schema = _schema(build_crd())["properties"]
    assert _walk(ModelDeploymentSpec, schema["spec"], "spec") == []
    assert _walk(ModelDeploymentStatus, schema["status"], "status") == []


def test_schema_is_structural() -> None:
    """No refs, unions or unknown keywords that the API server would refuse in a structural schema."""
    forbidden = {"$ref", "$defs", "oneOf", "allOf", "const", "title", "additionalProperties"}

    def check(node: Any, path: str) -> list[str]:
        if isinstance(node, list):
            return [e for i, item in enumerate(node) for e in check(item, f"{path}[{i}]")]
        if not isinstance(node, dict):
            return []
        errors = []
        is_schema = "type" in node or "x-kubernetes-int-or-string" in node or "properties" in node
        if is_schema:
            bad = forbidden & set(node)
            if "additionalProperties" in bad and isinstance(node["additionalProperties"], dict):
                bad.discard("additionalProperties")
            if bad:
                errors.append(f"{path}: {sorted(bad)}")
            if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
                errors.append(f"{path}: anyOf outside int-or-string")
            if "type" not in node and not node.get("x-kubernetes-int-or-string"):
                errors.append(f"{path}: no type")
        for key, value in node.items():
            if key not in ("enum", "default", "required", "x-kubernetes-validations"):
                errors += check(value, f"{path}.{key}")
        return errors

    assert check(_schema(build_crd()), "") == []


def test_names_columns_and_subresources() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "modeldeployments.serving.esteira.io"
    assert names["shortNames"] == ["md", "mdep"]
    assert names["categories"] == ["esteira"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Phase", "Model", "Stable", "Canary", "Weight", "URL", "Age"]


def test_defaults_in_schema_match_model_defaults() -> None:
    spec_schema = _schema(build_crd())["properties"]["spec"]["properties"]
    assert spec_schema["deploymentMode"]["default"] == ModelDeploymentSpec.model_fields["deployment_mode"].default
    rollout = spec_schema["rollout"]["properties"]
    assert rollout["interval"]["default"] == "1m"
    assert rollout["strategy"]["enum"] == ["Canary", "Immediate"]
    assert spec_schema["autoscaling"]["properties"]["metric"]["enum"] == [
        "concurrency",
        "rps",
        "cpu",
        "memory",
        "gpu-utilization",
    ]


def test_exclusive_bounds_use_openapi_v3_flags() -> None:
    latency = _schema(build_crd())["properties"]["spec"]["properties"]["rollout"]["properties"]["analysis"]
    p95 = latency["properties"]["latency"]["properties"]["p95MaxSeconds"]
    assert (p95["minimum"], p95["exclusiveMinimum"]) == (0, True)


def test_factory_defaults_reach_the_schema() -> None:
    spec_schema = _schema(build_crd())["properties"]["spec"]["properties"]
    assert spec_schema["rollout"]["default"] == {}
    assert spec_schema["rollout"]["properties"]["steps"]["default"] == [10, 25, 50, 100]
    assert spec_schema["rollout"]["properties"]["pauseBefore"]["default"] == []
