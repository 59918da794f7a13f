"""JSON merge patches (RFC 7386) and JSON patches (RFC 6902) on plain dicts.

Both functions return a new document and never touch their input, so a failed patch leaves the stored
object as it was, as in a real API server where a patch is all or nothing.
"""

from __future__ import annotations

import copy
import decimal
import json
from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied; the API answers 422 Unprocessable Entity."""


class PatchTestFailed(PatchError):
    """A JSON-patch ``test`` operation did not match (Kopf's optimistic-lock check)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: dicts merge key by key, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(document: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy of the document."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"malformed JSON-patch operation: {operation!r}")
        result = _apply_operation(result, operation)
    return result


def _apply_operation(doc: Any, operation: dict[str, Any]) -> Any:
    op, path = operation["op"], _split_pointer(operation["path"])
    if op == "test":
        actual = _get(doc, path)
        if not _json_equal(actual, operation.get("value")):
            raise PatchTestFailed(f"test failed at {operation['path']!r}: {actual!r} != {operation.get('value')!r}")
        return doc
    if op == "add":
        return _add(doc, path, copy.deepcopy(_required_value(operation)))
    if op == "remove":
        return _remove(doc, path)
    if op == "replace":
        _get(doc, path)  # the target must exist
        return _add(_remove(doc, path), path, copy.deepcopy(_required_value(operation)))
    if op in ("move", "copy"):
        source = _split_pointer(operation.get("from", ""))
        value = copy.deepcopy(_get(doc, source))
        if op == "move":
            doc = _remove(doc, source)
        return _add(doc, path, value)
    raise PatchError(f"unknown JSON-patch operation {op!r}")


def _required_value(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise PatchError(f"operation {operation['op']!r} at {operation['path']!r} needs a value")
    return operation["value"]


def _split_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]


def _get(doc: Any, path: list[str]) -> Any:
    node = doc
    for token in path:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"path /{'/'.join(path)} does not exist")
    return node


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        if token == "-":
            parent.append(value)
        elif token.isdigit() and int(token) <= len(parent):
            parent.insert(int(token), value)
        else:
            raise PatchError(f"index {token!r} is out of range")
    else:
        raise PatchError(f"cannot add into a scalar at /{'/'.join(path[:-1])}")
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    if not path:
        return None
    parent = _get(doc, path[:-1])
    _get(parent, path[-1:])  # the target must exist
    if isinstance(parent, dict):
        del parent[path[-1]]
    else:
        del parent[int(path[-1])]
    return doc


def _json_equal(actual: Any, expected: Any) -> bool:
    """A JSON-patch ``test``: does the stored value equal the patch's value, as kube-apiserver compares them?

    kube-apiserver applies JSON patches with gopkg.in/evanphx/json-patch.v4 (endpoints/handlers/patch.go
    applyJSPatch), whose lazyNode.equal compares objects key by key, arrays item by item, and scalars by
    their compacted JSON text: the stored object as Go's encoding/json writes it against the patch's value
    as the client wrote it. So ``true`` is not ``1``, ``"1"`` is not ``1``, and a number matches only when
    both texts agree: a test value ``1`` matches a stored ``1`` or ``1.0`` (Go writes an integral float as
    ``1``), while a test value ``1.0`` (as json.dumps writes a float) matches nothing Go writes.
    Strings are compared by value (Go escapes <, > and & and the client may escape differently).
    """
    if isinstance(actual, dict) or isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and isinstance(expected, dict)
            and actual.keys() == expected.keys()
            and all(_json_equal(value, expected[key]) for key, value in actual.items())
        )
    if isinstance(actual, list) or isinstance(expected, list):
        return (
            isinstance(actual, list)
            and isinstance(expected, list)
            and len(actual) == len(expected)
            and all(_json_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return _go_json_text(actual) == json.dumps(expected, ensure_ascii=False)


def _go_json_text(value: Any) -> str:
    """A stored scalar as Go's encoding/json writes it (floatEncoder: 'f' format, 'e' below 1e-6 or from 1e21)."""
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
            mantissa, _, exponent = repr(value).replace("E", "e").partition("e")
            return f"{mantissa.removesuffix('.0')}e{int(exponent):+d}"  # Go trims e-07 to e-7, as :+d does
        return format(decimal.Decimal(repr(value)), "f").removesuffix(".0") if value != 0 else "0"
    return json.dumps(value, ensure_ascii=False)
