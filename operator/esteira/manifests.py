"""Reading ModelDeployment manifests from YAML and turning them into the objects the operator applies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from esteira import API_GROUP, API_VERSION, KIND
from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec, check_name
from esteira.render import Arm, RenderContext, TrafficPlan
from esteira.routing import router_for
from esteira.state.drift import with_last_applied


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document in `text`, each required to be a mapping."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidSpec.single(f"document {index}", "is not a mapping")
    return docs


def check_identity(doc: dict[str, Any]) -> tuple[str, str]:
    """The (name, namespace) of a ModelDeployment document, after checking apiVersion, kind and name."""
    expected = f"{API_GROUP}/{API_VERSION}"
    if doc.get("apiVersion") != expected:
        raise InvalidSpec.single("apiVersion", f"must be {expected}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != KIND:
        raise InvalidSpec.single("kind", f"must be {KIND}, got {doc.get('kind')!r}")
    metadata = doc.get("metadata") or {}
    name = metadata.get("name")
    check_name(name)
    namespace = metadata.get("namespace") or "default"
    return str(name), namespace


def render_document(
    doc: dict[str, Any],
    prometheus_url: str | None = None,
    *,
    canary_weight: int | None = None,
    stable: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every object the operator would apply for this ModelDeployment, through its router.

    Without `canary_weight`, the document's model is revision 1 and takes all traffic (a new
    ModelDeployment). With it, the document's model is revision 2 as a canary at that weight, and
    revision 1 is `stable` (version, storageUri), by default the same build under version "stable".
    ownerReferences are added when the operator creates the objects.
    """
    name, namespace = check_identity(doc)
    spec = ModelDeploymentSpec.parse(doc.get("spec") or {})
    ctx = RenderContext(name=name, namespace=namespace, prometheus_url=prometheus_url)
    if canary_weight is None:
        plan = TrafficPlan.first_revision(spec)
    else:
        version, storage_uri = stable or ("stable", spec.model.storage_uri)
        plan = TrafficPlan(
            stable=Arm(1, version, storage_uri),
            canary=Arm(2, spec.model.version, spec.model.storage_uri),
            canary_weight=canary_weight,
        )
    return [with_last_applied(obj) for obj in router_for(spec.rollout.router).desired(ctx, spec, plan, {})]


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False, default_flow_style=False)
