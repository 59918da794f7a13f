"""Label and field selectors, as in ``?labelSelector=app=x,tier!=db`` and ``?fieldSelector=metadata.name=y``.

Supported label forms: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``.
Field selectors support ``=``, ``==`` and ``!=`` on dotted paths (``metadata.name``, ``spec.x``); for custom
resources only on the labels the CRD allows (see :func:`field_predicate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*(?P<key>[^\s!=]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=()]+)\s*$")


class SelectorError(ValueError):
    """The selector cannot be parsed; the API answers 400 Bad Request."""


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside the parentheses of a set expression."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


def label_predicate(selector: str | None) -> Predicate:
    """Build a predicate over a whole object that checks its ``metadata.labels``."""
    checks = [_label_term(term) for term in _split_terms(selector or "")]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_RE.match(term):
        key, values = match["key"], {value.strip() for value in match["values"].split(",")}
        if match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_RE.match(term):
        key, value = match["key"], match["value"]
        if match["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_RE.match(term):
        key, negated = match["key"], bool(match["neg"])
        return lambda labels: (key in labels) != negated
    raise SelectorError(f"unable to parse label selector term {term!r}")


def field_predicate(selector: str | None, supported: Collection[str] | None = None) -> Predicate:
    """Build a predicate for a field selector over dotted paths of the object.

    ``supported`` lists the field labels the resource accepts (None: any dotted path); another label is
    refused as kube-apiserver refuses it for a custom resource (apiextensions-apiserver
    pkg/apiserver/conversion/converter.go crConverter.ConvertFieldLabel; endpoints/handlers/get.go
    ListResource turns the error into 400 Bad Request).
    """
    checks: list[Predicate] = []
    for term in _split_terms(selector or ""):
        match = _EQ_RE.match(term)
        if match is None:
            raise SelectorError(f"unable to parse field selector term {term!r}")
        if supported is not None and match["key"] not in supported:
            raise SelectorError(f"field label not supported: {match['key']}")
        checks.append(_field_term(match["key"].split("."), match["op"] == "!=", match["value"]))
    return lambda obj: all(check(obj) for check in checks)


def _field_term(path: list[str], negated: bool, expected: str) -> Predicate:
    def check(obj: Mapping[str, Any]) -> bool:
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        actual = "" if node is None else str(node).lower() if isinstance(node, bool) else str(node)
        return (actual == expected) != negated

    return check
