"""Reading what a request asks for: its body, patch, selectors and preconditions; writing Status answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp.web
import kmock
import yaml

from . import errors
from .patches import PatchError, json_patch, merge_patch
from .paths import ApiPath
from .selectors import SelectorError, field_predicate, label_predicate
from .store import Kind

JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# The patch types an endpoint accepts, in kube-apiserver's order. Built-in resources take all four
# (endpoints/installer.go supportedTypes); custom resources have no Go struct to drive a strategic merge, so
# their handler leaves it out (apiextensions-apiserver customresource_handler.go supportedTypes) and
# endpoints/handlers/patch.go PatchResource answers 415 for it.
BUILT_IN_PATCH_TYPES = [
    JSON_PATCH,
    "application/merge-patch+json",
    STRATEGIC_MERGE_PATCH,
    "application/apply-patch+yaml",
]
CUSTOM_PATCH_TYPES = [JSON_PATCH, "application/merge-patch+json", "application/apply-patch+yaml"]
Predicate = Callable[[dict[str, Any]], bool]


def selection(request: kmock.Request, path: ApiPath, kind: Kind) -> Predicate:
    """The label, field and name filter a list, watch or collection delete asks for."""
    try:
        labels = label_predicate(request.params.get("labelSelector"))
        fields = field_predicate(request.params.get("fieldSelector"), kind.field_labels)
    except SelectorError as exc:
        raise errors.bad_request(str(exc)) from exc
    if path.name is None:
        return lambda obj: labels(obj) and fields(obj)
    return lambda obj: obj["metadata"].get("name") == path.name and labels(obj) and fields(obj)


def read_body(request: kmock.Request, default: Any = None) -> Any:
    """The decoded JSON (or YAML) body; ``default`` when empty, else 400."""
    if not request.body.strip():
        if default is not None:
            return default
        raise errors.bad_request("the request has no body")
    content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    try:
        if content_type.endswith("yaml"):
            return yaml.safe_load(request.body)
        return json.loads(request.body)
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"the request body is not valid {content_type}: {exc}") from exc


def patch_function(request: kmock.Request, kind: Kind) -> Callable[[dict[str, Any]], Any]:
    """Turn a PATCH request into ``current -> patched``; strategic merge and apply are treated as merge."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    accepted = CUSTOM_PATCH_TYPES if kind.custom else BUILT_IN_PATCH_TYPES
    if content_type not in accepted:
        raise errors.unsupported_media_type(accepted)
    patch = read_body(request)

    def compute(current: dict[str, Any]) -> Any:
        name = current["metadata"]["name"]
        try:
            if content_type == JSON_PATCH:
                return json_patch(current, patch)
            if not isinstance(patch, dict):
                raise PatchError("a merge patch must be a JSON object")
            return merge_patch(current, patch)
        except PatchError as exc:
            raise errors.invalid(kind.resource, name, [str(exc)]) from exc

    return compute


def precondition_answer(request: kmock.Request) -> int | None:
    """How a real server would answer this write if its precondition were stale; None if it has none."""
    method = str(request.method.value)
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        body = json.loads(request.body) if request.body.strip() else None
    except ValueError:
        return None
    if method == "PATCH" and content_type == JSON_PATCH and isinstance(body, list):
        return 422 if any(isinstance(op, dict) and op.get("op") == "test" for op in body) else None
    if not isinstance(body, dict):
        return None
    if method in ("PUT", "PATCH") and (body.get("metadata") or {}).get("resourceVersion"):
        return 409
    if method == "DELETE" and body.get("preconditions"):
        return 409
    return None


def int_param(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"{name} must be an integer, got {value!r}") from None


def status_body(exc: kmock.KubernetesError) -> dict[str, Any]:
    """A ``Status`` failure object, as kube-apiserver sends it."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": exc.status,
        "reason": exc.reason,
        "message": exc.message,
        "details": exc.details or {},
    }


def status_response(exc: kmock.KubernetesError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(status_body(exc), status=exc.status)


def json_line(payload: dict[str, Any]) -> bytes:
    """One line of a watch stream."""
    return json.dumps(payload).encode() + b"\n"
