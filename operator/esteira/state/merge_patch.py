"""JSON merge patches (RFC 7386) computed from two documents: what turns `before` into `after`."""

from __future__ import annotations

from typing import Any


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that, applied to `before`, yields `after`; keys `after` lacks become null.

    Lists are replaced whole, as merge patches do.
    """
    patch: dict[str, Any] = {}
    for key in before.keys() - after.keys():
        patch[key] = None
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = diff(old, value)
            if nested:
                patch[key] = nested
        elif key not in before or old != value:
            patch[key] = value
    return patch


def apply(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a merge patch (for tests and for the local runtime's in-memory objects)."""
    out = dict(document)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply(out[key], value)
        else:
            out[key] = value
    return out
