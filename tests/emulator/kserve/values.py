"""Go-flavoured reading of JSON objects: nil versus zero values, ``%q`` quoting and resource quantities.

KServe's rules are written against Go structs, where a missing pointer field is nil and a missing
string or int is its zero value; these helpers make the Python rules read the same way.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def obj(value: Any) -> Obj | None:
    """A nested struct pointer: the dict, or None when absent (Go nil)."""
    return value if isinstance(value, dict) else None


def sub(parent: Obj | None, key: str) -> Obj:
    """A nested struct read as a value: missing becomes empty, as Go's zero struct."""
    found = obj((parent or {}).get(key))
    return found if found is not None else {}


def text(parent: Obj | None, key: str) -> str:
    """A Go string field: missing or null reads as ""."""
    value = (parent or {}).get(key)
    return value if isinstance(value, str) else ""


def number(parent: Obj | None, key: str) -> int:
    """A Go integer field without pointer: missing reads as 0."""
    value = (parent or {}).get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def items(parent: Obj | None, key: str) -> list[Any]:
    value = (parent or {}).get(key)
    return value if isinstance(value, list) else []


def has(parent: Obj | None, key: str) -> bool:
    """A Go pointer, slice or map field is non-nil: present and not null."""
    return (parent or {}).get(key) is not None


def go_quote(value: str) -> str:
    """Go's ``%q`` for the strings these rules quote (printable text quotes the same as JSON)."""
    return json.dumps(value, ensure_ascii=False)


def go_list(values: list[str]) -> str:
    """Go's ``%v`` of a string slice: ``[a b]``."""
    return "[" + " ".join(values) + "]"


def quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``resource.Quantity``) as a number; nil or unparsable reads as 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return Decimal(0)
    match = _QUANTITY.match(value.strip())
    if match is None:
        return Decimal(0)
    try:
        base = Decimal(match.group(1))
    except InvalidOperation:
        return Decimal(0)
    suffix = match.group(2)
    if suffix[:1] in ("e", "E"):
        return base * Decimal(10) ** int(suffix[1:])
    return base * _SUFFIXES.get(suffix, Decimal(0))
