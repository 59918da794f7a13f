"""Reading ModelDeployment manifests from YAML and turning them into the objects the operator applies."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from esteira import API_GROUP, API_VERSION, KIND
from esteira.api.errors import InvalidSpec
from esteira.api.spec import DNS_LABEL_PATTERN, ModelDeploymentSpec
from esteira.render import RenderContext, TrafficPlan, render_inference_service

_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)


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
    if not isinstance(name, str) or len(name) > 45 or not _DNS_LABEL.match(name):
        # 45 leaves room for the suffixes KServe appends to child object names (63-character limit).
        raise InvalidSpec.single("metadata.name", "must be a DNS label of at most 45 characters")
    namespace = metadata.get("namespace") or "default"
    return name, namespace


def render_document(doc: dict[str, Any], prometheus_url: str | None = None) -> list[dict[str, Any]]:
    """What the operator would apply for a newly created ModelDeployment."""
    name, namespace = check_identity(doc)
    spec = ModelDeploymentSpec.parse(doc.get("spec") or {})
    ctx = RenderContext(name=name, namespace=namespace, prometheus_url=prometheus_url)
    return [render_inference_service(ctx, spec, TrafficPlan.first_revision(spec))]


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False, default_flow_style=False)
