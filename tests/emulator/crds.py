"""Turning a CustomResourceDefinition object into the resources the emulator serves and discovers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kmock

from .schemas import StructuralSchema

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_VERBS = frozenset({"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})


@dataclass(frozen=True)
class ServedVersion:
    """One served version of a CRD: where it lives, how discovery shows it, and its schema."""

    crd_name: str
    resource: kmock.resource
    info: kmock.ResourceInfo
    schema: StructuralSchema | None
    selectable_fields: frozenset[str] = frozenset()  # field selector labels, e.g. "spec.color"


def served_versions(crd: dict[str, Any]) -> list[ServedVersion]:
    """Read the group, names, scope, served versions and subresources of a CRD (apiextensions.k8s.io/v1)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = {key for key in (version.get("subresources") or {}) if key in ("status", "scale")}
        info = kmock.ResourceInfo(
            kind=names.get("kind"),
            singular=names.get("singular") or str(names.get("kind", "")).lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            verbs=set(_VERBS),
            shortnames=set(names.get("shortNames") or ()),
            categories=set(names.get("categories") or ()),
            subresources=subresources,
        )
        raw_schema = (version.get("schema") or {}).get("openAPIV3Schema")
        schema = StructuralSchema(raw_schema) if isinstance(raw_schema, dict) else None
        resource = kmock.resource(spec.get("group", ""), version["name"], names["plural"])
        # selectableFields' jsonPath `.spec.color` is the field label `spec.color` (apiextensions-apiserver
        # pkg/apiserver/conversion/converter.go: the per-version set, strings.TrimPrefix(jsonPath, ".")).
        selectable = frozenset(
            str(item.get("jsonPath", "")).removeprefix(".") for item in version.get("selectableFields") or ()
        )
        result.append(ServedVersion(crd["metadata"]["name"], resource, info, schema, selectable))
    return result


def established_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """The status a real API server reports once a CRD's names are accepted and it is served."""
    spec = crd.get("spec") or {}
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now}
        for kind, reason, message in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    return {
        "acceptedNames": dict(spec.get("names") or {}),
        "conditions": conditions,
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }
