"""Keeping a child object as rendered without fighting the fields other controllers default.

Only what Esteira rendered is managed: a managed field that differs is put back, and a field Esteira set
before but no longer renders is removed (it is remembered in the last-applied annotation, as kubectl does).
Fields added by KServe's defaulting webhook or by people, which Esteira never set, are left alone.
"""

from __future__ import annotations

import json
import math
from typing import Any

from esteira.api.quantity import parse_quantity
from esteira.render.applied import last_applied
from esteira.vocabulary import ANNOTATION_LAST_APPLIED

NANOS = 10**9


def managed_view(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object Esteira manages: labels, annotations (minus its own record) and spec."""
    metadata = obj.get("metadata") or {}
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != ANNOTATION_LAST_APPLIED}
    return {"labels": metadata.get("labels") or {}, "annotations": annotations, "spec": obj.get("spec") or {}}


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` with the annotation recording what was applied."""
    record = json.dumps(managed_view(desired), sort_keys=True, separators=(",", ":"))
    metadata = desired["metadata"]
    annotations = {**(metadata.get("annotations") or {}), ANNOTATION_LAST_APPLIED: record}
    return {**desired, "metadata": {**metadata, "annotations": annotations}}


def is_subset(wanted: Any, actual: Any, path: tuple[str, ...] = ()) -> bool:
    """True when every value in `wanted` is present and equal in `actual`.

    Dicts compare key by key and lists item by item, so fields a webhook defaults inside list items
    (which Esteira never set) do not count as drift. A container's resource quantities compare by value: KServe's
    defaulting webhook writes each back in apimachinery's canonical form (`1` as "1", "0.5" as "500m", "4096Mi"
    as "4Gi"), and compared as written, every resync saw drift, patched it, and the ModelDeployment never became
    Ready.
    """
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k], (*path[-2:], k)) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(is_subset(w, a) for w, a in zip(wanted, actual, strict=True))
        )
    if path[:2] in (("resources", "requests"), ("resources", "limits")) and wanted != actual:
        return _same_quantity(wanted, actual)
    return bool(wanted == actual)


def _same_quantity(wanted: Any, actual: Any) -> bool:
    """As apimachinery's ParseQuantity reads both: rounded up to a whole nano (`0.5n` is stored `1n`)."""
    try:
        return math.ceil(parse_quantity(wanted) * NANOS) == math.ceil(parse_quantity(actual) * NANOS)
    except (TypeError, ValueError):
        return False


def _removals(previous: Any, wanted: Any, actual: Any) -> dict[str, Any]:
    """Null entries for keys set before, not wanted now, and still present in the actual object."""
    if not (isinstance(previous, dict) and isinstance(actual, dict)):
        return {}
    out: dict[str, Any] = {}
    wanted = wanted if isinstance(wanted, dict) else {}
    for key, before in previous.items():
        if key not in actual:
            continue
        if key not in wanted:
            out[key] = None
        elif isinstance(before, dict) and isinstance(wanted[key], dict):
            nested = _removals(before, wanted[key], actual[key])
            if nested:
                out[key] = nested
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out.setdefault(key, value)
    return out


def drift_patch(actual: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch that brings `actual` back to `desired`, or None when nothing managed differs."""
    wanted = managed_view(desired)
    current = managed_view(actual)
    removals = _removals(last_applied(actual), wanted, current)
    record_matches = last_applied(actual) == last_applied(desired)
    if is_subset(wanted, current) and not removals and record_matches:
        return None
    patch = _merge(wanted, removals)
    annotations = {
        **patch["annotations"],
        ANNOTATION_LAST_APPLIED: desired["metadata"]["annotations"][ANNOTATION_LAST_APPLIED],
    }
    return {"metadata": {"labels": patch["labels"], "annotations": annotations}, "spec": patch["spec"]}
