"""What a real API server does with a CRD's structural schema: defaulting, pruning and validation.

Without this an emulator accepts fields that a cluster silently drops (for example a status field that
is missing from the CRD schema), so tests would pass here and fail on a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from tests.support.schemas import cel_errors

_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


class StructuralSchema:
    """One CRD version's ``openAPIV3Schema``, ready to default, prune and validate objects."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._full = schema  # CEL rules may read metadata.name (the root rule sees it)
        properties = {k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_FIELDS}
        self._schema: dict[str, Any] = {**schema, "properties": properties}
        self._validator = jsonschema.Draft7Validator(_to_json_schema(self._schema))

    def prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return a copy with defaults filled in and unknown fields dropped; identity and metadata stay."""
        content = {key: value for key, value in body.items() if key not in _ROOT_FIELDS}
        identity = {key: copy.deepcopy(body[key]) for key in _ROOT_FIELDS if key in body}
        return {**identity, **_prune_object(content, self._schema)}

    def errors(self, body: dict[str, Any]) -> list[str]:
        """Validate everything except identity and metadata; return one readable line per error."""
        content = {key: value for key, value in body.items() if key not in _ROOT_FIELDS}
        found = sorted(self._validator.iter_errors(content), key=lambda error: list(error.absolute_path))
        return [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}" for error in found]

    def rule_errors(self, body: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
        """The CRD's CEL rules (`x-kubernetes-validations`), transition rules against `old` on updates."""
        return cel_errors(body, self._full, old=old)


def _prune(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return _prune_object(value, schema)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        # A null item is kept (and then fails validation) unless the items have a default (defaulting
        # algorithm.go Default replaces a non-nullable null item by it).
        return [_prune(_null_default(items) if _defaultable_null(item, items) else item, items) for item in value]
    return copy.deepcopy(value)


def _defaultable_null(value: Any, schema: Any) -> bool:
    """A null where the schema is not nullable but has a default: defaulting fills it in (isNonNullableNull)."""
    return value is None and isinstance(schema, dict) and not schema.get("nullable") and "default" in schema


def _prunable_null(value: Any, schema: Any) -> bool:
    """A null where the schema is neither nullable nor defaulted: the API server drops the field
    (apiextensions-apiserver pkg/apiserver/schema/defaulting/prunenulls.go isNonNullableNonDefaultableNull)."""
    return value is None and isinstance(schema, dict) and not schema.get("nullable") and "default" not in schema


def _null_default(schema: dict[str, Any]) -> Any:
    return copy.deepcopy(schema["default"])


def _prune_object(value: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    untyped = "type" not in schema and not properties and additional is None
    keep_unknown = bool(schema.get(_PRESERVE)) or additional is True or untyped
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    result: dict[str, Any] = {}
    for key, item in value.items():
        # Explicit nulls, after pruning and before defaulting, as the CR decoder does
        # (customresource_handler.go unstructuredSchemaCoercer.apply calls PruneNonNullableNullsWithoutDefaults,
        # then the defaulter runs defaulting/algorithm.go Default): a null on a non-nullable field without a
        # default is dropped, one with a default is defaulted; nullable fields keep their null.
        sub = properties[key] if key in properties else additional if isinstance(additional, dict) else None
        if _prunable_null(item, sub):
            continue
        if _defaultable_null(item, sub):
            item = _null_default(sub)
        if key in properties:
            result[key] = _prune(item, properties[key])
        elif isinstance(additional, dict):
            result[key] = _prune(item, additional)
        elif keep_unknown or (embedded and key in _ROOT_FIELDS):
            result[key] = copy.deepcopy(item)
    for key, sub in properties.items():
        if key not in result and isinstance(sub, dict) and "default" in sub:
            # As the API server does, a defaulted value is itself defaulted in the same pass.
            result[key] = _prune(copy.deepcopy(sub["default"]), sub)
    return result


def _to_json_schema(node: Any) -> Any:
    """Turn one node of the Kubernetes dialect of OpenAPI v3 into plain JSON Schema (draft 7)."""
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes") or key in ("nullable", "format"):
            continue  # int32, int64, date-time: the API server does not enforce formats either
        if key == "properties":
            result[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            result[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            result[key] = [_to_json_schema(sub) for sub in value]
        else:
            result[key] = value
    # OpenAPI v3.0 writes exclusive bounds as booleans beside minimum/maximum; draft 7 as the bound itself.
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(result.get(bound), bool) and result.pop(bound) and limit in result:
            result[bound] = result.pop(limit)
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in result:
        result["type"] = [result["type"], "null"]
    return result
