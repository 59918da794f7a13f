"""Spec builders shared by the unit tests."""

from __future__ import annotations

import copy
from typing import Any

BASE_SPEC: dict[str, Any] = {
    "model": {"name": "iris", "version": "1.0.0", "storageUri": "s3://models/iris/1.0.0"},
}


def spec(**overrides: Any) -> dict[str, Any]:
    """BASE_SPEC with top-level sections replaced or added."""
    out = copy.deepcopy(BASE_SPEC)
    out.update(copy.deepcopy(overrides))
    return out


def model(**fields: Any) -> dict[str, Any]:
    return {**BASE_SPEC["model"], **fields}


def document(spec_body: dict[str, Any], name: str = "iris", namespace: str = "models") -> dict[str, Any]:
    return {
        "apiVersion": "serving.esteira.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec_body,
    }
