"""Reading ModelDeployment manifests from YAML and turning them into the objects the operator applies."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml

from esteira import API_GROUP, API_VERSION, KIND
from esteira.api.errors import FieldProblem, InvalidSpec
from esteira.api.spec import ModelDeploymentSpec, check_name
from esteira.render import Arm, RenderContext, TrafficPlan
from esteira.routing import router_for
from esteira.state.drift import with_last_applied
from esteira.vocabulary import DEFAULT_INGRESS_DOMAIN

TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document in `text`, each required to be a mapping; a YAML error names its line
    and column (as a problem whose path is "line L, column C")."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise yaml_problem(exc) from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InvalidSpec.single(f"document {index}", "is not a mapping")
    return docs


def yaml_problem(exc: yaml.YAMLError) -> InvalidSpec:
    """A YAML syntax error as one problem at its line and column (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return InvalidSpec.single(where, f"invalid YAML: {problem}{f' ({context})' if context else ''}")


def identity_problems(doc: dict[str, Any]) -> list[FieldProblem]:
    """Every problem with a document's top-level fields, apiVersion, kind and name, all at once."""
    problems = []
    for key in doc:
        if key not in TOP_LEVEL_FIELDS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(FieldProblem(str(key)[:60], f"unknown top-level field{hint}"))
    expected = f"{API_GROUP}/{API_VERSION}"
    if doc.get("apiVersion") != expected:
        problems.append(FieldProblem("apiVersion", f"must be {expected}, got {doc.get('apiVersion')!r}"))
    if doc.get("kind") != KIND:
        problems.append(FieldProblem("kind", f"must be {KIND}, got {doc.get('kind')!r}"))
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict):
        problems.append(FieldProblem("metadata", "must be a mapping"))
        metadata = {}
    try:
        check_name(metadata.get("name"))
    except InvalidSpec as exc:
        problems += exc.problems
    return problems


def check_identity(doc: dict[str, Any]) -> tuple[str, str]:
    """The (name, namespace) of a ModelDeployment document, after checking apiVersion, kind and name."""
    problems = identity_problems(doc)
    if problems:
        raise InvalidSpec(problems)
    metadata = doc.get("metadata") or {}
    return str(metadata["name"]), metadata.get("namespace") or "default"


def read_document(doc: dict[str, Any]) -> tuple[str, str, ModelDeploymentSpec]:
    """Name, namespace and validated spec of a ModelDeployment document; InvalidSpec lists every problem found,
    in the identity and the spec together."""
    problems = identity_problems(doc)
    spec = None
    try:
        spec = ModelDeploymentSpec.parse(doc.get("spec") or {})
    except InvalidSpec as exc:
        problems += exc.problems
    if problems or spec is None:
        raise InvalidSpec(problems)
    metadata = doc.get("metadata") or {}
    return str(metadata["name"]), metadata.get("namespace") or "default", spec


def render_document(
    doc: dict[str, Any],
    prometheus_url: str | None = None,
    *,
    ingress_domain: str = DEFAULT_INGRESS_DOMAIN,
    collector_url: str | None = None,
    canary_weight: int | None = None,
    stable: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every object the operator would apply for this ModelDeployment, through its router.

    Without `canary_weight`, the document's model is revision 1 and takes all traffic (a new
    ModelDeployment). With it, the document's model is revision 2 as a canary at that weight, and
    revision 1 is `stable` (version, storageUri), by default the same build under version "stable".
    ownerReferences are added when the operator creates the objects.
    """
    name, namespace, spec = read_document(doc)
    ctx = RenderContext(
        name=name,
        namespace=namespace,
        prometheus_url=prometheus_url,
        collector_url=collector_url,
        ingress_domain=ingress_domain,
    )
    if canary_weight is None:
        plan = TrafficPlan.first_revision(spec)
    else:
        version, storage_uri = stable or ("stable", spec.model.storage_uri)
        plan = TrafficPlan(
            stable=Arm(1, version, storage_uri),
            canary=Arm(2, spec.model.version, spec.model.storage_uri),
            canary_weight=canary_weight,
            mirror=spec.rollout.mirror and canary_weight == 0,
        )
    return [with_last_applied(obj) for obj in router_for(spec.rollout.router).desired(ctx, spec, plan, {})]


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False, default_flow_style=False)
