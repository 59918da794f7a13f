"""Builds the ModelDeployment CustomResourceDefinition from the spec and status models.

This is the only place the CRD schema comes from: `esteira crd` writes it to `manifests/crds/` and the
chart, and a test regenerates it and fails when the committed file differs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from esteira import API_GROUP, API_VERSION, KIND, PLURAL
from esteira.api.command import COMMAND_KIND, COMMAND_PLURAL, RolloutCommandSpec, RolloutCommandStatus
from esteira.api.spec import MAX_NAME_LENGTH, NAME_PATTERN, ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus

SHORT_NAMES = ["md", "mdep"]
CATEGORIES = ["esteira"]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Model",
        "type": "string",
        "jsonPath": ".spec.model.version",
        "description": "Declared model version",
    },
    {
        "name": "Stable",
        "type": "integer",
        "jsonPath": ".status.stable.revision",
        "description": "Stable revision",
    },
    {
        "name": "Canary",
        "type": "integer",
        "jsonPath": ".status.canary.revision",
        "description": "Canary revision",
    },
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.canary.weight",
        "description": "Canary traffic %",
    },
    {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# propertyNames and patternProperties have no place in a structural schema: map keys are checked by CEL.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "examples", "propertyNames", "patternProperties"}


class _FactoryDefaults(GenerateJsonSchema):
    """Writes `default_factory` defaults into the schema so the API server fills them in too.

    A nested object defaults to `{}`; the server then applies that object's own field defaults, which
    keeps CEL rules from meeting an absent list and `kubectl get -o yaml` showing the effective spec.
    """

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if "default_factory" in schema:
            factory = cast(Callable[[], Any], schema["default_factory"])
            value = factory()
            schema = cast(core_schema.WithDefaultSchema, {k: v for k, v in schema.items() if k != "default_factory"})
            schema["default"] = {} if isinstance(value, BaseModel) else value
        return super().default_schema(schema)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema rewritten as a Kubernetes structural schema (OpenAPI v3.0, no refs)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_FactoryDefaults)
    return _structural(raw, raw.get("$defs", {}))


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_structural(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**_structural(node.pop("allOf")[0], defs), **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            # As controller-gen writes resource.Quantity: the string form's pattern sits beside anyOf
            # (a pattern does not apply to integers).
            patterns = [v["pattern"] for v in variants if v.get("type") == "string" and "pattern" in v]
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if patterns:
                node["pattern"] = patterns[0]
        elif len(variants) == 1:
            node = {**_structural(variants[0], defs), **node}
        else:
            raise ValueError(f"cannot express union in a structural schema: {variants}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):  # JSON Schema number -> OpenAPI v3.0 flag
            node[limit], node[bound] = node[bound], True
    if node.get("default", 0) is None:
        del node["default"]
    extra = node.get("additionalProperties")
    if "patternProperties" in node:
        (extra,) = node["patternProperties"].values()
    out = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    if "properties" in out:
        out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
        out["type"] = "object"
    if isinstance(extra, dict):
        out["additionalProperties"] = _structural(extra, defs)
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    return out


def build_crd() -> dict[str, Any]:
    """The complete apiextensions.k8s.io/v1 CustomResourceDefinition for ModelDeployment."""
    spec_schema = model_schema(ModelDeploymentSpec)
    name_rule = f"self.metadata.name.matches('{NAME_PATTERN}') && size(self.metadata.name) <= {MAX_NAME_LENGTH}"
    status_schema = model_schema(ModelDeploymentStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "esteira", "app.kubernetes.io/part-of": "esteira"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A trained model served by KServe and kept healthy by Esteira.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": name_rule,
                                    "message": f"metadata.name must start with a letter, contain only lowercase "
                                    f"letters, digits and '-' and be at most {MAX_NAME_LENGTH} characters (it names "
                                    "the InferenceService, and KServe adds suffixes)",
                                    "fieldPath": ".metadata.name",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


COMMAND_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Deployment", "type": "string", "jsonPath": ".spec.deployment"},
    {"name": "Action", "type": "string", "jsonPath": ".spec.action"},
    {"name": "Requested-By", "type": "string", "jsonPath": ".spec.requestedBy"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_command_crd() -> dict[str, Any]:
    """The RolloutCommand CustomResourceDefinition, from `esteira.api.command`'s models."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{COMMAND_PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "esteira", "app.kubernetes.io/part-of": "esteira"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": COMMAND_KIND,
                "listKind": f"{COMMAND_KIND}List",
                "plural": COMMAND_PLURAL,
                "singular": COMMAND_KIND.lower(),
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": COMMAND_PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A request to promote, pause, resume, abort or retry one rollout.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": model_schema(RolloutCommandSpec),
                                "status": model_schema(RolloutCommandStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


def main() -> None:
    """`python -m esteira.api.crd [RolloutCommand]`: print a CRD as YAML (ModelDeployment by default)."""
    import sys

    import yaml

    build = build_command_crd if sys.argv[1:] == [COMMAND_KIND] else build_crd
    sys.stdout.write(yaml.safe_dump(build(), sort_keys=False))


if __name__ == "__main__":
    main()
